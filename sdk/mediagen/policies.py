"""Policies in one place: retries, rate limits, concurrency limits and attempt deadlines.

Each provider has one `Policy`, read from its `[providers.<name>.policy]` table in
`mediagen.toml` (or `Client(providers={"<name>": {"policy": {...}}})`), and a call may override
the parts that make sense per call (`retry`, `attempt_timeout`, `attempt_share`, `cooldown_s`)::

    [providers.replicate.policy]
    max_concurrency = 8            # backend calls in flight at once, across all jobs
    requests_per_minute = 600      # token bucket, refilled continuously
    burst = 10                     # tokens the bucket holds (default: one second's worth)
    attempt_timeout = 120          # seconds one attempt may take before the chain moves on
    attempt_share = 0.5            # or: this share of the job's remaining time (not the last member)
    cooldown_s = 30                # skip this provider's models this long after an outage

    [providers.replicate.policy.retry]
    attempts = 4                   # tries in all, the first included
    backoff_base_s = 0.5           # first wait; doubles each time ...
    backoff_max_s = 20             # ... up to this
    jitter = 0.5                   # each wait is cut by up to this share, at random
    max_retry_after_s = 120        # a longer Retry-After is not waited out: the error is raised

The client enforces `max_concurrency` and `requests_per_minute` around every `backend.run`, and the
attempt deadlines and cooldowns in fallback chains. The `retry` policy is applied exactly once: by
the client around whole runs, or, for a backend that sets `handles_retries = True`, by the backend
itself around its own transport calls (it reads `ctx.policy.retry`), since only it knows which
calls are safe to repeat without paying twice. The classes are plain building blocks, usable on
their own; the Replicate backend builds its own limits from them (a sliding-window `RateLimiter` for
prediction creates, a `ConcurrencyLimiter` for predictions in flight) and its retry loops on
`RetryPolicy`::

    from mediagen.policies import RetryPolicy, RateLimiter

    retry = RetryPolicy(attempts=3)
    limiter = RateLimiter(per_minute=600)

    async def create():
        async with limiter:
            return await http.post(...)

    prediction = await retry.run(create, is_retryable=lambda exc: isinstance(exc, RateLimitedError))

`parse_retry_after(value)` reads a `Retry-After` header (delta seconds or a date) for every hosted
backend, so that all of them wait out a throttled answer alike.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import email.utils
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from .errors import DeadlineExceededError, EndpointUnreachableError, InvalidRequestError, MediagenError

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "FAST_FAILOVER_TRIES",
    "FAST_FAILOVER_WAIT_S",
    "fast_failover",
    "RetryPolicy",
    "RateLimiter",
    "ConcurrencyLimiter",
    "Policy",
    "is_retryable_error",
    "parse_retry_after",
]

T = TypeVar("T")

FAST_FAILOVER_TRIES = 2
"""Tries in all (the first included) of an unreachable endpoint while a fallback waits behind it."""
FAST_FAILOVER_WAIT_S = 0.25
"""The longest wait before that one quick retry."""

_fast_failover: contextvars.ContextVar[bool] = contextvars.ContextVar("mediagen_fast_failover", default=False)


@contextlib.contextmanager
def fast_failover(enabled: bool = True) -> Iterator[None]:
    """Inside this block, an unreachable endpoint gives way fast: one quick retry, then its error.

    A fallback chain enters it around every member but the last: when a provider's endpoint refuses
    connections or its host name does not resolve, the next member is the better bet, and the
    provider's full retry budget (tens of seconds of backoff) would only hold the job up. Every
    retry loop that decides through `RetryPolicy.next_delay` (the client's and a hosted backend's
    own, capability look-ups included) follows it, in this task and in tasks started from it.
    Outside the block, unreachable endpoints get the policy's full budget.

    Args:
        enabled: False leaves the rules as they are (so callers need no branch).
    """
    token = _fast_failover.set(enabled)
    try:
        yield
    finally:
        _fast_failover.reset(token)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Read a `Retry-After` header: delta seconds, or an HTTP date (ISO 8601 accepted too).

    Args:
        value: The header value, or None when there was none.
        now: The current time (`time.time()`), for tests.

    Returns:
        Seconds to wait (0 for a date in the past), or None when absent or unreadable (a negative
        or infinite number included).

    Examples:
        >>> parse_retry_after("2")
        2.0
        >>> parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0)
        10.0
        >>> parse_retry_after("soon") is None
        True
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    when: datetime | None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def is_retryable_error(error: BaseException) -> bool:
    """The default test of `RetryPolicy.run`: a `MediagenError` that says it is `retryable`.

    A deadline that passed is not retried: the time it would need is already gone.
    """
    return isinstance(error, MediagenError) and error.retryable and not isinstance(error, DeadlineExceededError)


class RetryPolicy(BaseModel):
    """How often, and how patiently, to try again after a failure that may pass.

    Waits grow exponentially from `backoff_base_s` to `backoff_max_s`, each cut by up to `jitter`
    at random (so many clients that failed together do not retry together). When the error carries
    `retry_after` (a provider's Retry-After), the wait is at least that long.

    Examples:
        >>> policy = RetryPolicy(attempts=3, backoff_base_s=0.1, jitter=0)
        >>> [policy.delay(n) for n in (1, 2)]
        [0.1, 0.2]
        >>> result = await policy.run(lambda: backend_call(), is_retryable=is_retryable_error)  # doctest: +SKIP
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(3, ge=1, le=100)
    """Tries in all, the first included (1 never retries)."""
    backoff_base_s: float = Field(0.5, ge=0.0)
    """Wait after the first failure; it doubles after each further failure."""
    backoff_max_s: float = Field(20.0, ge=0.0)
    """Longest wait between two tries (before a provider's Retry-After, which may be longer)."""
    jitter: float = Field(0.5, ge=0.0, le=1.0)
    """Each wait is shortened by a random share up to this (0: exact waits; 1: "full jitter")."""
    max_retry_after_s: float = Field(120.0, ge=0.0)
    """A Retry-After longer than this is not waited out: the error is raised instead."""

    def delay(self, failures: int, error: BaseException | None = None) -> float | None:
        """Seconds to wait after the `failures`-th failure, or None when it is not worth waiting.

        Args:
            failures: How many tries have failed so far (1 after the first).
            error: The last error; its `retry_after`, when set, is a lower bound.
        """
        wait = float(min(self.backoff_max_s, self.backoff_base_s * 2.0 ** (failures - 1)))
        if self.jitter:
            wait *= 1.0 - self.jitter * random.random()
        retry_after = getattr(error, "retry_after", None)
        if isinstance(retry_after, (int, float)) and retry_after > 0:
            if retry_after > self.max_retry_after_s:
                return None
            wait = max(wait, float(retry_after))
        return wait

    def next_delay(
        self, failures: int, error: BaseException | None = None, *, time_left: float | None = None
    ) -> float | None:
        """Seconds to wait before the next try, or None to give up: the whole decision of `run`.

        For retry loops that cannot be a plain `run` (a hosted backend's create, which must decide
        by itself which failures are safe to repeat); the caller decides whether `error` is worth
        another try at all.

        Args:
            failures: How many tries have failed so far (1 after the first).
            error: The last error; its `retry_after`, when set, is a lower bound (see `delay`).
            time_left: Seconds until the deadline (None: none); a wait that would reach it is not started.

        Returns:
            The wait, or None when the tries are used up, the provider asks for too long a wait, or
            the wait would pass the deadline.

        Examples:
            >>> policy = RetryPolicy(attempts=2, backoff_base_s=0.1, jitter=0)
            >>> policy.next_delay(1), policy.next_delay(2), policy.next_delay(1, time_left=0.05)
            (0.1, None, None)
        """
        if failures >= self.attempts:
            return None
        wait = self.delay(failures, error)
        if isinstance(error, EndpointUnreachableError) and _fast_failover.get():
            # A fallback waits behind this call: one quick retry (a blip), then give way.
            if failures >= FAST_FAILOVER_TRIES:
                return None
            wait = None if wait is None else min(wait, FAST_FAILOVER_WAIT_S)
        if wait is None or (time_left is not None and wait >= time_left):
            return None
        return wait

    async def run(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        is_retryable: Callable[[BaseException], bool] = is_retryable_error,
        deadline: float | None = None,
        on_retry: Callable[[int, BaseException, float], None] | None = None,
    ) -> T:
        """Await `fn()` until it succeeds, the attempts run out, or an error is not retryable.

        `fn` is called afresh for each try, so it must be safe to repeat: a hosted backend passes
        only calls that cannot create a second billable prediction (see the module docs).

        Args:
            fn: Makes one try (a coroutine function taking no arguments).
            is_retryable: Whether an error is worth another try.
            deadline: `time.monotonic()` value; a wait that would pass it is not started, and the
                last error is raised instead.
            on_retry: Called with (failures so far, the error, seconds about to be waited) before
                each wait: for logs and warnings.

        Returns:
            What the first successful try returned.

        Raises:
            Exception: The last error, when it is not retryable or no try is left.
            asyncio.CancelledError: Never retried; it passes straight through.
        """
        import asyncio

        failures = 0
        while True:
            try:
                return await fn()
            except Exception as exc:
                failures += 1
                if not is_retryable(exc):
                    raise
                wait = self.next_delay(
                    failures, exc, time_left=None if deadline is None else deadline - time.monotonic()
                )
                if wait is None:
                    raise
                if on_retry is not None:
                    on_retry(failures, exc, wait)
                await asyncio.sleep(wait)


class RateLimiter:
    """At most `per_minute` acquisitions a minute: a token bucket, or a sliding window.

    By default a token bucket holding `burst` tokens, refilled continuously: calls go out evenly,
    `burst` of them back to back. With `sliding=True` the rule is the one providers state ("600
    creates a minute, in bursts", Replicate's): at most `per_minute` acquisitions in any 60 s, all
    at once if they come together; the next waits for the oldest to leave the window. (A bucket with
    `burst=per_minute` is not the same: a full bucket and then its refill let twice that through
    within one minute.)

    Waiters are served first come, first served. Use `async with limiter:` or `await
    limiter.acquire()` before each request; `pause(seconds)` holds every caller back for a while when
    the provider answers 429, so every caller backs off together (a bucket then refills from empty;
    a window keeps counting what it holds).

    Args:
        per_minute: Sustained rate; None sets no limit of its own (`pause` still holds callers back).
        burst: Tokens the bucket holds when full; by default one second's worth (at least 1). Not
            for a sliding window, whose burst is `per_minute` itself.
        sliding: Count acquisitions in a sliding window of `WINDOW_S` seconds instead of a bucket.
        clock: Monotonic clock in seconds (tests pass a fake one).
        sleep: Coroutine function that waits; None for `asyncio.sleep` (tests pass a fake one that
            moves the fake clock).

    Examples:
        >>> limiter = RateLimiter(per_minute=600)  # 10 a second, bursts of 10
        >>> creates = RateLimiter(per_minute=600, sliding=True)  # any 600 within 60 s
        >>> async with limiter:  # doctest: +SKIP
        ...     await send()
    """

    WINDOW_S = 60.0
    """The window of `sliding=True`, in seconds."""

    def __init__(
        self,
        per_minute: float | None,
        *,
        burst: int | None = None,
        sliding: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] | None = None,
    ) -> None:
        if per_minute is not None and per_minute <= 0:
            raise ValueError(f"per_minute must be positive, got {per_minute}")
        if sliding and burst is not None:
            raise ValueError("a sliding window takes no burst: any per_minute acquisitions of a window may go at once")
        self.per_minute = None if per_minute is None else float(per_minute)
        self.sliding = sliding
        self.rate = math.inf if self.per_minute is None else self.per_minute / 60.0
        if self.per_minute is None:
            self.burst = math.inf
        elif sliding:
            self.burst = float(math.floor(self.per_minute))
        else:
            self.burst = float(burst if burst is not None else max(1, math.floor(self.rate)))
        if self.burst < 1:
            raise ValueError(f"burst must be at least 1, got {self.burst:g}")
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._stamp = clock()
        self._stamps: collections.deque[float] = collections.deque()
        """When each acquisition in the sliding window was made, oldest first."""
        self._paused_until = 0.0
        self._lock: asyncio.Lock | None = None
        self.waiting = 0
        """Callers waiting in `acquire` now."""

    def _refill(self) -> None:
        now = self._clock()
        if now < self._paused_until:
            self._stamp = now
            return
        start = max(self._stamp, self._paused_until)
        self._tokens = min(self.burst, self._tokens + (now - start) * self.rate)
        self._stamp = now

    def _wait(self, tokens: float) -> float:
        """Seconds until `tokens` can be taken, a pause included (0 when they can be now)."""
        if self.per_minute is None:  # no bucket to refill: an infinite rate would make it NaN
            return max(0.0, self._paused_until - self._clock())
        if not self.sliding:
            self._refill()
            paused = max(0.0, self._paused_until - self._clock())
            return paused + max(0.0, tokens - self._tokens) / self.rate
        now = self._clock()
        while self._stamps and now - self._stamps[0] >= self.WINDOW_S:
            self._stamps.popleft()
        paused = max(0.0, self._paused_until - now)
        over = len(self._stamps) + math.ceil(tokens) - int(self.burst)
        if over <= 0:
            return paused
        if over > len(self._stamps):
            return math.inf  # more than the window ever holds
        # Room comes when the `over` oldest acquisitions have left the window.
        return max(paused, self._stamps[over - 1] + self.WINDOW_S - now)

    def _take(self, tokens: float) -> None:
        if self.per_minute is None:
            return
        if self.sliding:
            self._stamps.extend([self._clock()] * math.ceil(tokens))
        else:
            self._refill()
            self._tokens -= tokens

    def try_acquire(self, tokens: float = 1.0) -> bool:
        """Take `tokens` now if the bucket holds them (or the window has room); never waits."""
        if self._wait(tokens) <= 0 and (self._lock is None or not self._lock.locked()):
            self._take(tokens)
            return True
        return False

    def wait_time(self, tokens: float = 1.0) -> float:
        """Seconds until `tokens` would be available (0 when they are now)."""
        return self._wait(tokens)

    async def acquire(self, tokens: float = 1.0, *, timeout: float | None = None) -> float:
        """Wait until `tokens` are available and take them.

        Args:
            tokens: How many to take (1 per request).
            timeout: Most seconds to wait; None waits as long as it takes (0 takes them only
                when they are there now).

        Returns:
            Seconds spent waiting.

        Raises:
            ValueError: More tokens than the bucket can ever hold.
            TimeoutError: None within `timeout`; raised as soon as the wait is known to be longer,
                rather than after sleeping it. Nothing is taken then.
        """
        import asyncio

        if tokens > self.burst:
            raise ValueError(f"asked for {tokens} tokens; the bucket holds at most {self.burst}")
        if self._lock is None:
            self._lock = asyncio.Lock()
        sleep = self._sleep or asyncio.sleep
        start = self._clock()
        self.waiting += 1
        try:
            if not await _acquire_within(self._lock.acquire, self._lock.release, timeout):
                raise TimeoutError(f"no rate-limit token within {timeout:g} s")
            try:  # one waiter at a time checks the bucket: the lock's FIFO order is the queue's
                wait = self._wait(tokens)
                while wait > 0:  # a pause() may come in while we sleep: check again
                    if timeout is not None and self._clock() + wait > start + timeout:
                        raise TimeoutError(f"the next rate-limit token is {wait:.2g} s away, past the timeout")
                    await sleep(wait)
                    wait = self._wait(tokens)
                self._take(tokens)
            finally:
                self._lock.release()
        finally:
            self.waiting -= 1
        return self._clock() - start

    def pause(self, seconds: float) -> None:
        """Hand out nothing for `seconds` (the provider said Retry-After); a bucket then refills from empty."""
        if self.per_minute is not None and not self.sliding:
            self._refill()
            self._tokens = 0.0
        self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))

    async def __aenter__(self) -> RateLimiter:
        await self.acquire()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    def __repr__(self) -> str:
        if self.per_minute is None:
            return "RateLimiter(per_minute=None)"
        shape = "sliding=True" if self.sliding else f"burst={self.burst:g}"
        return f"RateLimiter(per_minute={self.per_minute:g}, {shape})"


