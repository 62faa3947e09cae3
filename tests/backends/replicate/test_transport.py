"""Waiting, cancelling and pacing: sync mode, polls, progress, one deadline, cancel on cancel."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import respx

import mediagen as mg
from mediagen.backend import RunContext
from mediagen.policies import parse_retry_after  # moved to the core; Replicate re-exports it
from mediagen_testkit.replicate_server import ReplicateServer, image_model, video_model

pytest.importorskip("replicate")
from mediagen_replicate import ReplicateBackend
from mediagen_replicate.transport import LogReporter, PollPacer, parse_time

SLOW = "minimax/video-01"  # served below with a model that runs for ~10 s of real time


@pytest.fixture
def server() -> Iterator[ReplicateServer]:
    models = [image_model(), video_model(run_seconds=1000, log_steps=100)]
    with ReplicateServer(time_scale=0.01, models=models) as srv:
        yield srv


@pytest.fixture
async def backend(server: ReplicateServer) -> AsyncIterator[ReplicateBackend]:
    b = ReplicateBackend(api_token=server.token, base_url=server.url, poll_interval=0.05, max_poll_interval=0.2)
    yield b
    await b.aclose()


def status_of_last(server: ReplicateServer) -> str:
    return str(server.snapshot(list(server.predictions)[-1])["status"])


# -- sync mode and polling -------------------------------------------------------------------------


async def test_sync_mode_answers_in_one_request(backend: ReplicateBackend, server: ReplicateServer) -> None:
    await backend.run(mg.ImageRequest(prompt="x", seed=1), "black-forest-labs/flux-schnell", RunContext())
    server.stats.reset()
    await backend.run(mg.ImageRequest(prompt="x", seed=2), "black-forest-labs/flux-schnell", RunContext())
    assert server.stats.requests == 1  # the create itself brought the output
    record = next(iter(server.records.values()))
    assert record.prefer_wait_s == 60


async def test_polling_when_sync_mode_is_off(backend: ReplicateBackend, server: ReplicateServer) -> None:
    res = await backend.run(
        mg.ImageRequest(prompt="x", seed=1, options={"wait": False}), "black-forest-labs/flux-schnell", RunContext()
    )
    assert server.records[res.raw["id"]].prefer_wait_s is None
    assert server.stats.count("GET", "/v1/predictions/{id}") >= 1
    assert res.raw["status"] == "succeeded"


async def test_past_the_sync_window_it_polls_and_reports_progress(server: ReplicateServer) -> None:
    server.add_model(video_model(run_seconds=150, log_steps=10))  # 1.5 s real, past a 0.6 s window
    backend = ReplicateBackend(api_token=server.token, base_url=server.url)
    events: list[mg.Event] = []
    try:
        res = await backend.run(mg.VideoRequest(prompt="w"), SLOW, RunContext(emit=events.append))
    finally:
        await backend.aclose()
    progress = [e for e in events if isinstance(e, mg.Progress)]
    assert progress[-1] == mg.Progress(step=10, total=10)
    assert [p.step for p in progress] == sorted(p.step for p in progress)
    assert res.raw["status"] == "succeeded"
    # Paced by the progress bar: a handful of polls, not one every half second.
    assert 1 <= server.stats.count("GET", "/v1/predictions/{id}") <= 4


async def test_log_lines_become_log_events(backend: ReplicateBackend) -> None:
    events: list[mg.Event] = []
    await backend.run(
        mg.ImageRequest(prompt="x", seed=42), "black-forest-labs/flux-schnell", RunContext(emit=events.append)
    )
    assert mg.Log(message="Using seed: 42") in events
    assert any(isinstance(e, mg.Progress) for e in events)
    assert not any(isinstance(e, mg.Log) and "%|" in e.message for e in events)  # bars are progress, not logs


# -- cancellation and the deadline -----------------------------------------------------------------


async def until_created(server: ReplicateServer) -> None:
    """Wait (bounded) until the server has created the prediction: a loaded machine may take a while."""
    for _ in range(500):
        if server.stats.predictions_created:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the prediction was never created")


async def test_cancel_while_polling_sends_the_cancel(backend: ReplicateBackend, server: ReplicateServer) -> None:
    task = asyncio.create_task(backend.run(mg.VideoRequest(prompt="x", options={"wait": False}), SLOW, RunContext()))
    await until_created(server)
    await asyncio.sleep(0.1)  # a poll or two
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert server.stats.cancels == 1 and status_of_last(server) == "canceled"


async def test_cancel_during_the_sync_wait_finds_and_cancels_the_prediction(
    backend: ReplicateBackend, server: ReplicateServer
) -> None:
    task = asyncio.create_task(backend.run(mg.VideoRequest(prompt="x"), SLOW, RunContext()))
    await until_created(server)  # and held open by Prefer: wait
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert server.stats.cancels == 1 and status_of_last(server) == "canceled"


async def test_deadline_sends_cancel_after_and_the_cancel(server: ReplicateServer) -> None:
    # The server's clock is not scaled here, so Cancel-After (5 s at least) has not fired: our cancel does it.
    with ReplicateServer(time_scale=1.0, models=[video_model(run_seconds=1000)]) as real_time:
        backend = ReplicateBackend(api_token=real_time.token, base_url=real_time.url, poll_interval=0.05)
        started = time.monotonic()
        try:
            with pytest.raises(mg.DeadlineExceededError):
                await backend.run(mg.VideoRequest(prompt="x"), SLOW, RunContext(deadline=time.monotonic() + 1.5))
        finally:
            await backend.aclose()
        assert time.monotonic() - started < 1000 * 0.5  # far less than the run: our cancel ended it
        (record,) = real_time.records.values()
        assert record.cancel_after_s == 5.0  # ceil(1.5 s), raised to Replicate's 5 s minimum
        assert record.prefer_wait_s is None  # no time for a sync wait within 1.5 s
        assert real_time.stats.cancels == 1 and status_of_last(real_time) == "canceled"


async def test_cancel_after_that_fires_is_a_deadline_error(backend: ReplicateBackend, server: ReplicateServer) -> None:
    # On the scaled clock Cancel-After fires 100 times sooner than our own deadline would.
    with pytest.raises(mg.DeadlineExceededError, match="stopped by its deadline"):
        await backend.run(mg.VideoRequest(prompt="x"), SLOW, RunContext(deadline=time.monotonic() + 8))
    assert status_of_last(server) == "canceled"


async def test_client_timeout_and_job_cancel() -> None:
    # Real time on the server, so that our cancel call, not Cancel-After, ends the prediction.
    with ReplicateServer(time_scale=1.0, models=[video_model(run_seconds=1000)]) as server:
        backend = ReplicateBackend(api_token=server.token, base_url=server.url, poll_interval=0.05)
        async with mg.Client(backends={"replicate": backend}) as client:
            with pytest.raises(mg.DeadlineExceededError):
                await client.video("x", model=f"replicate:{SLOW}", timeout=0.5)
            assert server.stats.cancels == 1 and status_of_last(server) == "canceled"

            job = client.submit(mg.VideoRequest(prompt="y", options={"wait": False}), model=f"replicate:{SLOW}")
            async for event in job.events():
                if isinstance(event, mg.Started):
                    break
            await asyncio.sleep(0.3)
            await job.cancel()
            assert job.status is mg.JobStatus.CANCELLED
            assert server.stats.cancels == 2 and status_of_last(server) == "canceled"


# -- units -------------------------------------------------------------------------------------------


def test_log_reporter_reads_only_new_complete_lines() -> None:
    steps: list[tuple[int, int]] = []
    lines: list[str] = []
    reporter = LogReporter(lambda s, t: steps.append((s, t)), lines.append, clock=iter(range(100)).__next__)
    reporter.update({"logs": "loading\n  2%|▏         | 1/50 [00:00<00:31,  1.57it/s]\n 4%|"})
    reporter.update(
        {"logs": "loading\n  2%|▏         | 1/50 [00:00<00:31,  1.57it/s]\n 4%|▍ | 2/50 [00:01<00:30]\ndone"}
    )
    reporter.update({"logs": None})  # a cancelled prediction
    reporter.update(
        {"logs": "loading\n  2%|▏         | 1/50 [00:00<00:31,  1.57it/s]\n 4%|▍ | 2/50 [00:01<00:30]\ndone"},
        final=True,
    )
    assert steps == [(1, 50), (2, 50)]
    assert lines == ["loading", "done"]
    assert reporter.seen == [(0, 0.02), (1, 0.04)]


def test_poll_pacer_estimates() -> None:
    pacer = PollPacer(min_s=0.5, max_s=10.0)
    # Nothing known: backoff grows with polls and with time waited.
    assert pacer.delay("m", elapsed=0.0, polls=0) == 0.5
    assert pacer.delay("m", elapsed=0.0, polls=2) == pytest.approx(1.125)
    assert pacer.delay("m", elapsed=30.0, polls=0) == 6.0
    # One reading, 25 % after 4 s: 12 s left by the rate, halved for lag.
    assert pacer.delay("m", elapsed=4.0, seen=[(100.0, 0.25)], now=100.0) == pytest.approx(6.0)
    # Two readings: 10 % a second, 50 % left, read 1 s ago.
    assert pacer.delay("m", elapsed=9.0, seen=[(100.0, 0.3), (102.0, 0.5)], now=103.0) == pytest.approx(4.0)
    assert pacer.delay("m", elapsed=9.0, seen=[(100.0, 0.3), (102.0, 1.0)], now=103.0) == 0.25
    # History: a model that took 8 s, 3 s in.
    pacer.record("m", 8.0)
    assert pacer.delay("m", elapsed=3.0) == 5.0
    assert pacer.delay("m", elapsed=60.0) == 10.0  # capped


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0 and parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("2015-10-21T07:28:00Z", now=1445412500.0) == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("-1") is None and parse_retry_after("soon") is None
    assert parse_retry_after("inf") is None and parse_retry_after("  ") is None


def test_parse_time_handles_any_fraction_width() -> None:
    a = parse_time("2024-04-22T11:15:15.329Z")
    b = parse_time("2024-04-22T11:15:15.329123456+00:00")
    assert a is not None and b is not None and a < b
    assert parse_time(None) is None and parse_time("yesterday") is None


@respx.mock
async def test_create_429_is_retried_after_retry_after_and_pauses_all_creates() -> None:
    base = "https://replicate.test"
    model = {"latest_version": {"id": "v" * 64, "openapi_schema": {}}, "is_official": True}
    done = {
        "id": "p1",
        "status": "succeeded",
        "output": "https://cdn.test/out.png",
        "logs": "",
        "model": "a/b",
        "version": "hidden",
        "input": {"prompt": "x"},
        "created_at": "2024-01-01T00:00:00Z",
    }
    respx.get(f"{base}/v1/models/a/b").mock(return_value=httpx.Response(200, json=model))
    create = respx.post(f"{base}/v1/models/a/b/predictions").mock(
        side_effect=[
            httpx.Response(429, json={"detail": "Request was throttled."}, headers={"Retry-After": "0.3"}),
            httpx.Response(201, json=done),
        ]
    )
    mg.allow_remote_requests(True)
    backend = ReplicateBackend(api_token="r8_" + "x" * 20, base_url=base)
    try:
        started = time.monotonic()
        res = await backend.run(mg.ImageRequest(prompt="x"), "a/b", RunContext())
        waited = time.monotonic() - started
    finally:
        mg.allow_remote_requests(False)
        await backend.aclose()
    assert create.call_count == 2 and waited >= 0.3
    assert res.artifacts[0].url == "https://cdn.test/out.png"
    keys = {call.request.headers["Idempotency-Key"] for call in create.calls}
    assert len(keys) == 1  # one logical create, one key across its retries
