"""The test kit's fault injection in front of `mediagen serve`: clients ride out what they should."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

import mediagen as mg
from mediagen_testkit.faults import FaultInjection, Faults
from mediagen_testkit.serve_server import TEST_TOKEN, ServeServer, fake_model

replicate = pytest.importorskip("replicate")


async def test_mediagen_retries_injected_429s_on_create(start_server: Callable[..., ServeServer]) -> None:
    from mediagen_replicate import ReplicateBackend

    faults = Faults(status=429, retry_after=0, first=2, routes=("POST /v1/models/",))
    server = start_server(models=[fake_model("pic", "image")], wrap=lambda app: FaultInjection(app, faults))
    backend = ReplicateBackend(api_token=TEST_TOKEN, base_url=server.url, poll_interval=0.05, retry_base_delay=0.01)
    async with mg.Client(backends={"replicate": backend}) as client:
        result = await client.image("a fox", model="replicate:acme/pic", seed=1, width=16, height=16)

    assert faults.injected == 2
    assert result.images[0].size == (16, 16)
    assert server.state.store.run_count("acme", "pic") == 1  # refused creates made no prediction


def test_replicate_client_retries_gets_and_sees_a_dropped_create(start_server: Callable[..., ServeServer]) -> None:
    gets = Faults(status=503, retry_after=0, first=2, routes=("GET /v1/predictions/",))
    server = start_server(models=[fake_model("pic", "image")], wrap=lambda app: FaultInjection(app, gets))
    client = replicate.Client(api_token=TEST_TOKEN, base_url=server.url)

    prediction = client.models.predictions.create("acme/pic", input={"prompt": "x"})
    prediction.wait()

    assert prediction.status == "succeeded" and gets.injected == 2

    gets.status, gets.drop, gets.routes, gets.first, gets.seen = None, True, ("POST /v1/models/",), 1, 0
    with pytest.raises(httpx.TransportError):
        httpx.post(
            f"{server.url}/v1/models/acme/pic/predictions",
            json={"input": {"prompt": "y"}},
            headers={"Authorization": f"Bearer {TEST_TOKEN}"},
        )
