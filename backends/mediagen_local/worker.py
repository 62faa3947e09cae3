"""Device workers: one thread per device runs the calls on that device, one at a time.

A GPU runs one pipeline call at a time well; two at once only fight over memory and compute. So every
local backend in the process sends its device work to the same `DeviceWorker`, a plain thread with a
FIFO of jobs. Awaiting a call never blocks the event loop: the coroutine waits on an asyncio future
that the worker settles through `loop.call_soon_threadsafe`. A call cancelled while it still waits
in the queue is skipped; one that is already running finishes (the batcher interrupts pipelines
cooperatively, at the next denoising step).

Examples:
    >>> worker = get_worker("cpu")
    >>> await worker.call(sum, [1, 2, 3])  # doctest: +SKIP
    6
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["DeviceWorker", "get_worker", "settle_future"]

logger = logging.getLogger("mediagen")

T = TypeVar("T")


def settle_future(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], value: Any = None, error: BaseException | None = None
) -> None:
    """Settle an asyncio future from any thread, on its own loop.

    A future already done (cancelled by its waiter) is left alone, and a loop that has closed
    meanwhile (its caller went away) is ignored: nobody is left to tell.

    Args:
        loop: The loop the future belongs to.
        future: The future to settle.
        value: The result, when `error` is None.
        error: The exception to raise in the waiter; `CancelledError` cancels the future.
    """

    def settle() -> None:
        if future.done():
            return
        if isinstance(error, asyncio.CancelledError):
            future.cancel()
        elif error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop is closed
        pass


class _Job:
    """One call in a worker's queue."""

    __slots__ = ("abandoned", "fn", "future", "loop")

    def __init__(
        self,
        fn: Callable[[], Any],
        loop: asyncio.AbstractEventLoop | None = None,
        future: asyncio.Future[Any] | None = None,
    ) -> None:
        self.fn = fn
        self.loop = loop
        self.future = future
        self.abandoned = threading.Event()

    def run(self) -> None:
        if self.abandoned.is_set():
            return
        try:
            value = self.fn()
        except BaseException as exc:  # delivered to the waiter, whatever it is
            if self.loop is None or self.future is None:
                logger.exception("a job on a device worker failed")
                return
            settle_future(self.loop, self.future, error=exc)
        else:
            if self.loop is not None and self.future is not None:
                settle_future(self.loop, self.future, value)


class DeviceWorker:
    """A thread that owns one device and runs jobs on it one at a time, in order.

    Get one with `get_worker(device)` rather than constructing it: the point is that there is
    only one per device in the process.

    Args:
        device: The torch device string the worker owns (`"cuda:0"`, `"cpu"` ...).
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._busy_since: float | None = None
        self.jobs_done = 0
        """How many jobs the worker has run (shown by `describe`)."""

    def submit(self, fn: Callable[[], Any]) -> None:
        """Queue `fn` to run on the worker thread; nobody waits for it (errors are logged).

        Callable from any thread. The batcher uses it to schedule its flushes.
        """
        self._put(_Job(fn))

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the worker thread and return what it returns.

        Cancelling the awaiting task before the worker reaches the job removes it from the queue;
        once running, the job finishes and its result is dropped.

        Raises:
            BaseException: Whatever `fn` raised.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        job = _Job(lambda: fn(*args), loop, future)
        future.add_done_callback(lambda f: job.abandoned.set() if f.cancelled() else None)
        self._put(job)
        return await future

    def on_worker_thread(self) -> bool:
        """True when called from this worker's own thread."""
        return self._thread is not None and threading.current_thread() is self._thread

    def describe(self) -> dict[str, Any]:
        """What `mediagen backends` shows about the worker."""
        busy = self._busy_since
        return {
            "device": self.device,
            "busy_s": round(time.monotonic() - busy, 3) if busy is not None else None,
            "queued": self._queue.qsize(),
            "jobs_done": self.jobs_done,
        }

    def stop(self, timeout: float | None = None) -> None:
        """Finish the queued jobs, then end the thread (the next `submit` starts a new one)."""
        with self._lock:
            thread = self._thread
            if thread is None:
                return
            self._queue.put(None)
            self._thread = None
        if thread is not threading.current_thread():
            thread.join(timeout)

    def _put(self, job: _Job) -> None:
        with self._lock:
            if self._thread is None:
                # Daemon: a forgotten client must not keep the interpreter from exiting.
                self._thread = threading.Thread(target=self._serve, name=f"mediagen-{self.device}", daemon=True)
                self._thread.start()
            self._queue.put(job)

    def _serve(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._busy_since = time.monotonic()
            try:
                job.run()
            finally:
                self._busy_since = None
                self.jobs_done += 1


_workers: dict[str, DeviceWorker] = {}
_workers_lock = threading.Lock()


def get_worker(device: str) -> DeviceWorker:
    """The process's worker for `device`, created on first use.

    Args:
        device: A torch device string, as `pick_device` returns it.
    """
    with _workers_lock:
        worker = _workers.get(device)
        if worker is None:
            worker = _workers[device] = DeviceWorker(device)
        return worker


def _forget_workers_after_fork() -> None:
    # A forked child has none of the parent's threads; its workers must start afresh.
    global _workers_lock
    _workers.clear()
    _workers_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_workers_after_fork)
