"""The blocking twin: plain scripts, notebooks (a loop already running), events as a generator, cancel, errors."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import threading
import time
from pathlib import Path

import PIL.Image
import pytest

import mediagen as mg
from mediagen.testing import FakeBackend


def test_plain_function(tmp_path: Path) -> None:
    with mg.SyncClient() as client:
        res = client.image("a fox", model="test:fake", seed=3, width=24, height=16)
        path = res.artifacts[0].save(tmp_path / "fox.png")
        vid = client.video("waves", model="test:fake", frames=3)
        snd = client.audio("piano", model="test:fake", duration_s=0.1)
        obj = client.mesh("chair", model="test:fake", format="ply")
        gen = client.generate(mg.ImageRequest(prompt="x", n=2), model="test:fake")
        assert client.config.source is not None
        assert isinstance(client.client, mg.Client)
    with PIL.Image.open(path) as img:
        assert img.size == (24, 16)
    assert res.seeds == [3]
    assert vid.videos[0].num_frames == 3
    assert snd.audios[0].duration_s == pytest.approx(0.1)
    assert obj.meshes[0].media_type == "model/ply"
    assert len(gen.artifacts) == 2


def test_notebook_style_inside_a_running_loop() -> None:
    # What a Jupyter cell does: the kernel's loop is running, and the cell calls blocking code.
    async def main() -> tuple[mg.Result, list[str], int]:
        loop_thread = threading.get_ident()
        with mg.SyncClient() as client:
            res = client.image("a fox", model="test:fake", seed=1)
            job = client.submit(mg.ImageRequest(prompt="x"), model="test:fake")
            names = [type(e).__name__ for e in job.events()]
            return res, names, loop_thread

    res, names, _ = asyncio.run(main())
    assert res.seeds == [1]
    assert names[0] == "Queued" and names[-1] == "Completed"


async def test_inside_a_running_pytest_asyncio_loop() -> None:
    with mg.SyncClient() as client:
        assert client.image("x", model="test:fake").artifacts


def test_sync_job_events_is_a_plain_generator() -> None:
    with mg.SyncClient(backends={"x": FakeBackend(steps=3, step_delay_s=0.01)}) as client:
        job = client.submit(mg.ImageRequest(prompt="x"), model="x:m")
        assert job.status in (mg.JobStatus.QUEUED, mg.JobStatus.RUNNING)
        events = job.events()
        assert inspect.isgenerator(events)
        names = [type(e).__name__ for e in events]
        assert names == ["Queued", "Started", "Progress", "Progress", "Progress", "Completed"]
        assert job.done() and job.status == mg.JobStatus.SUCCEEDED
        assert [type(e).__name__ for e in job.events()] == names  # again, from the start
        assert job.result().artifacts
        assert job.id in repr(job) and "SyncJob" in repr(job)


def test_sync_cancel() -> None:
    slow = FakeBackend(steps=200, step_delay_s=0.01)
    with mg.SyncClient(backends={"x": slow}) as client:
        job = client.submit(mg.ImageRequest(prompt="x"), model="x:m")
        for event in job.events():
            if isinstance(event, mg.Progress):
                break
        job.cancel()
        assert job.status == mg.JobStatus.CANCELLED
        assert isinstance(list(job.events())[-1], mg.Cancelled)
        with pytest.raises(asyncio.CancelledError):
            job.result()
    assert slow.cancelled == 1


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda c: c.image("x", model="test:fake", width=13), mg.InvalidRequestError),
        (lambda c: c.image("x", model="nocolon"), mg.ModelNotFoundError),
        (lambda c: c.image("x", model="tset:fake"), mg.ModelNotFoundError),
        (lambda c: c.image("x", model="boom:m"), mg.GenerationFailedError),
        (lambda c: c.image("x", model="slow:m", timeout=0.05), mg.DeadlineExceededError),
        (lambda c: c.image("x", model="test:fake", options={"a": 1}, strict=True), mg.UnsupportedRequestError),
        (lambda c: c.submit(mg.ImageRequest(prompt="x"), model="boom:m").result(), mg.GenerationFailedError),
    ],
)
def test_errors_propagate_with_their_types(call: object, error: type[Exception]) -> None:
    backends = {
        "boom": FakeBackend(error=mg.GenerationFailedError("the model failed")),
        "slow": FakeBackend(steps=100, step_delay_s=0.01),
    }
    with mg.SyncClient(backends=backends) as client:
        with pytest.raises(error):
            call(client)  # type: ignore[operator]


def test_result_timeout_waits_without_cancelling() -> None:
    with mg.SyncClient(backends={"x": FakeBackend(steps=5, step_delay_s=0.02)}) as client:
        job = client.submit(mg.ImageRequest(prompt="x"), model="x:m")
        with pytest.raises(TimeoutError):
            job.result(timeout=0.01)
        assert job.result().artifacts


def test_on_event_runs_and_reentry_is_refused() -> None:
    seen: list[str] = []
    errors: list[BaseException] = []
    with mg.SyncClient() as client:

        def on_event(event: mg.Event) -> None:
            seen.append(type(event).__name__)
            if isinstance(event, mg.Completed):
                try:
                    client.image("again", model="test:fake")  # from the client's own loop thread
                except RuntimeError as exc:
                    errors.append(exc)

        client.generate(mg.ImageRequest(prompt="x"), model="test:fake", on_event=on_event)
    assert seen[-1] == "Completed"
    assert errors and "its own event loop" in str(errors[0])


def test_clients_share_one_loop_and_close_independently() -> None:
    a = mg.SyncClient()
    b = mg.SyncClient()
    a.close()
    assert b.image("x", model="test:fake").artifacts
    with pytest.raises(RuntimeError, match="closed"):
        a.image("x", model="test:fake")
    b.close()
    b.close()


def test_sync_client_from_several_threads() -> None:
    results: list[int] = []
    with mg.SyncClient() as client:

        def work(seed: int) -> None:
            results.append(client.image("x", model="test:fake", seed=seed).seeds[0])

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(results) == [0, 1, 2, 3]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_gets_its_own_loop() -> None:
    with mg.SyncClient() as client:
        assert client.image("x", model="test:fake").artifacts  # the parent's loop thread is running
        pid = os.fork()
        if pid == 0:  # the child: the parent's loop thread did not survive the fork
            code = 3
            try:
                code = 0 if client.image("x", model="test:fake", seed=1).seeds == [1] else 1
            finally:
                os._exit(code)
        deadline = time.monotonic() + 30
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        if done[0] == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        assert os.waitstatus_to_exitcode(done[1]) == 0
        assert client.image("x", model="test:fake").artifacts  # the parent carries on
