"""One fallback chain across providers: OpenAI → fal → a local diffusers model (issue 13).

Each member is reached only when the ones before it cannot serve, on the providers' own loopback
servers and a tiny real pipeline; the request is the same typed request all along.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import mediagen as mg
from mediagen_fal import FalBackend
from mediagen_openai import OpenAIBackend
from mediagen_testkit.fake_http import Faults
from mediagen_testkit.fal_server import FalServer, expected_image
from mediagen_testkit.openai_server import OpenAIServer


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as srv:
        yield srv


@pytest.fixture
def fal_server() -> Iterator[FalServer]:
    with FalServer(time_scale=0.01) as srv:
        yield srv


def _chain(tiny_model: Callable[[str], Path]) -> list[str]:
    return ["openai:gpt-image-2", "fal:fal-ai/flux/schnell", f"diffusers:{tiny_model('sd')}"]


def _backends(openai_server: OpenAIServer, fal_server: FalServer) -> dict[str, mg.Backend]:
    return {
        "openai": OpenAIBackend(
            api_key=openai_server.api_key, base_url=openai_server.url, max_retries=1, retry_base_delay=0.01
        ),
        "fal": FalBackend(
            key=fal_server.key, base_url=fal_server.url, storage_url=fal_server.url, poll_interval=0.01, max_retries=1
        ),
    }


REQUEST = mg.ImageRequest(prompt="a red fox", seed=21, width=32, height=32, steps=2, output_format="png")


async def test_the_first_healthy_member_serves(
    openai_server: OpenAIServer, fal_server: FalServer, tiny_model: Callable[[str], Path]
) -> None:
    async with mg.Client(backends=_backends(openai_server, fal_server)) as client:
        res = await client.generate(REQUEST, model=_chain(tiny_model))
    assert res.provider == "openai"
    assert res.artifacts[0].to_pil().size[0] > 0
    assert fal_server.stats.jobs_queued == 0


async def test_openai_failing_hands_over_to_fal(
    openai_server: OpenAIServer, fal_server: FalServer, tiny_model: Callable[[str], Path]
) -> None:
    openai_server.faults = Faults(error_every=1, error_status=503)
    async with mg.Client(backends=_backends(openai_server, fal_server)) as client:
        res = await client.generate(REQUEST, model=_chain(tiny_model))
    assert res.provider == "fal"
    assert await res.artifacts[0].aread() == expected_image(21)
    assert fal_server.stats.jobs_queued == 1
    # The chain says why it moved on.
    assert any("openai" in w.message for w in res.warnings)


async def test_both_hosted_down_falls_back_to_the_local_gpu(
    openai_server: OpenAIServer, fal_server: FalServer, tiny_model: Callable[[str], Path]
) -> None:
    openai_server.faults = Faults(error_every=1, error_status=503)
    fal_server.faults.status_429_every = 1
    async with mg.Client(backends=_backends(openai_server, fal_server)) as client:
        res = await client.generate(REQUEST, model=_chain(tiny_model))
        alone = await client.generate(REQUEST, model=_chain(tiny_model)[-1])
    assert res.provider == "diffusers"
    # The same seed on the same local model gives the same picture, chain or not.
    assert res.artifacts[0].to_pil().tobytes() == alone.artifacts[0].to_pil().tobytes()
    assert fal_server.stats.jobs_queued == 0
