"""The loopback fal queue speaks the documented queue API, with plain httpx (no mediagen in between)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from mediagen_testkit.fal_server import FalServer, expected_image


@pytest.fixture
def server() -> Iterator[FalServer]:
    with FalServer(time_scale=0.01) as srv:
        yield srv


def keyed(server: FalServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Key {server.key}"}, timeout=10)


def wait_completed(http: httpx.Client, status_url: str) -> dict[str, object]:
    for _ in range(500):
        status = http.get(status_url, params={"logs": 1}).json()
        if status["status"] == "COMPLETED":
            return status  # type: ignore[no-any-return]
        time.sleep(0.01)
    raise AssertionError("the job never completed")


def test_submit_status_result_with_owner_alias_urls(server: FalServer) -> None:
    with keyed(server) as http:
        answer = http.post("/fal-ai/flux/schnell", json={"prompt": "a fox", "seed": 5, "output_format": "png"})
        assert answer.status_code == 200 and answer.headers["x-fal-request-id"] == answer.json()["request_id"]
        body = answer.json()
        rid = body["request_id"]
        assert body["status_url"] == f"{server.url}/fal-ai/flux/requests/{rid}/status"
        assert body["response_url"] == f"{server.url}/fal-ai/flux/requests/{rid}"
        assert body["cancel_url"] == f"{server.url}/fal-ai/flux/requests/{rid}/cancel"
        first = http.get(body["status_url"]).json()
        assert first["status"] in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
        done = wait_completed(http, body["status_url"])
        assert isinstance(done["logs"], list) and done["metrics"]
        result = http.get(body["response_url"]).json()
    image = result["images"][0]
    assert image["content_type"] == "image/png"
    assert httpx.get(image["url"]).content == expected_image(5)  # files need no key


def test_the_full_app_id_is_not_a_status_path(server: FalServer) -> None:
    with keyed(server) as http:
        rid = http.post("/fal-ai/flux/schnell", json={"prompt": "a fox"}).json()["request_id"]
        # The request lives under owner/alias (as fal's status_url says), not under the full app id.
        assert http.get(f"/fal-ai/flux/schnell/requests/{rid}/status").status_code == 405
        assert http.get(f"/fal-ai/flux/requests/{rid}/status").json()["request_id"] == rid


def test_auth_unknown_app_and_validation(server: FalServer) -> None:
    assert httpx.post(f"{server.url}/fal-ai/flux/schnell", json={"prompt": "x"}).status_code == 401
    with keyed(server) as http:
        assert http.post("/nobody/nothing", json={"prompt": "x"}).status_code == 404
        missing = http.post("/fal-ai/trellis", json={})
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "image_url"]


def test_cancel_is_recorded_and_answers_by_state(server: FalServer) -> None:
    server.faults.long_jobs = 30
    with keyed(server) as http:
        body = http.post("/fal-ai/flux/dev", json={"prompt": "slow"}).json()
        assert http.put(body["cancel_url"]).status_code == 202
        done = wait_completed(http, body["status_url"])
        assert done["error_type"] == "request_cancelled"
        assert http.put(body["cancel_url"]).status_code == 400  # ALREADY_COMPLETED
    assert server.stats.cancels[body["request_id"]] == 2


def test_faults_every_kth_call(server: FalServer) -> None:
    server.faults.status_429_every = 2
    server.faults.status_500_every = 3
    with keyed(server) as http:
        codes = [http.post("/fal-ai/flux/schnell", json={"prompt": f"p{i}"}).status_code for i in range(6)]
    assert codes == [200, 429, 500, 429, 200, 429]
    # Ingress-style 5xx queue nothing and carry no request id.
    assert server.stats.jobs_queued == 2


def test_storage_upload_then_keyless_put(server: FalServer) -> None:
    with keyed(server) as http:
        target = http.post("/storage/upload/initiate", json={"file_name": "a.png", "content_type": "image/png"}).json()
    assert httpx.put(target["upload_url"], content=b"png-bytes").status_code == 200
    assert httpx.get(target["file_url"]).content == b"png-bytes"
    assert httpx.put(target["upload_url"], content=b"again").status_code == 403  # single use