class ConcurrencyLimiter:
    """At most `limit` holders at once (None: no limit); `async with limiter:` around each call.

    Args:
        limit: How many may hold it at once; None lets everyone through.

    Examples:
        >>> gpu_calls = ConcurrencyLimiter(2)
        >>> async with gpu_calls:  # doctest: +SKIP
        ...     await backend.run(request, model, ctx)
    """

    def __init__(self, limit: int | None) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be at least 1 or None, got {limit}")
        self.limit = limit
        self.in_use = 0
        """Slots held now."""
        self.waiting = 0
        """Callers waiting for a slot now."""
        self._semaphore: asyncio.Semaphore | None = None

    async def acquire(self, *, timeout: float | None = None) -> None:
        """Wait for a free slot and take it.

        Args:
            timeout: Most seconds to wait; None waits as long as it takes.

        Raises:
            TimeoutError: No slot came free within `timeout` (none is held then).
        """
        if self.limit is not None:
            import asyncio

            if self._semaphore is None:
                self._semaphore = asyncio.Semaphore(self.limit)
            self.waiting += 1
            try:
                if not await _acquire_within(self._semaphore.acquire, self._semaphore.release, timeout):
                    raise TimeoutError(f"no free slot within {timeout:g} s (limit {self.limit})")
            finally:
                self.waiting -= 1
        self.in_use += 1

    def release(self) -> None:
        """Give a slot back."""
        self.in_use -= 1
        if self._semaphore is not None:
            self._semaphore.release()

    async def __aenter__(self) -> ConcurrencyLimiter:
        await self.acquire()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"ConcurrencyLimiter(limit={self.limit}, in_use={self.in_use})"


