"""Keys, app ids and what comes back from the network: fal's boundary, seen as an attacker would."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

import mediagen as mg
from mediagen.backend import RunContext
from mediagen_fal import AppId, FalBackend
from mediagen_testkit import media_fixtures as media
from mediagen_testkit.fal_server import FakeApp, FalServer, JobRecord


async def test_a_wrong_key_is_an_authentication_error_naming_fal_key(server: FalServer) -> None:
    server.echo_key_in_errors = True
    backend = FalBackend(key="wrong:key", base_url=server.url, storage_url=server.url)
    try:
        with pytest.raises(mg.AuthenticationError, match="FAL_KEY") as info:
            await backend.run(mg.ImageRequest(prompt="a fox"), "fal-ai/flux/schnell", RunContext())
    finally:
        await backend.aclose()
    assert info.value.provider == "fal" and info.value.status == 401
    assert server.stats.keys_echoed == 1  # the server did quote the key in its answer...
    for text in (str(info.value), repr(info.value), info.value.detail or "", info.value.message):
        assert "wrong:key" not in text  # ...and it shows nowhere
    assert server.stats.jobs_queued == 0


async def test_no_key_at_all_says_where_one_goes() -> None:
    backend = FalBackend(base_url="http://127.0.0.1:9")
    with pytest.raises(mg.AuthenticationError, match="FAL_KEY"):
        await backend.run(mg.ImageRequest(prompt="a fox"), "fal-ai/flux/schnell", RunContext())
    assert FalBackend.availability() is not None and "FAL_KEY" in str(FalBackend.availability())


async def test_fal_key_id_and_secret_make_a_key(server: FalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    key_id, secret = server.key.split(":")
    monkeypatch.setenv("FAL_KEY_ID", key_id)
    monkeypatch.setenv("FAL_KEY_SECRET", secret)
    backend = FalBackend(base_url=server.url, storage_url=server.url, poll_interval=0.01)
    try:
        res = await backend.run(mg.ImageRequest(prompt="a fox", seed=1), "fal-ai/flux/schnell", RunContext())
    finally:
        await backend.aclose()
    assert res.artifacts and FalBackend.availability() is None


@pytest.mark.parametrize("bad", ["flux", "fal-ai/../admin", "fal-ai/flux?x=1", "fal-ai/%2e%2e/x", "/", "a//b"])
def test_app_ids_that_could_steer_a_url_are_refused(bad: str) -> None:
    with pytest.raises(mg.ModelNotFoundError, match="not a fal app id"):
        AppId.parse(bad)


def test_app_id_parts() -> None:
    app = AppId.parse("fal-ai/flux/schnell")
    assert (app.submit_path, app.base_path) == ("fal-ai/flux/schnell", "fal-ai/flux")
    assert app.request_path("0a1b-2c", "status") == "fal-ai/flux/requests/0a1b-2c/status"
    workflow = AppId.parse("workflows/acme/pipeline/step")
    assert (workflow.submit_path, workflow.base_path) == ("workflows/acme/pipeline/step", "workflows/acme/pipeline")
    with pytest.raises(ValueError):
        app.request_path("../../etc")


async def test_an_unknown_app_is_model_not_found(backend: FalBackend) -> None:
    with pytest.raises(mg.ModelNotFoundError, match="no app"):
        await backend.run(mg.ImageRequest(prompt="a fox"), "nobody/nothing", RunContext())


@respx.mock
async def test_a_request_id_that_would_steer_the_url_is_refused() -> None:
    respx.post("http://127.0.0.1:1/fal-ai/flux/schnell").mock(
        return_value=httpx.Response(200, json={"request_id": "../../../elsewhere", "status_url": "http://evil.test/x"})
    )
    backend = FalBackend(key="k:s", base_url="http://127.0.0.1:1", storage_url="http://127.0.0.1:1")
    try:
        with pytest.raises(mg.ProviderError, match="not a fal request id"):
            await backend.run(mg.ImageRequest(prompt="a fox"), "fal-ai/flux/schnell", RunContext())
    finally:
        await backend.aclose()


@respx.mock
async def test_status_urls_in_answers_are_never_followed() -> None:
    # The answer names another host; the key must only go to the configured endpoint.
    base = "http://127.0.0.1:1"
    respx.post(f"{base}/fal-ai/flux/schnell").mock(
        return_value=httpx.Response(
            200, json={"request_id": "abc-1", "status_url": "http://evil.test/s", "response_url": "http://evil.test/r"}
        )
    )
    respx.get(f"{base}/fal-ai/flux/requests/abc-1/status").mock(
        return_value=httpx.Response(200, json={"status": "COMPLETED", "logs": [], "metrics": {}})
    )
    respx.get(f"{base}/fal-ai/flux/requests/abc-1").mock(
        return_value=httpx.Response(
            200, json={"images": [{"url": "data:image/png;base64,AAAA", "content_type": "image/png"}]}
        )
    )
    evil = respx.route(host="evil.test").mock(return_value=httpx.Response(200, json={}))
    backend = FalBackend(key="k:s", base_url=base, storage_url=base, poll_interval=0.01)
    try:
        res = await backend.run(mg.ImageRequest(prompt="a fox"), "fal-ai/flux/schnell", RunContext())
    finally:
        await backend.aclose()
    assert res.artifacts and not evil.called


async def test_outputs_and_uploads_travel_without_the_key(server: FalServer) -> None:
    backend = FalBackend(
        key=server.key,
        base_url=server.url,
        storage_url=server.url,
        poll_interval=0.01,
        data_url_max_bytes=64,
    )
    try:
        res = await backend.run(
            mg.ImageRequest(prompt="make it night", image=media.png_bytes(32, 32), options={"download": True}),
            "fal-ai/flux-pro/kontext",
            RunContext(),
        )
    finally:
        await backend.aclose()
    assert res.artifacts[0].is_loaded
    assert server.stats.uploads == 1 and server.stats.by_route["GET file"] >= 1
    assert server.stats.keyed_file_reads == 0


async def test_a_curated_app_refuses_media_it_has_no_input_for(backend: FalBackend, server: FalServer) -> None:
    with pytest.raises(mg.UnsupportedRequestError, match="images"):
        await backend.run(
            mg.ImageRequest(prompt="x", image=media.png_bytes(8, 8), images=[media.png_bytes(8, 8)]),
            "fal-ai/flux-pro/kontext",
            RunContext(),
        )
    with pytest.raises(mg.UnsupportedRequestError, match="inpaint"):
        await backend.run(
            mg.ImageRequest(prompt="x", image=media.png_bytes(8, 8), mask=media.png_bytes(8, 8)),
            "fal-ai/flux/schnell",
            RunContext(),
        )
    assert server.stats.jobs_queued == 0


async def test_out_of_range_inputs_are_refused_before_sending(backend: FalBackend, server: FalServer) -> None:
    with pytest.raises(mg.InvalidRequestError, match="num_inference_steps") as info:
        await backend.run(mg.ImageRequest(prompt="x", steps=30), "fal-ai/flux/schnell", RunContext())
    assert info.value.errors[0]["loc"] == ("input", "num_inference_steps")
    assert server.stats.jobs_queued == 0


async def test_the_apps_own_422_is_an_invalid_request(backend: FalBackend) -> None:
    # Not in the curated table: fal's app validates, answers 422 with pydantic's detail list.
    with pytest.raises(mg.InvalidRequestError, match="num_images"):
        await backend.run(mg.ImageRequest(prompt="x", options={"num_images": 9}), "acme/any-image", RunContext())


class _Receiver(http.server.BaseHTTPRequestHandler):
    got: list[dict[str, object]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).got.append(json.loads(body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.got = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/hook"
    httpd.shutdown()
    httpd.server_close()


async def test_webhooks_pass_through(backend: FalBackend, server: FalServer, receiver: str) -> None:
    res = await backend.run(
        mg.ImageRequest(prompt="a fox", seed=3, options={"webhook": receiver, "priority": "low"}),
        "fal-ai/flux/schnell",
        RunContext(),
    )
    (job,) = server.jobs.values()
    assert job.webhook == receiver and job.headers["x-fal-queue-priority"] == "low"
    assert "webhook" not in job.input and "priority" not in job.input
    for _ in range(500):
        if _Receiver.got:
            break
        threading.Event().wait(0.01)
    assert _Receiver.got[0]["status"] == "OK" and _Receiver.got[0]["request_id"] == job.request_id
    assert res.artifacts


# -- what an answer may hold: counts, sizes --------------------------------------------------------


def _flooding_app(endpoint: str, copies: int, *, padding: int = 0) -> FakeApp:
    """An app whose answer names `copies` files (the same small PNG) and carries `padding` bytes more."""

    def handle(inp: dict[str, Any], server: FalServer, job: JobRecord) -> dict[str, Any]:
        url = server.serve_bytes(media.png_bytes(8, 8), "x.png", "image/png")
        files = [{"url": url, "content_type": "image/png"} for _ in range(copies)]
        return {"images": files, "seed": 1, "padding": "x" * padding}

    return FakeApp(endpoint, handle, queue_s=0.0, run_s=0.0)


async def test_an_answer_naming_a_thousand_files_is_refused_before_any_is_fetched(
    server: FalServer, backend: FalBackend
) -> None:
    server.add_app(_flooding_app("acme/flood", 1000))
    with pytest.raises(mg.MediaTooLargeError, match="1000 outputs for n=1"):
        await backend.run(mg.ImageRequest(prompt="x", options={"download": True}), "acme/flood", RunContext())
    assert server.stats.by_route["GET file"] == 0


async def test_an_api_answer_past_the_cap_is_refused_and_one_under_it_read(
    server: FalServer, backend: FalBackend
) -> None:
    server.add_app(_flooding_app("acme/padded", 1, padding=300_000))
    backend._connect().max_body_bytes = 100_000
    with pytest.raises(mg.MediaTooLargeError, match="the API answered with"):
        await backend.run(mg.ImageRequest(prompt="x"), "acme/padded", RunContext())
    backend._connect().max_body_bytes = 10_000_000
    res = await backend.run(mg.ImageRequest(prompt="x"), "acme/padded", RunContext())
    assert (await res.artifacts[0].aread()).startswith(b"\x89PNG")


async def test_the_outputs_of_one_result_share_a_byte_budget(server: FalServer) -> None:
    server.add_app(_flooding_app("acme/four", 4))
    size = len(media.png_bytes(8, 8))
    backend = FalBackend(
        key=server.key, base_url=server.url, storage_url=server.url, poll_interval=0.01, max_result_bytes=3 * size
    )
    try:
        res = await backend.run(mg.ImageRequest(prompt="x"), "acme/four", RunContext())
        assert len(res.artifacts) == 4
        with pytest.raises(mg.MediaTooLargeError):
            for artifact in res.artifacts:
                await artifact.aread()
        assert [a.is_loaded for a in res.artifacts] == [True, True, True, False]
    finally:
        await backend.aclose()
