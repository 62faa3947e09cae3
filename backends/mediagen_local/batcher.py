"""Micro-batching: concurrent compatible requests run as one call on the device.

A diffusion pipeline makes 8 images at once in much less than 8 times the time of one (on a GPU the
first image is launch-bound; on a CPU the per-call Python overhead is shared). So requests that could
share a call (the backend says which through a `key`: same model, task, size, steps ...) and arrive
close together are collected and handed to the backend's `run` together, up to `max_batch` outputs
(a request with `n` outputs counts `n`).

How a batch forms: the first request of a key schedules a *flush* on the device worker. When the
worker reaches it (at once when idle, later when busy), the flush waits while requests keep coming:
until none has arrived for `window_s`, the batch is full, or `max_wait_s` has passed since the first
one. It then takes the requests still waiting, in order, up to `max_batch` outputs; the rest wait for
the next flush. A burst of concurrent requests (which an event loop submits microseconds apart) thus
goes out as one call, while a lone request waits only `window_s`; and a busy device batches
everything that arrived while it was busy, which is when batching helps most.

Each request keeps its own identity inside the batch: the backend seeds each output from its own
generator, so a request's output does not depend on its batch-mates. Cancelling a request removes it
from its group if its batch has not started; if it has, its outputs are dropped, and a batch whose
requests are all cancelled is told to stop (`Batch.all_cancelled`, which the backend polls at each
step). A cancelled request's waiter then waits for that interrupted batch to end, so that a
cancelled job has really left the device when its cancellation returns.

Examples:
    >>> batcher = MicroBatcher(get_worker("cpu"), run=lambda batch: [p * 2 for p in batch.payloads])  # doctest: +SKIP
    >>> done = await batcher.submit(key="double", payload=21)  # doctest: +SKIP
    >>> done.value  # doctest: +SKIP
    42
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .devices import is_out_of_memory
from .worker import DeviceWorker, settle_future

__all__ = ["Batch", "BatchItem", "Done", "MicroBatcher", "DEFAULT_MAX_BATCH", "DEFAULT_BATCH_WINDOW_S"]

logger = logging.getLogger("mediagen")

P = TypeVar("P")
R = TypeVar("R")

DEFAULT_MAX_BATCH = 8
"""Outputs per call when the backend's settings do not say."""

DEFAULT_BATCH_WINDOW_S = 0.001
"""How long an idle device waits for another request after the latest one arrived (1 ms; a burst is
collected for up to 8 of these). An event loop submits a burst of concurrent requests microseconds
apart, so this catches it whole, while a lone request pays only this much."""


