"""Webhooks: `webhook=` reaches Replicate, and `verify_webhook` accepts only what it signed."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import mediagen as mg
from mediagen.backend import RunContext
from mediagen_testkit.replicate_server import ReplicateServer, image_model

pytest.importorskip("replicate")
from mediagen_replicate import ReplicateBackend, verify_webhook

# The official client's test vector (replicate-python tests/test_webhooks.py).
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HEADERS = {
    "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "webhook-timestamp": "1614265330",
    "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
}
BODY = '{"test": 2432232314}'
SENT_AT = 1614265330.0


def test_the_reference_vector_verifies() -> None:
    assert verify_webhook(HEADERS, BODY, SECRET, now=SENT_AT)
    assert verify_webhook(HEADERS, BODY.encode(), SECRET, now=SENT_AT + 299)
    assert verify_webhook({k.upper(): v for k, v in HEADERS.items()}, BODY, SECRET, tolerance_s=None)


def test_anything_else_does_not() -> None:
    assert not verify_webhook(HEADERS, BODY + " ", SECRET, now=SENT_AT)  # body changed
    assert not verify_webhook(HEADERS, BODY, "whsec_" + "A" * 32, now=SENT_AT)  # other secret
    assert not verify_webhook(HEADERS, BODY, SECRET, now=SENT_AT + 301)  # too old: a replay
    assert not verify_webhook(HEADERS, BODY, SECRET, now=SENT_AT - 301)  # from the future
    assert not verify_webhook({**HEADERS, "webhook-id": "msg_other"}, BODY, SECRET, now=SENT_AT)
    assert not verify_webhook({k: v for k, v in HEADERS.items() if k != "webhook-signature"}, BODY, SECRET)
    assert not verify_webhook({**HEADERS, "webhook-timestamp": "soon"}, BODY, SECRET, tolerance_s=None)
    assert not verify_webhook({**HEADERS, "webhook-signature": "v1,not-base64!"}, BODY, SECRET, now=SENT_AT)
    with pytest.raises(mg.ConfigError):  # a malformed secret is the app's mistake: an error, not False
        verify_webhook(HEADERS, BODY, "whsec_%%%", now=SENT_AT)


def test_any_of_several_signatures_may_match() -> None:
    rotated = {**HEADERS, "webhook-signature": "v1,AAAA v2,whatever " + HEADERS["webhook-signature"]}
    assert verify_webhook(rotated, BODY, SECRET, now=SENT_AT)


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []
    two = threading.Event()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        _Receiver.received.append(({k: v for k, v in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()
        if len(_Receiver.received) >= 2:
            _Receiver.two.set()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.received = []
    _Receiver.two = threading.Event()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hooks/replicate"
    httpd.shutdown()
    httpd.server_close()


async def test_webhook_option_reaches_replicate_and_deliveries_verify(receiver: str) -> None:
    with ReplicateServer(time_scale=0.01, models=[image_model()]) as server:
        backend = ReplicateBackend(api_token=server.token, base_url=server.url)
        try:
            options = {"webhook": receiver, "webhook_events_filter": ["start", "completed"]}
            res = await backend.run(
                mg.ImageRequest(prompt="x", seed=1, options=options), "black-forest-labs/flux-schnell", RunContext()
            )
        finally:
            await backend.aclose()
        record = server.records[res.raw["id"]]
        assert record.webhooks == [(receiver, frozenset({"start", "completed"}))]
        await asyncio.to_thread(_Receiver.two.wait, 5.0)  # start and completed
        secret = server.webhook_secret

    assert len(_Receiver.received) == 2
    for headers, body in _Receiver.received:
        assert verify_webhook(headers, body, secret)
        assert not verify_webhook(headers, body.replace(b'"id"', b'"ID"'), secret)
        assert json.loads(body)["id"] == res.raw["id"]
    assert json.loads(_Receiver.received[-1][1])["status"] == "succeeded"
