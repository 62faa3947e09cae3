"""Sending OpenAI requests: never twice when once may have been billed, within one deadline.

Image and speech requests are synchronous: the answer is the result, and nothing can be looked up
or cancelled afterwards. So the transport's whole job is to decide what is safe to send again
(`errors.safe_to_repeat`: a 429, a 5xx, a connection that never carried the request), to wait as the
server asks (`Retry-After`, through `mediagen.policies.RetryPolicy`), to pause every caller on a 429,
and to give each try only the time left before the job's deadline.

Cancelling the job closes the connection (the official client's request is awaited in the job's own
task). OpenAI has no call to stop a request in progress; the work it already did may still be billed.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from mediagen.backend import RunContext, check_remote_allowed
from mediagen.errors import DeadlineExceededError
from mediagen.policies import ConcurrencyLimiter, RateLimiter, RetryPolicy

from .client import OpenAIConnection
from .errors import PROVIDER, map_errors, safe_to_repeat

__all__ = ["OpenAITransport"]

logger = logging.getLogger("mediagen.backends.openai")
T = TypeVar("T")


class OpenAITransport:
    """Sends requests through the official client, with mediagen's retries and limits.

    Args:
        connection: The endpoint, key and official client.
        retry: The retry policy, unless a job's `ctx.policy.retry` replaces it.
        slots: Cap on requests in flight.
        pace: A limiter of requests; a 429 pauses it for every caller.
        timeout: Seconds one request may take (the deadline may cut it shorter).
    """

    def __init__(
        self,
        connection: OpenAIConnection,
        *,
        retry: RetryPolicy,
        slots: ConcurrencyLimiter,
        pace: RateLimiter,
        timeout: float,
    ) -> None:
        self.connection = connection
        self.timeout = timeout
        self.retry = retry
        self.slots = slots
        self.pace = pace
        self.stats: collections.Counter[str] = collections.Counter()
        """Requests sent by kind, retries, faults seen."""

    async def call(self, kind: str, send: Callable[[float], Awaitable[T]], *, ctx: RunContext, model: str) -> T:
        """Send one request (`send(timeout)`), retried only while provably not billed.

        Args:
            kind: What it is (`images.generate`, `images.edit`, `audio.speech`), for the counters.
            send: Makes one try through the official client, within the timeout it is given.
            ctx: The job's deadline and policy.
            model: The model, for errors.

        Raises:
            DeadlineExceededError: The deadline passed before an answer came.
            MediagenError: The request failed (translated; the last error when retries ran out).
        """
        retry = self._retry_for(ctx)

        async def once() -> T:
            left = ctx.time_left()
            try:
                await self.pace.acquire(timeout=left)
            except TimeoutError:
                raise self._deadline(model, "waiting out a rate limit; nothing was sent") from None
            left = ctx.time_left()
            if left == 0.0:
                raise self._deadline(model, "before sending")
            # When the deadline is nearer than the request timeout, a timeout is the deadline's.
            cut = left is not None and left < self.timeout
            check_remote_allowed(self.connection.base_url)
            self.stats["requests"] += 1
            self.stats[kind] += 1
            sent = time.monotonic()
            try:
                with map_errors(model=model, secrets=self.connection.secrets, deadline_passed=lambda: cut):
                    answer = await send(min(left, self.timeout) if left is not None else self.timeout)
            except Exception as exc:
                status = getattr(exc, "status", None)
                if status == 429:
                    # The server named a time: hold every request back until then, not just this one.
                    self.pace.pause(getattr(exc, "retry_after", None) or 0.0)
                self.stats[f"failed_{status or 'no_answer'}"] += 1
                raise
            logger.debug("%s %s answered in %.3f s", kind, model, time.monotonic() - sent)
            return answer

        def counted(failures: int, error: BaseException, delay: float) -> None:
            self.stats["retries"] += 1
            logger.debug("retrying %s for %s in %.2f s after: %s", kind, model, delay, error)

        try:
            await self.slots.acquire(timeout=ctx.time_left())
        except TimeoutError:
            raise self._deadline(model, "waiting for a free place under max_concurrency; nothing was sent") from None
        try:
            result: T = await retry.run(once, is_retryable=safe_to_repeat, deadline=ctx.deadline, on_retry=counted)
            return result
        finally:
            self.slots.release()

    def _retry_for(self, ctx: RunContext) -> RetryPolicy:
        job = ctx.policy.retry
        return self.retry if job is None else job

    def _deadline(self, model: str, doing: str) -> DeadlineExceededError:
        return DeadlineExceededError(
            f"the job's deadline passed ({doing}); raise timeout= or ask for less", provider=PROVIDER, model=model
        )
