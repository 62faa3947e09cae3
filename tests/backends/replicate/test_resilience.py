"""Faults: throttling, server errors and dropped connections never lose a request or run one twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

import mediagen as mg
from mediagen.backend import RunContext
from mediagen_testkit import media_fixtures as media
from mediagen_testkit.replicate_server import FaultPlan, ReplicateServer, image_model

pytest.importorskip("replicate")
from mediagen_replicate import ReplicateBackend

FLUX = "black-forest-labs/flux-schnell"


@pytest.fixture
def server() -> Iterator[ReplicateServer]:
    with ReplicateServer(time_scale=0.01, models=[image_model()]) as srv:
        yield srv


@pytest.fixture
async def backend(server: ReplicateServer) -> AsyncIterator[ReplicateBackend]:
    b = ReplicateBackend(api_token=server.token, base_url=server.url, reconcile_delay_s=0, retry_base_delay=0.02)
    yield b
    await b.aclose()


def expected_png(seed: int) -> bytes:
    return media.image_bytes(64, 64, seed=seed, fmt="png", quality=80)


async def generate_many(backend: ReplicateBackend, count: int) -> list[mg.Result]:
    async def one(seed: int) -> mg.Result:
        request = mg.ImageRequest(prompt="a fox", seed=seed, output_format="png", options={"download": True})
        return await backend.run(request, FLUX, RunContext())

    return list(await asyncio.gather(*(one(seed) for seed in range(count))))


@pytest.mark.parametrize("drop_after_create", [False, True], ids=["dropped-before", "dropped-after-create"])
async def test_concurrent_predictions_under_faults_complete_once_each(
    backend: ReplicateBackend, server: ReplicateServer, drop_after_create: bool
) -> None:
    count = 300 if not drop_after_create else 120
    server.faults = FaultPlan(create_429_every=5, get_503_every=7, drop_every=11, drop_after_create=drop_after_create)

    results = await generate_many(backend, count)

    for seed, result in enumerate(results):
        assert result.artifacts[0].read() == expected_png(seed)
    stats = server.stats.snapshot()
    assert stats["dropped"] > 0 and stats["faults_injected"] > stats["dropped"]
    # Exactly one prediction per request: none lost, none created twice (even when a create's
    # answer was lost after the prediction existed).
    assert stats["predictions_created"] == count
    assert len(stats["creates_by_key"]) == count and set(stats["creates_by_key"].values()) == {1}
    seeds = sorted(p["input"]["seed"] for p in server.predictions.values())
    assert seeds == list(range(count))


# Identical requests whose answers are lost: see test_recovery.py (they never share a prediction, and
# when two lost ones cannot be told apart they fail rather than run twice).


async def test_429_without_retry_after_and_5xx_reads_are_retried(
    backend: ReplicateBackend, server: ReplicateServer
) -> None:
    server.faults = FaultPlan(create_429_every=2, retry_after=None, get_500_every=2)
    res = await backend.run(mg.ImageRequest(prompt="x", seed=1, options={"wait": False}), FLUX, RunContext())
    assert res.raw["status"] == "succeeded"
    assert server.stats.predictions_created == 1


async def test_throttling_that_outlasts_the_retries_is_rate_limited_error(server: ReplicateServer) -> None:
    server.faults = FaultPlan(create_429_every=1, retry_after="0")
    backend = ReplicateBackend(api_token=server.token, base_url=server.url, max_retries=3, retry_base_delay=0.01)
    try:
        with pytest.raises(mg.RateLimitedError) as info:
            await backend.run(mg.ImageRequest(prompt="x"), FLUX, RunContext())
    finally:
        await backend.aclose()
    assert info.value.retryable and info.value.status == 429
    assert server.stats.count("POST", "/v1/models/{owner}/{name}/predictions") == 3
    assert server.stats.predictions_created == 0


async def test_job_retry_policy_from_the_shared_layer_is_used(
    backend: ReplicateBackend, server: ReplicateServer
) -> None:
    from mediagen.policies import Policy, RetryPolicy

    server.faults = FaultPlan(create_429_every=1, retry_after="0")
    ctx = RunContext(policy=Policy(retry=RetryPolicy(attempts=2, backoff_base_s=0.01)))
    with pytest.raises(mg.RateLimitedError):
        await backend.run(mg.ImageRequest(prompt="x"), FLUX, ctx)
    assert server.stats.count("POST", "/v1/models/{owner}/{name}/predictions") == 2
    assert ReplicateBackend.handles_retries  # the client must never re-run a whole run: a second create


async def test_billing_is_not_retried(backend: ReplicateBackend, server: ReplicateServer) -> None:
    server.faults = FaultPlan(status_402=True)
    with pytest.raises(mg.ProviderError) as info:
        await backend.run(mg.ImageRequest(prompt="x"), FLUX, RunContext())
    assert info.value.status == 402 and not info.value.retryable and "billing" in str(info.value)
    assert server.stats.count("POST", "/v1/models/{owner}/{name}/predictions") == 1


async def test_failed_prediction_and_refusal(server: ReplicateServer) -> None:
    server.add_model(image_model(name="broken", fail_with="CUDA out of memory"))
    server.add_model(image_model(name="prude", fail_with="NSFW content detected. Try a different prompt."))
    backend = ReplicateBackend(api_token=server.token, base_url=server.url)
    try:
        with pytest.raises(mg.GenerationFailedError, match="CUDA out of memory") as crashed:
            await backend.run(mg.ImageRequest(prompt="x"), "black-forest-labs/broken", RunContext())
        with pytest.raises(mg.GenerationFailedError) as refused:
            await backend.run(mg.ImageRequest(prompt="x"), "black-forest-labs/prude", RunContext())
    finally:
        await backend.aclose()
    assert not crashed.value.refused and crashed.value.retryable
    assert refused.value.refused and not refused.value.retryable
    assert server.stats.predictions_created == 2 and server.stats.cancels == 0


async def test_wrong_token_is_authentication_error(server: ReplicateServer) -> None:
    backend = ReplicateBackend(api_token="r8_wrongwrongwrong", base_url=server.url)
    try:
        with pytest.raises(mg.AuthenticationError, match="REPLICATE_API_TOKEN") as info:
            await backend.capabilities(FLUX)
    finally:
        await backend.aclose()
    assert info.value.status == 401


async def test_unreachable_endpoint_is_a_retryable_provider_error() -> None:
    backend = ReplicateBackend(
        api_token="r8_" + "t" * 20, base_url="http://127.0.0.1:9", max_retries=2, retry_base_delay=0.01
    )
    try:
        with pytest.raises(mg.EndpointUnreachableError, match="could not connect to Replicate") as info:
            await backend.run(mg.ImageRequest(prompt="x"), FLUX, RunContext())
    finally:
        await backend.aclose()
    assert info.value.retryable and isinstance(info.value, mg.ProviderError)
    assert not any(type(e).__module__.startswith(("httpx", "replicate")) for e in [info.value])
