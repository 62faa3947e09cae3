"""Client-side limits: how many calls per period, and how many at once.

Two small asyncio primitives with no knowledge of Replicate, meant to move into mediagen's shared
policy layer later (issue 6) unchanged:

- `RateLimiter`: at most `limit` acquisitions in any sliding window of `period_s` seconds (Replicate
  allows 600 prediction creates a minute, in bursts), and a `pause()` that holds everyone back when
  the server says it is throttling us, so one 429 slows all callers instead of each finding out alone.
- `ConcurrencyLimiter`: a semaphore that also counts who is running and who is waiting.

Both take an optional `timeout` on `acquire`, and never leak a slot when it runs out just as the
slot was granted. Like every asyncio primitive, they belong to the event loop that first uses them.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

__all__ = ["RateLimiter", "ConcurrencyLimiter"]


class RateLimiter:
    """At most `limit` acquisitions in any window of `period_s` seconds; first come, first served.

    A sliding window rather than a token bucket: it is exactly the rule the provider states ("600 a
    minute") and it lets a burst through at once, as the provider does.

    Args:
        limit: Acquisitions allowed per window; None turns the limiter off (pauses still apply).
        period_s: The window, in seconds.
        clock: Monotonic clock (tests pass a fake one).
        sleep: Coroutine used to wait (tests pass a fake one).

    Examples:
        >>> limiter = RateLimiter(600, period_s=60.0)
        >>> waited = await limiter.acquire(timeout=5.0)  # doctest: +SKIP
    """

    def __init__(
        self,
        limit: int | None,
        period_s: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if limit is not None and limit < 1:
            raise ValueError("limit must be at least 1 (or None for no limit)")
        if period_s <= 0:
            raise ValueError("period_s must be positive")
        self.limit = limit
        self.period_s = period_s
        self._clock = clock
        self._sleep = sleep
        self._stamps: collections.deque[float] = collections.deque()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        self.waiting = 0
        """Callers waiting to acquire now."""

    def pause(self, seconds: float) -> None:
        """Hold every acquisition back for `seconds` from now (a server said it is throttling us)."""
        self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))

    def used(self) -> int:
        """Acquisitions in the current window."""
        self._forget_old(self._clock())
        return len(self._stamps)

    async def acquire(self, timeout: float | None = None) -> float:
        """Wait for a slot in the window and take it.

        Args:
            timeout: Most seconds to wait; None waits as long as it takes.

        Returns:
            Seconds spent waiting.

        Raises:
            TimeoutError: No slot within `timeout` (found out early when the wait is known to be
                longer, rather than after sleeping it).
        """
        start = self._clock()
        self.waiting += 1
        try:
            # One waiter at a time checks the window: the lock's FIFO order is the queue's order.
            if not await _acquire_within(self._lock.acquire, self._lock.release, timeout):
                raise TimeoutError(f"no rate-limit slot within {timeout:g} s")
            try:
                while (wait := self._wait_needed()) > 0:
                    if timeout is not None and self._clock() + wait > start + timeout:
                        raise TimeoutError(f"the next rate-limit slot is {wait:.1f} s away, past the timeout")
                    await self._sleep(wait)
                self._stamps.append(self._clock())
            finally:
                self._lock.release()
        finally:
            self.waiting -= 1
        return self._clock() - start

    def _wait_needed(self) -> float:
        now = self._clock()
        wait = self._paused_until - now
        if self.limit is not None:
            self._forget_old(now)
            if len(self._stamps) >= self.limit:
                wait = max(wait, self._stamps[0] + self.period_s - now)
        return wait

    def _forget_old(self, now: float) -> None:
        while self._stamps and now - self._stamps[0] >= self.period_s:
            self._stamps.popleft()

    def __repr__(self) -> str:
        limit = "off" if self.limit is None else f"{self.limit}/{self.period_s:g}s"
        return f"RateLimiter({limit}, used={self.used()}, waiting={self.waiting})"


class ConcurrencyLimiter:
    """At most `limit` holders at once (None: no limit), with counts of holders and waiters.

    Use it as `async with limiter: ...`, or `acquire(timeout)` / `release()`.
    """

    def __init__(self, limit: int | None) -> None:
        if limit is not None and limit < 1:
            raise ValueError("limit must be at least 1 (or None for no limit)")
        self.limit = limit
        self._semaphore = asyncio.Semaphore(limit) if limit is not None else None
        self.active = 0
        """Holders now."""
        self.waiting = 0
        """Callers waiting for a place now."""

    async def acquire(self, timeout: float | None = None) -> bool:
        """Take a place, waiting at most `timeout` seconds.

        Returns:
            True when a place was taken; False when the timeout ran out first.
        """
        if self._semaphore is not None:
            self.waiting += 1
            try:
                if not await _acquire_within(self._semaphore.acquire, self._semaphore.release, timeout):
                    return False
            finally:
                self.waiting -= 1
        self.active += 1
        return True

    def release(self) -> None:
        """Give a place back."""
        self.active -= 1
        if self._semaphore is not None:
            self._semaphore.release()

    async def __aenter__(self) -> ConcurrencyLimiter:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"ConcurrencyLimiter(limit={self.limit}, active={self.active}, waiting={self.waiting})"


async def _acquire_within(
    acquire: Callable[[], Awaitable[Any]], release: Callable[[], None], timeout: float | None
) -> bool:
    """Run `acquire` for at most `timeout` seconds; True when it got what it waited for.

    `asyncio.wait_for` can report a timeout for an acquisition that just succeeded (before Python
    3.12), which would leak the slot forever; waiting on a task and inspecting it cannot.
    """
    if timeout is None:
        await acquire()
        return True
    task = asyncio.ensure_future(acquire())
    try:
        done, _ = await asyncio.wait({task}, timeout=max(0.0, timeout))
    except BaseException:
        # Cancelled while waiting: stop the acquisition, and give back one that landed anyway.
        task.cancel()
        await asyncio.wait({task})
        if not task.cancelled() and task.exception() is None:
            release()
        raise
    if task in done:
        task.result()
        return True
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled() and task.exception() is None:
        release()
    return False