async def _acquire_within(
    acquire: Callable[[], Awaitable[Any]], release: Callable[[], None], timeout: float | None
) -> bool:
    """Run `acquire` for at most `timeout` seconds; True when it got what it waited for.

    Not `asyncio.wait_for`: before Python 3.12 it refuses even a free slot when `timeout` is 0, and
    it can report a timeout for an acquisition that just succeeded, which would leak the slot.
    Waiting on a task and inspecting it does neither.
    """
    import asyncio

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


# Limits are shared objects (one bucket, one semaphore per provider); a single call cannot have its own.
_PER_PROVIDER_ONLY = ("max_concurrency", "requests_per_minute", "burst")


class Policy(BaseModel):
    """One provider's policy: limits, retries, attempt deadlines and cooldown.

    Read from `[providers.<name>.policy]`; see the module docs for an example. Per call, pass
    `policy={...}` (or a `Policy`) to override `retry`, `attempt_timeout`, `attempt_share` and
    `cooldown_s` for every provider of that call.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    retry: RetryPolicy | None = None
    """Retries of failures that may pass; None leaves runs unretried (a backend with
    `handles_retries` then uses its own default)."""
    max_concurrency: int | None = Field(None, ge=1)
    """Backend calls of this provider in flight at once, across all jobs of the client."""
    requests_per_minute: float | None = Field(None, gt=0)
    """Backend calls of this provider started per minute, across all jobs of the client."""
    burst: int | None = Field(None, ge=1)
    """Calls that may start back to back under `requests_per_minute` (default: one second's worth)."""
    attempt_timeout: float | None = Field(None, gt=0)
    """Seconds one attempt of this provider may take; past it the attempt is cancelled and a
    fallback chain moves on (a lone model fails with `DeadlineExceededError`)."""
    attempt_share: float | None = Field(None, gt=0, le=1)
    """Share of the job's remaining time an attempt may take when later chain members wait (so a
    hung first member cannot eat the whole deadline); the last member always gets all that is left."""
    cooldown_s: float = Field(30.0, ge=0)
    """How long a model of this provider is skipped in chains after an outage."""

    @classmethod
    def parse(cls, value: Policy | Mapping[str, Any] | None) -> Policy:
        """A `Policy` from a policy, a mapping (a TOML table), or None (the defaults).

        Raises:
            ValueError: The mapping holds unknown keys or values out of range.
        """
        if value is None:
            return cls()
        if isinstance(value, Policy):
            return value
        return cls.model_validate(dict(value))

    def override(self, call: Policy | Mapping[str, Any] | None) -> Policy:
        """This policy with the fields a call set replaced by the call's.

        Raises:
            InvalidRequestError: The call sets a limit, which only a provider's policy can hold.
        """
        if call is None:
            return self
        try:
            given = call if isinstance(call, Policy) else Policy.model_validate(dict(call))
        except ValueError as exc:
            raise InvalidRequestError(f"invalid policy for this call: {exc}") from exc
        fields = given.model_fields_set
        if bad := sorted(f for f in fields if f in _PER_PROVIDER_ONLY):
            raise InvalidRequestError(
                f"{', '.join(bad)} cannot be set per call: limits are shared by every job of a provider; "
                "set them in [providers.<name>.policy] in mediagen.toml or Client(providers=...)"
            )
        return self.model_copy(update={name: getattr(given, name) for name in fields})

    def attempt_deadline(self, *, now: float, job_deadline: float | None, last: bool) -> float | None:
        """When one attempt must end: the earliest of the job's deadline and this policy's limits.

        Args:
            now: `time.monotonic()` at the start of the attempt.
            job_deadline: The job's deadline (None: none).
            last: Whether this is the last member of the chain (it gets all the time left).
        """
        candidates = [] if job_deadline is None else [job_deadline]
        if self.attempt_timeout is not None:
            candidates.append(now + self.attempt_timeout)
        if self.attempt_share is not None and job_deadline is not None and not last:
            candidates.append(now + max(0.0, job_deadline - now) * self.attempt_share)
        return min(candidates) if candidates else None
