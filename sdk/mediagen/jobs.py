"""Jobs: a generation running in the background, with events, a result and a cancel button."""

from __future__ import annotations

import asyncio
import enum
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .events import TERMINAL_EVENTS, Cancelled, Completed, Event, Failed, Progress, Queued, Started

if TYPE_CHECKING:
    from .requests import Request
    from .results import Result

__all__ = ["Job", "JobStatus"]


class JobStatus(str, enum.Enum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        """True once the job has ended, one way or another."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class Job:
    """A submitted request. Made by `Client.submit`, which returns at once.

    Any number of consumers may iterate `events()`, each from the start: a consumer that arrives
    late still sees every event, ending with the terminal one.

    Examples:
        >>> job = client.submit(mg.VideoRequest(prompt="waves"), model="test:fake")  # doctest: +SKIP
        >>> async for event in job.events():  # doctest: +SKIP
        ...     if isinstance(event, mg.Progress):
        ...         print(f"{event.fraction:.0%}")
        >>> result = await job.result()  # doctest: +SKIP
    """

    def __init__(
        self,
        runner: Callable[[Job], Awaitable[Result]],
        *,
        request: Request,
        model: str | Sequence[str] | None,
        cancelled: threading.Event | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.request = request
        self.model = model
        self._cancelled = cancelled
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._events: list[Event] = []
        self._wakeup = asyncio.Event()
        self._status = JobStatus.QUEUED
        self._result: Result | None = None
        self._error: BaseException | None = None
        self._cancel_reason = "cancelled"
        self._record(Queued())
        self._task = asyncio.ensure_future(self._main(runner))
        self._task.add_done_callback(self._on_task_done)

    # -- state ----------------------------------------------------------------------------------

    @property
    def status(self) -> JobStatus:
        """The job's status now."""
        return self._status

    def done(self) -> bool:
        """True once the job has ended."""
        return self._status.done

    @property
    def progress(self) -> Progress | None:
        """The last progress event, if any."""
        for event in reversed(self._events):
            if isinstance(event, Progress):
                return event
        return None

    def __repr__(self) -> str:
        return f"<mediagen.Job {self.id} {self.request.task} {self._status.value}>"

    # -- events ---------------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Record an event; callable from any thread (local backends emit from device workers)."""
        if threading.get_ident() == self._loop_thread:
            self._record(event)
        else:
            self._loop.call_soon_threadsafe(self._record, event)

    def _record(self, event: Event) -> None:
        if self._status.done:
            return  # nothing follows the terminal event
        if not event.job_id:
            event = replace(event, job_id=self.id)
        if isinstance(event, Started):
            self._status = JobStatus.RUNNING
        self._events.append(event)
        self._wakeup.set()
        self._wakeup = asyncio.Event()

    async def events(self) -> AsyncIterator[Event]:
        """Every event of the job from the start, ending with `Completed`, `Failed` or `Cancelled`."""
        index = 0
        while True:
            while index < len(self._events):
                event = self._events[index]
                index += 1
                yield event
                if isinstance(event, TERMINAL_EVENTS):
                    return
            await self._wakeup.wait()

    # -- outcome --------------------------------------------------------------------------------

    async def _main(self, runner: Callable[[Job], Awaitable[Result]]) -> None:
        try:
            result = await runner(self)
        except asyncio.CancelledError:
            self._finish(JobStatus.CANCELLED, Cancelled(reason=self._cancel_reason))
            raise
        except BaseException as exc:  # the error is the job's outcome, re-raised by result()
            self._error = exc
            self._finish(JobStatus.FAILED, Failed(error=exc))
            if not isinstance(exc, Exception):
                raise
        else:
            self._result = result
            self._finish(JobStatus.SUCCEEDED, Completed(result=result))

    def _on_task_done(self, task: asyncio.Future[None]) -> None:
        # A task cancelled before its first step never enters `_main`: end the job here instead.
        if not self._status.done and task.cancelled():
            self._finish(JobStatus.CANCELLED, Cancelled(reason=self._cancel_reason))

    def _finish(self, status: JobStatus, event: Event) -> None:
        self._record(event)
        self._status = status

    async def result(self) -> Result:
        """Wait for the job and return its result.

        Cancelling the wait does not cancel the job; use `cancel()` for that.

        Raises:
            MediagenError: The job failed (the error it failed with).
            asyncio.CancelledError: The job was cancelled.
        """
        await asyncio.wait([self._task])
        if self._status is JobStatus.CANCELLED:
            raise asyncio.CancelledError(f"job {self.id} was cancelled")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def add_done_callback(self, callback: Callable[[Job], object]) -> None:
        """Call `callback(job)` once the job has ended, however it ended (at once if it has)."""
        self._task.add_done_callback(lambda _: callback(self))

    def __await__(self) -> Generator[Any, None, Result]:
        return self.result().__await__()

    async def cancel(self, reason: str = "cancelled") -> None:
        """Cancel the job and wait until its backend has stopped (a remote prediction is cancelled).

        Cancelling a job that has already ended does nothing.
        """
        if self._task.done():
            return
        self.request_cancel(reason)
        await asyncio.wait([self._task])

    def request_cancel(self, reason: str = "cancelled") -> None:
        """Ask the job to stop without waiting for it (`cancel` waits); does nothing once it has ended.

        Worker threads are told at once (the cancel flag), coroutines at their next step.
        """
        if self._task.done():
            return
        if self._cancelled is not None:
            self._cancelled.set()
        self._cancel_reason = reason
        self._task.cancel(reason)
