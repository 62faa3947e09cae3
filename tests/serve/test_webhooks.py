"""Webhooks from `mediagen serve` verify with replicate-python's validator and with mediagen's own."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from mediagen.serve import sign_webhook
from mediagen_testkit.serve_server import OTHER_TOKEN, TEST_TOKEN, ServeServer, fake_model

replicate = pytest.importorskip("replicate")


class Receiver:
    """A loopback endpoint recording each delivery."""

    def __init__(self) -> None:
        received: list[tuple[dict[str, str], bytes]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, status: str, timeout: float = 60) -> tuple[dict[str, str], bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for headers, body in self.received:
                if json.loads(body)["status"] == status:
                    return headers, body
            time.sleep(0.02)
        raise AssertionError(f"no {status} delivery; got {[json.loads(b)['status'] for _, b in self.received]}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.server.shutdown()


def test_signature_matches_replicates_published_vector() -> None:
    assert (
        sign_webhook(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            b'{"test": 2432232314}',
        )
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_deliveries_are_signed_filtered_and_verifiable(
    start_server: Callable[..., ServeServer], receiver: Receiver
) -> None:
    from replicate.webhook import Webhooks, WebhookSigningSecret

    from mediagen_replicate import verify_webhook

    server = start_server(models=[fake_model("fox", "image")])
    client = replicate.Client(api_token=TEST_TOKEN, base_url=server.url)
    secret = client.webhooks.default.secret()

    prediction = client.models.predictions.create(
        "acme/fox",
        input={"prompt": "a fox", "seed": 1},
        webhook=receiver.url,
        webhook_events_filter=["start", "completed"],
    )
    headers, body = receiver.wait_for("succeeded")

    statuses = [json.loads(b)["status"] for _, b in receiver.received]
    assert statuses[0] == "processing" and statuses[-1] == "succeeded" and len(statuses) == 2
    payload = json.loads(body)
    assert payload["id"] == prediction.id and payload["output"][0].startswith(server.url + "/outputs/")
    Webhooks.validate(headers=headers, body=body.decode(), secret=WebhookSigningSecret(key=secret.key), tolerance=300)
    assert verify_webhook(headers, body, secret.key)
    # Each token signs with its own secret: another tenant's cannot verify this delivery.
    other = replicate.Client(api_token=OTHER_TOKEN, base_url=server.url).webhooks.default.secret()
    assert other.key != secret.key and not verify_webhook(headers, body, other.key)
    # The sender counts a delivery once it has read the answer, a moment after the receiver saw it.
    delivered = 'mediagen_serve_webhooks_total{outcome="delivered"} 2.0'
    for _ in range(200):
        metrics = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {TEST_TOKEN}"}).text
        if delivered in metrics:
            break
        time.sleep(0.05)
    assert delivered in metrics and 'outcome="failed"' not in metrics


def test_webhooks_to_private_addresses_are_refused(start_server: Callable[..., ServeServer]) -> None:
    server = start_server(models=[fake_model("fox", "image")])

    for url in ("http://10.0.0.8/hook", "https://169.254.169.254/latest", "ftp://example.com/x"):
        response = httpx.post(
            f"{server.url}/v1/models/acme/fox/predictions",
            json={"input": {"prompt": "x"}, "webhook": url},
            headers={"Authorization": f"Bearer {TEST_TOKEN}"},
        )
        assert response.status_code == 422, url
        assert response.json()["invalid_fields"][0]["field"] == "webhook"
