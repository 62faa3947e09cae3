"""Faults, cancellation and deadlines: a submit is never duplicated, cancel reaches fal's queue."""

from __future__ import annotations

import asyncio
import email.utils
import time
from datetime import datetime, timedelta, timezone

import pytest

import mediagen as mg
from mediagen.backend import RunContext
from mediagen_fal import FalBackend
from mediagen_testkit.fal_server import FalServer, expected_image


async def until_queued(server: FalServer) -> None:
    """Wait (polling, bounded) until the server has queued a job."""
    for _ in range(3000):
        if server.jobs:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no job was queued")


def backend_for(server: FalServer, **kw: object) -> FalBackend:
    settings: dict[str, object] = {"poll_interval": 0.01, "retry_base_delay": 0.01}
    settings.update(kw)
    return FalBackend(key=server.key, base_url=server.url, storage_url=server.url, **settings)  # type: ignore[arg-type]


async def test_twelve_concurrent_jobs_under_429_and_500_all_complete_once(server: FalServer) -> None:
    server.faults.status_429_every = 3
    server.faults.status_500_every = 5
    backend = backend_for(server)
    try:
        results = await asyncio.gather(
            *(
                backend.run(
                    mg.ImageRequest(prompt=f"fox {i}", seed=100 + i, output_format="png"),
                    "fal-ai/flux/schnell",
                    RunContext(),
                )
                for i in range(12)
            )
        )
        for i, res in enumerate(results):
            assert await res.artifacts[0].aread() == expected_image(100 + i)
        sent = backend.describe()["requests"]
    finally:
        await backend.aclose()
    snap = server.stats.snapshot()
    assert snap["faults"] > 0  # the faults really happened
    assert snap["jobs_queued"] == 12 and snap["duplicates"] == 0
    assert sent["submit_retries"] > 0 and sent["retries"] > 0  # submits and reads both rode them out


async def test_a_queue_500_after_queueing_is_adopted_not_resubmitted(server: FalServer) -> None:
    # The queue takes the job, then answers 500 with the job's x-fal-request-id.
    server.faults.status_500_every = 1
    server.faults.error_source = "queue"
    server.faults.only_submits = True
    backend = backend_for(server)
    try:
        res = await backend.run(
            mg.ImageRequest(prompt="a fox", seed=1, output_format="png"), "fal-ai/flux/dev", RunContext()
        )
        sent = backend.describe()["requests"]
    finally:
        await backend.aclose()
    assert await res.artifacts[0].aread() == expected_image(1)
    assert server.stats.jobs_queued == 1
    assert sent["submits_adopted"] == 1


async def test_a_submit_whose_answer_is_lost_fails_without_a_second_job(server: FalServer) -> None:
    server.faults.drop_every = 1
    server.faults.drop_after_submit = True
    server.faults.only_submits = True
    backend = backend_for(server)
    try:
        with pytest.raises(mg.ProviderError, match="may be queued") as info:
            await backend.run(mg.ImageRequest(prompt="a fox", seed=1), "fal-ai/flux/dev", RunContext())
    finally:
        await backend.aclose()
    assert info.value.retryable is False  # so no policy layer sends it again either
    assert server.stats.jobs_queued == 1 and server.stats.by_route["POST submit"] == 1


async def test_dropped_reads_are_retried(server: FalServer) -> None:
    server.faults.drop_every = 4
    backend = backend_for(server)
    try:
        res = await backend.run(
            mg.ImageRequest(prompt="a fox", seed=8, output_format="png"), "fal-ai/flux/schnell", RunContext()
        )
    finally:
        await backend.aclose()
    assert await res.artifacts[0].aread() == expected_image(8)
    assert server.stats.duplicates == 0


async def test_a_429_without_end_surfaces_as_rate_limited(server: FalServer) -> None:
    server.faults.status_429_every = 1
    server.faults.retry_after = "0"
    backend = backend_for(server, max_retries=3)
    try:
        with pytest.raises(mg.RateLimitedError) as info:
            await backend.run(mg.ImageRequest(prompt="a fox"), "fal-ai/flux/schnell", RunContext())
    finally:
        await backend.aclose()
    assert info.value.retry_after == 0
    assert server.stats.jobs_queued == 0 and server.stats.by_route["POST submit"] == 3


async def test_cancelling_the_job_cancels_it_on_fal(server: FalServer) -> None:
    server.faults.long_jobs = 30.0
    async with mg.Client(backends={"fal": backend_for(server)}) as client:
        job = client.submit(mg.ImageRequest(prompt="a slow fox"), model="fal:fal-ai/flux/dev")
        await until_queued(server)
        await asyncio.sleep(0.05)
        await job.cancel()
    (request_id,) = server.jobs
    assert server.stats.cancels[request_id] == 1  # the server saw the cancel call
    assert server.jobs[request_id].cancelled_at is not None


async def test_cancelled_during_submit_cancels_what_the_submit_queued(server: FalServer) -> None:
    server.faults.latency_s = 0.3  # the submit's answer is slow to come back
    backend = backend_for(server)
    try:
        task = asyncio.ensure_future(backend.run(mg.ImageRequest(prompt="a fox"), "fal-ai/flux/dev", RunContext()))
        await until_queued(server)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await backend.aclose()
    (request_id,) = server.jobs
    assert server.stats.cancels[request_id] == 1


async def test_the_deadline_cancels_the_job_and_raises(server: FalServer) -> None:
    server.faults.long_jobs = 30.0
    backend = backend_for(server)
    try:
        with pytest.raises(mg.DeadlineExceededError):
            await backend.run(
                mg.ImageRequest(prompt="a slow fox"), "fal-ai/flux/dev", RunContext(deadline=time.monotonic() + 1.5)
            )
    finally:
        await backend.aclose()
    (request_id,) = server.jobs
    assert server.stats.cancels[request_id] == 1
    # fal was told how long the job may wait in its queue.
    assert 0 < float(server.jobs[request_id].headers["x-fal-request-timeout"]) <= 1.5


async def test_a_failed_job_raises_generation_failed(server: FalServer) -> None:
    backend = backend_for(server)
    try:
        with pytest.raises(mg.InvalidRequestError, match="duration"):
            await backend.run(
                mg.VideoRequest(prompt="x", options={"duration": "7"}),
                "fal-ai/kling-video/v2.1/master/text-to-video",
                RunContext(),
            )
    finally:
        await backend.aclose()
    # Checked before sending: Kling's documented choices.
    assert server.stats.jobs_queued == 0


def test_a_throttle_that_names_a_date_is_waited_out_too() -> None:
    import httpx

    from mediagen_fal.errors import error_for_response

    later = email.utils.format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    response = httpx.Response(429, headers={"Retry-After": later}, json={"detail": "slow down"})
    error = error_for_response(response, model="fal-ai/flux/schnell")
    assert isinstance(error, mg.RateLimitedError)
    assert error.retry_after is not None and 20 < error.retry_after <= 30
