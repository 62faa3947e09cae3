"""Jobs and events: submit, event order, many consumers, status, cancellation, deadlines, threads."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import pytest

import mediagen as mg
from mediagen.testing import FakeBackend, FunctionBackend


def kinds(events: list[mg.Event]) -> list[str]:
    return [type(e).__name__ for e in events]


async def collect(job: mg.Job) -> list[mg.Event]:
    return [event async for event in job.events()]


async def first(job: mg.Job, kind: type) -> Any:
    async for event in job.events():
        if isinstance(event, kind):
            return event
    raise AssertionError(f"no {kind.__name__} event")


async def test_submit_returns_at_once() -> None:
    slow = FakeBackend(steps=20, step_delay_s=0.05)  # a 1 s job
    async with mg.Client(backends={"x": slow}) as client:
        job = client.submit(mg.ImageRequest(prompt="x"), model="x:m")
        assert job.status == mg.JobStatus.QUEUED and not job.done()
        assert slow.calls == 0  # nothing ran yet: the caller has not yielded to the loop
        assert job.request.prompt == "x" and job.model == "x:m"
        assert job.id in repr(job) and "queued" in repr(job)
        result = await job.result()
        assert len(result.artifacts) == 1


async def test_event_order() -> None:
    async with mg.Client(backends={"x": FakeBackend(steps=4)}) as client:
        job = client.submit(mg.ImageRequest(prompt="x"), model="x:m")
        events = await collect(job)
    assert kinds(events) == ["Queued", "Started", "Progress", "Progress", "Progress", "Progress", "Completed"]
    assert [(e.step, e.total) for e in events if isinstance(e, mg.Progress)] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    started = events[1]
    assert isinstance(started, mg.Started) and (started.provider, started.model) == ("x", "m")
    assert all(e.job_id == job.id for e in events)
    completed = events[-1]
    assert isinstance(completed, mg.Completed) and completed.result is await job.result()
    assert job.progress == mg.Progress(step=4, total=4, job_id=job.id)
    assert job.progress.fraction == 1.0


async def test_several_consumers_and_a_late_one_get_every_event() -> None:
    async with mg.Client(backends={"x": FakeBackend(steps=3, step_delay_s=0.01)}) as client:
        job = client.submit(mg.ImageRequest(prompt="x"), model="x:m")
        early = await asyncio.gather(collect(job), collect(job), collect(job))
        late = await collect(job)  # after the job ended
        again = await collect(job)
    assert early[0] == early[1] == early[2] == late == again
    assert kinds(late) == ["Queued", "Started", "Progress", "Progress", "Progress", "Completed"]


async def test_consumers_that_join_midway() -> None:
    async with mg.Client(backends={"x": FakeBackend(steps=6, step_delay_s=0.01)}) as client:
        job = client.submit(mg.ImageRequest(prompt="x"), model="x:m")
        await first(job, mg.Progress)
        midway = await collect(job)
    assert kinds(midway)[0] == "Queued" and kinds(midway)[-1] == "Completed"  # from the start, still


async def test_status_transitions() -> None:
    seen: list[tuple[str, mg.JobStatus]] = []
    async with mg.Client(backends={"x": FakeBackend(steps=2, step_delay_s=0.01)}) as client:
        job = client.submit(mg.ImageRequest(prompt="x"), model="x:m")
        seen.append(("submitted", job.status))
        async for event in job.events():
            seen.append((type(event).__name__, job.status))
        seen.append(("after", job.status))
    assert seen[0] == ("submitted", mg.JobStatus.QUEUED)
    assert ("Started", mg.JobStatus.RUNNING) in seen
    assert ("Progress", mg.JobStatus.RUNNING) in seen
    assert seen[-1] == ("after", mg.JobStatus.SUCCEEDED)
    assert job.done() and job.status.done
    assert not mg.JobStatus.RUNNING.done


async def test_await_job() -> None:
    async with mg.Client() as client:
        result = await client.submit(mg.AudioRequest(prompt="x", duration_s=0.1), model="test:fake")
    assert isinstance(result.artifacts[0], mg.Audio)


async def test_cancel_mid_run() -> None:
    contexts: list[mg.RunContext] = []

    class ContextKeeping(FakeBackend):
        async def run(self, request: mg.Request, model: str, ctx: mg.RunContext) -> mg.Result:
            contexts.append(ctx)
            return await super().run(request, model, ctx)

    slow = ContextKeeping(steps=100, step_delay_s=0.01)
    async with mg.Client(backends={"x": slow}) as client:
        job = client.submit(mg.ImageRequest(prompt="x"), model="x:m")
        await first(job, mg.Progress)
        assert job.status == mg.JobStatus.RUNNING
        await job.cancel()
        assert job.status == mg.JobStatus.CANCELLED
        events = await collect(job)
        with pytest.raises(asyncio.CancelledError):
            await job.result()
        await job.cancel()  # again: nothing happens
    assert kinds(events)[-1] == "Cancelled" and kinds(events).count("Cancelled") == 1
    assert events[-1].reason == "cancelled"
    assert slow.cancelled == 1
    assert contexts[0].cancelled.is_set()  # worker threads can see it
    assert len([e for e in events if isinstance(e, mg.Progress)]) < 100


async def test_cancel_before_the_job_starts() -> None:
    fake = FakeBackend()
    async with mg.Client(backends={"x": fake}) as client:
        job = client.submit(mg.ImageRequest(prompt="x"), model="x:m")
        await job.cancel("changed my mind")
        assert job.status == mg.JobStatus.CANCELLED
        events = await asyncio.wait_for(collect(job), 2)
        with pytest.raises(asyncio.CancelledError):
            await job.result()
    assert kinds(events) == ["Queued", "Cancelled"]
    assert events[-1].reason == "changed my mind"
    assert fake.calls == 0


async def test_cancel_after_completion_keeps_the_result() -> None:
    async with mg.Client() as client:
        job = client.submit(mg.ImageRequest(prompt="x"), model="test:fake")
        result = await job.result()
        await job.cancel()
        assert job.status == mg.JobStatus.SUCCEEDED
        assert await job.result() is result


async def test_cancelling_the_wait_does_not_cancel_the_job() -> None:
    async with mg.Client(backends={"x": FakeBackend(steps=5, step_delay_s=0.01)}) as client:
        job = client.submit(mg.ImageRequest(prompt="x"), model="x:m")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(job.result(), 0.005)
        assert len((await job.result()).artifacts) == 1


@pytest.mark.parametrize("where", ["call", "client"])
async def test_deadline(where: str) -> None:
    slow = FakeBackend(steps=100, step_delay_s=0.01)
    kwargs: dict[str, Any] = {"timeout": 0.1} if where == "call" else {}
    client_kwargs: dict[str, Any] = {"timeout": 0.1} if where == "client" else {}
    async with mg.Client(backends={"x": slow}, **client_kwargs) as client:
        job = client.submit(mg.ImageRequest(prompt="x"), model="x:m", **kwargs)
        events = await collect(job)
        with pytest.raises(mg.DeadlineExceededError) as info:
            await job.result()
    assert slow.cancelled == 1  # stopped part-way by the deadline, not run to the end
    failed = events[-1]
    assert isinstance(failed, mg.Failed) and failed.error is info.value
    assert isinstance(info.value, TimeoutError)
    assert "0.1 s deadline" in str(info.value) and (info.value.provider, info.value.model) == ("x", "m")
    assert job.status == mg.JobStatus.FAILED
    assert slow.cancelled == 1


async def test_none_timeout_overrides_the_client_default() -> None:
    async with mg.Client(backends={"x": FakeBackend(steps=3, step_delay_s=0.05)}, timeout=0.05) as client:
        result = await client.image("x", model="x:m", timeout=None)
    assert result.artifacts


async def test_the_context_carries_the_deadline() -> None:
    seen: list[float | None] = []

    def fn(request: mg.Request, model: str, ctx: mg.RunContext) -> mg.Image:
        seen.append(ctx.time_left())
        ctx.check_deadline()
        return mg.Image.from_array(np.zeros((4, 4, 3), np.uint8))

    async with mg.Client(backends={"f": FunctionBackend(fn)}) as client:
        await client.image("x", model="f:m", timeout=30)
        await client.image("x", model="f:m")
    assert seen[0] is not None and 29 < seen[0] <= 30
    assert seen[1] is None


async def test_cancelling_generate_cancels_the_job() -> None:
    slow = FakeBackend(steps=100, step_delay_s=0.01)
    progressing = asyncio.Event()

    def on_event(event: mg.Event) -> None:
        if isinstance(event, mg.Progress):
            progressing.set()

    async with mg.Client(backends={"x": slow}) as client:
        task = asyncio.ensure_future(client.generate(mg.ImageRequest(prompt="x"), model="x:m", on_event=on_event))
        await progressing.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert slow.cancelled == 1
        assert not client._jobs  # nothing left running


async def test_cancelling_generate_without_on_event() -> None:
    running = asyncio.Event()

    class Announcing(FakeBackend):
        async def run(self, request: mg.Request, model: str, ctx: mg.RunContext) -> mg.Result:
            running.set()
            return await super().run(request, model, ctx)

    slow = Announcing(steps=100, step_delay_s=0.01)
    async with mg.Client(backends={"x": slow}) as client:
        task = asyncio.ensure_future(client.image("x", model="x:m"))
        await running.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert slow.cancelled == 1


async def test_an_on_event_error_cancels_the_job() -> None:
    slow = FakeBackend(steps=100, step_delay_s=0.01)

    def on_event(event: mg.Event) -> None:
        if isinstance(event, mg.Progress):
            raise ValueError("the progress bar broke")

    async with mg.Client(backends={"x": slow}) as client:
        with pytest.raises(ValueError, match="progress bar"):
            await client.image("x", model="x:m", on_event=on_event)
        assert slow.cancelled == 1  # not left running with nobody waiting for it


async def test_failing_backend() -> None:
    error = mg.GenerationFailedError("the model ran out of memory", provider="x")
    async with mg.Client(backends={"x": FakeBackend(error=error)}) as client:
        job = client.submit(mg.ImageRequest(prompt="x"), model="x:m")
        events = await collect(job)
        with pytest.raises(mg.GenerationFailedError) as info:
            await job.result()
        with pytest.raises(mg.GenerationFailedError):
            await client.image("x", model="x:m")
    assert info.value is error
    assert kinds(events)[-1] == "Failed" and events[-1].error is error
    assert job.status == mg.JobStatus.FAILED


async def test_a_non_mediagen_exception_is_the_jobs_error_too() -> None:
    def fn(request: mg.Request, model: str, ctx: mg.RunContext) -> mg.Result:
        raise KeyError("bug in a plugin")

    async with mg.Client(backends={"f": FunctionBackend(fn)}) as client:
        job = client.submit(mg.ImageRequest(prompt="x"), model="f:m")
        with pytest.raises(KeyError):
            await job.result()
        assert isinstance((await collect(job))[-1], mg.Failed)


class ThreadedBackend(mg.Backend):
    """Works on its own thread, like a local device worker, and emits from there."""

    provider = "threaded"

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.thread_ids: list[int] = []

    async def run(self, request: mg.Request, model: str, ctx: mg.RunContext) -> mg.Result:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def work() -> None:
            self.thread_ids.append(threading.get_ident())
            for step in range(1, 6):
                ctx.progress(step, 5)
                ctx.log(f"step {step} done")
                time.sleep(0.002)
            loop.call_soon_threadsafe(done.set_result, None)

        thread = threading.Thread(target=work)
        thread.start()
        await done
        thread.join()
        image = mg.Image.from_array(np.zeros((4, 4, 3), np.uint8))
        return mg.Result(artifacts=[image], provider=self.provider, model=model)


async def test_events_from_another_thread_arrive() -> None:
    backend = ThreadedBackend()
    async with mg.Client(backends={"t": backend}) as client:
        job = client.submit(mg.ImageRequest(prompt="x"), model="t:m")
        events = await collect(job)
    assert backend.thread_ids and backend.thread_ids[0] != threading.get_ident()
    middle = events[2:-1]
    assert kinds(middle) == ["Progress", "Log"] * 5
    assert [e.step for e in middle if isinstance(e, mg.Progress)] == [1, 2, 3, 4, 5]
    assert [e.message for e in middle if isinstance(e, mg.Log)] == [f"step {i} done" for i in range(1, 6)]
    assert all(e.job_id == job.id for e in events)
    assert kinds(events)[-1] == "Completed"


async def test_nothing_follows_the_terminal_event() -> None:
    async with mg.Client() as client:
        job = client.submit(mg.ImageRequest(prompt="x"), model="test:fake")
        await job.result()
        job.emit(mg.Progress(step=9, total=9))
        job.emit(mg.Log(message="late"))
        events = await collect(job)
    assert kinds(events)[-1] == "Completed"
    assert not any(isinstance(e, mg.Log) for e in events)


def test_events_are_immutable_values() -> None:
    p = mg.Progress(step=1, total=4)
    assert p.fraction == 0.25 and mg.Progress(step=1, total=0).fraction == 0.0
    assert mg.Progress(step=9, total=4).fraction == 1.0
    with pytest.raises(AttributeError):
        p.step = 2  # type: ignore[misc]
    assert mg.Cancelled().reason == "cancelled"


def test_submit_needs_a_running_loop() -> None:
    client = mg.Client()
    with pytest.raises(RuntimeError):
        client.submit(mg.ImageRequest(prompt="x"), model="test:fake")