class BatchItem(Generic[P]):
    """One request's place in a batch: its payload, how many outputs it adds, and how to reach it.

    Made by `MicroBatcher.submit`; the backend's `run` reads `payload` and `size`.
    """

    def __init__(
        self,
        payload: P,
        size: int,
        loop: asyncio.AbstractEventLoop,
        cancelled: threading.Event | None,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        self.payload = payload
        self.size = size
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()
        """Done when the batch holding this item has ended (however it ended)."""
        self.arrived = time.monotonic()
        self.started: float | None = None
        self.batch: Batch[P] | None = None
        self._progress = progress
        self._external = cancelled
        self._cancel = threading.Event()

    @property
    def cancelled(self) -> bool:
        """Whether the request was cancelled (its task, or its job through the run context)."""
        return self._cancel.is_set() or (self._external is not None and self._external.is_set())

    def cancel(self) -> None:
        """Mark the request cancelled; safe from any thread."""
        self._cancel.set()

    def report(self, step: int, total: int) -> None:
        """Pass progress to the request's own event loop."""
        if self._progress is not None and not self.cancelled:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody listens any more
                self.loop.call_soon_threadsafe(self._progress, step, total)


class Batch(Generic[P]):
    """The requests that run together in one call, in the order they arrived."""

    def __init__(self, items: list[BatchItem[P]]) -> None:
        self.items = items

    @property
    def payloads(self) -> list[P]:
        """Each request's payload, in order."""
        return [item.payload for item in self.items]

    @property
    def size(self) -> int:
        """Outputs the call makes in all."""
        return sum(item.size for item in self.items)

    def all_cancelled(self) -> bool:
        """True when nobody wants this batch's outputs any more: the backend should stop the call."""
        return all(item.cancelled for item in self.items)

    def progress(self, step: int, total: int) -> None:
        """Report `step` of `total` to every request still waiting for this batch."""
        for item in self.items:
            item.report(step, total)


@dataclass(frozen=True)
class Done(Generic[R]):
    """What `MicroBatcher.submit` returns: the request's share of the call, and what the call cost."""

    value: R
    """What the backend's `run` returned for this request."""
    queue_s: float
    """From arrival until its batch started."""
    run_s: float
    """How long the batch's call took (shared by all its requests)."""
    batch_requests: int
    """Requests in the batch."""
    batch_outputs: int
    """Outputs the batch made in all."""


class MicroBatcher(Generic[P, R]):
    """Collects compatible requests and runs them together on a device worker.

    Args:
        worker: The device worker the calls run on.
        run: Runs one batch on the worker thread and returns one value per item, in order. It
            should poll `batch.all_cancelled()` between steps and stop early when it is true.
        max_batch: Most outputs per call.
        window_s: How long an idle device waits for another request after the latest one arrived.
        max_wait_s: The longest the first request of a batch waits for company (default: 8 windows).
    """

    def __init__(
        self,
        worker: DeviceWorker,
        run: Callable[[Batch[P]], Sequence[R]],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        window_s: float = DEFAULT_BATCH_WINDOW_S,
        max_wait_s: float | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if window_s < 0:
            raise ValueError(f"window_s must not be negative, got {window_s}")
        self.worker = worker
        self.max_batch = max_batch
        self.window_s = window_s
        self.max_wait_s = 8 * window_s if max_wait_s is None else max_wait_s
        self._run = run
        self._cond = threading.Condition()
        # key -> requests waiting; a key is present exactly while a flush for it is scheduled.
        self._groups: dict[Hashable, list[BatchItem[P]]] = {}
        self.batches_run = 0
        """Calls made so far (for `describe`)."""
        self.outputs_made = 0
        """Outputs those calls made."""

    async def submit(
        self,
        key: Hashable,
        payload: P,
        *,
        size: int = 1,
        cancelled: threading.Event | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Done[R]:
        """Queue one request and wait for its share of a batched call.

        Args:
            key: Requests with equal keys may share a call.
            payload: What the backend's `run` needs for this request.
            size: Outputs the request adds to the batch (its `n`).
            cancelled: An event that, once set, cancels the request (the run context's).
            progress: Called on this loop with `(step, total)` while the batch runs.

        Returns:
            The request's value, with timings.

        Raises:
            asyncio.CancelledError: The request was cancelled.
            BaseException: Whatever `run` raised for the batch.
        """
        item: BatchItem[P] = BatchItem(payload, size, asyncio.get_running_loop(), cancelled, progress)
        with self._cond:
            group = self._groups.get(key)
            schedule = group is None
            if group is None:
                self._groups[key] = [item]
            else:
                group.append(item)
            self._cond.notify_all()
        if schedule:
            self.worker.submit(lambda: self._flush(key))
        try:
            return await item.future  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            item.cancel()
            with self._cond:
                waiting = self._groups.get(key)
                if waiting is not None and item in waiting:
                    waiting.remove(item)
            batch = item.batch
            if batch is not None and batch.all_cancelled() and not self.worker.on_worker_thread():
                # The batch is being interrupted; wait (at most a step and a decode) until it has
                # stopped, so that the device is free again when this cancellation returns.
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(item.finished)
            raise

    def pending(self) -> int:
        """Requests waiting for a batch."""
        with self._cond:
            return sum(len(group) for group in self._groups.values())

    def describe(self) -> dict[str, Any]:
        """What `mediagen backends` shows about batching."""
        return {
            "max_batch": self.max_batch,
            "window_s": self.window_s,
            "max_wait_s": self.max_wait_s,
            "pending": self.pending(),
            "batches_run": self.batches_run,
            "outputs_made": self.outputs_made,
        }

    # -- on the worker thread -------------------------------------------------------------------

    def _flush(self, key: Hashable) -> None:
        with self._cond:
            group = self._groups[key]
            while group:
                live = [item for item in group if not item.cancelled]
                if not live or sum(item.size for item in live) >= self.max_batch:
                    break
                # Wait while requests keep coming, but not past the first one's limit.
                until = min(live[-1].arrived + self.window_s, live[0].arrived + self.max_wait_s)
                remaining = until - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            taken: list[BatchItem[P]] = []
            rest: list[BatchItem[P]] = []
            total = 0
            for item in group:
                if item.cancelled:
                    self._settle(item, error=asyncio.CancelledError())
                elif taken and total + item.size > self.max_batch:
                    rest.append(item)
                else:
                    taken.append(item)
                    total += item.size
            if rest:
                # Keep the rest in order behind whatever else is queued on the device: fair to other keys.
                self._groups[key] = rest
                self.worker.submit(lambda: self._flush(key))
            else:
                del self._groups[key]
        if taken:
            self._run_batch(Batch(taken))

    def _run_batch(self, batch: Batch[P]) -> None:
        started = time.monotonic()
        for item in batch.items:
            item.started = started
            item.batch = batch
        try:
            values = list(self._run(batch))
            if len(values) != len(batch.items):
                raise RuntimeError(f"run returned {len(values)} values for a batch of {len(batch.items)} requests")
        except BaseException as exc:
            if len(batch.items) > 1 and is_out_of_memory(exc) and not batch.all_cancelled():
                self._split(batch)
                return
            for item in batch.items:
                self._settle(item, error=exc)
            return
        finished = time.monotonic()
        self.batches_run += 1
        self.outputs_made += batch.size
        for item, value in zip(batch.items, values, strict=True):
            done = Done(
                value=value,
                queue_s=started - item.arrived,
                run_s=finished - started,
                batch_requests=len(batch.items),
                batch_outputs=batch.size,
            )
            self._settle(item, value=done)

    def _split(self, batch: Batch[P]) -> None:
        # Outputs do not depend on batch-mates, so running the halves one after the other gives the
        # same pixels; the smaller cap keeps the next batches from running out of memory again.
        half = max(1, len(batch.items) // 2)
        self.max_batch = max(1, min(self.max_batch, sum(item.size for item in batch.items[:half])))
        logger.warning(
            "out of memory with %d outputs in one call on %s; splitting it, and making at most %d per call from now on",
            batch.size,
            self.worker.device,
            self.max_batch,
        )
        self._run_batch(Batch(batch.items[:half]))
        self._run_batch(Batch(batch.items[half:]))

    def _settle(self, item: BatchItem[P], value: Any = None, error: BaseException | None = None) -> None:
        if item.cancelled:
            error = asyncio.CancelledError()
        settle_future(item.loop, item.future, value, error)
        settle_future(item.loop, item.finished, None)
