"""fal inside fallback chains: it takes over from another provider, and hands over when it cannot serve."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import mediagen as mg
from mediagen_fal import FalBackend
from mediagen_testkit.fal_server import FalServer, expected_image
from mediagen_testkit.replicate_server import ReplicateServer

pytest.importorskip("replicate")
from mediagen_replicate import ReplicateBackend


@pytest.fixture
def replicate_server() -> Iterator[ReplicateServer]:
    with ReplicateServer(time_scale=0.01) as srv:
        yield srv


async def test_a_chain_moves_from_a_rejected_replicate_token_to_fal(
    server: FalServer, replicate_server: ReplicateServer
) -> None:
    backends = {
        "replicate": ReplicateBackend(api_token="r8_wrong", base_url=replicate_server.url),
        "fal": FalBackend(key=server.key, base_url=server.url, storage_url=server.url, poll_interval=0.01),
    }
    async with mg.Client(backends=backends) as client:
        res = await client.generate(
            mg.ImageRequest(prompt="a fox", seed=21, output_format="png"),
            model=["replicate:black-forest-labs/flux-schnell", "fal:fal-ai/flux/schnell", "test:fake"],
        )
    assert res.provider == "fal"
    assert await res.artifacts[0].aread() == expected_image(21)
    assert replicate_server.stats.predictions_created == 0 and server.stats.jobs_queued == 1


async def test_a_chain_moves_on_from_fal_when_fal_keeps_throttling(server: FalServer) -> None:
    server.faults.status_429_every = 1
    backends = {"fal": FalBackend(key=server.key, base_url=server.url, storage_url=server.url, max_retries=2)}
    async with mg.Client(backends=backends) as client:
        res = await client.generate(
            mg.ImageRequest(prompt="a fox", seed=1), model=["fal:fal-ai/flux/schnell", "test:fake"]
        )
    assert res.provider == "test"
    assert server.stats.jobs_queued == 0


async def test_a_submit_that_may_be_queued_does_not_fall_back(server: FalServer) -> None:
    # Its job may be running on fal: paying a second provider for the same picture is not a fallback.
    server.faults.drop_every = 1
    server.faults.drop_after_submit = True
    server.faults.only_submits = True
    backends = {"fal": FalBackend(key=server.key, base_url=server.url, storage_url=server.url)}
    async with mg.Client(backends=backends) as client:
        with pytest.raises(mg.MediagenError, match="may be queued"):
            await client.generate(mg.ImageRequest(prompt="a fox"), model=["fal:fal-ai/flux/schnell", "test:fake"])
    assert server.stats.jobs_queued == 1
