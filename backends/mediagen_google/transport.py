"""Talking to the Gemini API: billable calls sent once, Veo operations polled, one deadline.

Billable calls (`:predict`, `:generateContent`, `:predictLongRunning`) are repeated only while
provably not run (`errors.safe_to_repeat`); reads (operation polls) ride out any transient failure.
Waits honour the server's `RetryInfo` / `Retry-After` through `mediagen.policies.RetryPolicy`, a 429
pauses every caller, and each try gets only the time left before the job's deadline.

Veo operations have no cancel on the Gemini API. Cancelling a job stops polling at once (no further
request is sent); the operation may still finish on Google's side, and be billed. When the deadline
passes, polling stops the same way and the job fails with `DeadlineExceededError`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from mediagen.backend import RunContext, check_remote_allowed
from mediagen.errors import DeadlineExceededError, GenerationFailedError, ProviderError
from mediagen.hosted import MAX_API_BODY_BYTES, read_capped
from mediagen.policies import ConcurrencyLimiter, RateLimiter, RetryPolicy

from .client import GoogleConnection
from .errors import PROVIDER, error_for_body, map_errors, safe_to_repeat, transient

__all__ = ["GoogleTransport", "Operation"]

logger = logging.getLogger("mediagen.backends.google")
T = TypeVar("T")
Operation = dict[str, Any]


class GoogleTransport:
    """Sends requests to the Gemini API with mediagen's retries, limits and deadline.

    Args:
        connection: Endpoint, key and clients.
        retry: The retry policy, unless a job's `ctx.policy.retry` replaces it.
        slots: Cap on calls (and Veo operations) in flight.
        pace: A limiter of billable calls; a 429 pauses it for every caller.
        poll_interval: Shortest wait between polls of an operation, in seconds.
        max_poll_interval: Longest wait between polls.
    """

    def __init__(
        self,
        connection: GoogleConnection,
        *,
        retry: RetryPolicy,
        slots: ConcurrencyLimiter,
        pace: RateLimiter,
        poll_interval: float = 5.0,
        max_poll_interval: float = 20.0,
    ) -> None:
        self.connection = connection
        self.retry = retry
        self.slots = slots
        self.pace = pace
        self.poll_interval = poll_interval
        self.max_poll_interval = max(poll_interval, max_poll_interval)
        self.max_body_bytes = MAX_API_BODY_BYTES
        self.stats: collections.Counter[str] = collections.Counter()

    # -- single calls ---------------------------------------------------------------------------------

    async def call(
        self,
        kind: str,
        send: Callable[[float], Awaitable[T]],
        *,
        ctx: RunContext,
        model: str,
        billable: bool = True,
    ) -> T:
        """Send one request (`send(timeout)`): billable ones repeated only while provably not run.

        Raises:
            DeadlineExceededError: The deadline passed first.
            MediagenError: The request failed (translated).
        """
        retry = self._retry_for(ctx)

        async def once() -> T:
            if billable:
                try:
                    await self.pace.acquire(timeout=ctx.time_left())
                except TimeoutError:
                    raise self._deadline(model, "waiting out a rate limit; nothing was sent") from None
            left = ctx.time_left()
            if left == 0.0:
                raise self._deadline(model, "before sending")
            check_remote_allowed(self.connection.base_url)
            # When the deadline is nearer than the request timeout, a timeout is the deadline's.
            limit = self.connection.timeout
            cut = left is not None and left < limit
            self.stats["requests"] += 1
            self.stats[kind] += 1
            try:
                with map_errors(
                    model=model,
                    secrets=self.connection.secrets,
                    key_source=self.connection.key_source,
                    deadline_passed=lambda: cut,
                ):
                    return await send(min(left, limit) if left is not None else limit)
            except Exception as exc:
                status = getattr(exc, "status", None)
                if status == 429 and billable:
                    self.pace.pause(getattr(exc, "retry_after", None) or 0.0)
                self.stats[f"failed_{status or 'no_answer'}"] += 1
                raise

        def counted(failures: int, error: BaseException, delay: float) -> None:
            self.stats["retries"] += 1
            logger.debug("retrying %s for %s in %.2f s after: %s", kind, model, delay, error)

        result: T = await retry.run(
            once, is_retryable=safe_to_repeat if billable else transient, deadline=ctx.deadline, on_retry=counted
        )
        return result

    async def rest(
        self,
        method: str,
        path: str,
        *,
        ctx: RunContext,
        model: str,
        kind: str,
        body: Mapping[str, Any] | None = None,
        billable: bool = True,
    ) -> dict[str, Any]:
        """One REST call relative to `<base_url>/v1beta/`, answered with a JSON object."""

        async def send(timeout: float) -> dict[str, Any]:
            # The remote switch was checked for the endpoint by `call`, before this is sent.
            rest = self.connection.rest
            response = await rest.send(rest.build_request(method, path, json=body, timeout=timeout), stream=True)
            await read_capped(response, self.max_body_bytes, provider=PROVIDER)
            if response.status_code >= 400:
                raise error_for_body(
                    response.status_code,
                    response.text,
                    dict(response.headers),
                    model=model,
                    key_source=self.connection.key_source,
                )
            try:
                found = response.json()
            except ValueError as exc:
                raise ProviderError(
                    f"the Gemini API answered {kind} with something other than JSON",
                    provider=PROVIDER,
                    model=model,
                    retryable=not billable,
                ) from exc
            if not isinstance(found, dict):
                raise ProviderError(
                    f"the Gemini API answered {kind} with a JSON {type(found).__name__}", provider=PROVIDER, model=model
                )
            return found

        return await self.call(kind, send, ctx=ctx, model=model, billable=billable)

    # -- long-running operations (Veo) ----------------------------------------------------------------

    async def run_operation(
        self, model: str, body: Mapping[str, Any], *, ctx: RunContext, typical_s: float
    ) -> Operation:
        """Start a Veo operation and poll it until it is done, reporting progress.

        Returns:
            The finished operation.

        Raises:
            GenerationFailedError: The operation ended with an error.
            DeadlineExceededError: The deadline passed (polling stopped; there is no cancel).
            asyncio.CancelledError: The job was cancelled (polling stopped at once; there is no cancel).
        """
        try:
            await self.slots.acquire(timeout=ctx.time_left())
        except TimeoutError:
            raise self._deadline(model, "waiting for a free place under max_concurrency; nothing was sent") from None
        try:
            started = time.monotonic()
            operation = await self.rest(
                "POST", f"models/{model}:predictLongRunning", ctx=ctx, model=model, kind="predictLongRunning", body=body
            )
            name = operation.get("name")
            if not isinstance(name, str) or "/operations/" not in name:
                raise ProviderError("the Gemini API's answer names no operation", provider=PROVIDER, model=model)
            self.stats["operations"] += 1
            ctx.log(f"operation {name} started")
            try:
                operation = await self._poll(
                    operation, name, ctx=ctx, model=model, started=started, typical_s=typical_s
                )
            except asyncio.CancelledError:
                # The Gemini API has no cancel for Veo operations: stopping the polls is all we can do.
                self.stats["abandoned"] += 1
                logger.info(
                    "stopped polling %s (cancelled); the Gemini API cannot cancel it, so it may still finish", name
                )
                raise
        finally:
            self.slots.release()
        error = operation.get("error")
        if isinstance(error, Mapping):
            raise GenerationFailedError(
                f"Veo operation {name} failed ({error.get('code')}: {error.get('message')})",
                provider=PROVIDER,
                model=model,
                detail=str(error.get("message")),
            )
        return operation

    async def _poll(
        self, operation: Operation, name: str, *, ctx: RunContext, model: str, started: float, typical_s: float
    ) -> Operation:
        polls = 0
        while not operation.get("done"):
            elapsed = time.monotonic() - started
            ctx.progress(*_progress(operation, elapsed, typical_s))
            delay = min(self.max_poll_interval, self.poll_interval * 1.25**polls)
            left = ctx.time_left()
            if left is not None:
                if left <= 0:
                    raise self._abandoned(model, name)
                delay = min(delay, left)
            await asyncio.sleep(delay)
            if ctx.time_left() == 0.0:
                raise self._abandoned(model, name)
            operation = await self.rest("GET", name, ctx=ctx, model=model, kind="operation", billable=False)
            polls += 1
        ctx.progress(100, 100)
        return operation

    # -- plumbing -------------------------------------------------------------------------------------

    def _retry_for(self, ctx: RunContext) -> RetryPolicy:
        job = ctx.policy.retry
        return self.retry if job is None else job

    def _deadline(self, model: str, doing: str) -> DeadlineExceededError:
        return DeadlineExceededError(
            f"the job's deadline passed ({doing}); raise timeout= or ask for less", provider=PROVIDER, model=model
        )

    def _abandoned(self, model: str, name: str) -> DeadlineExceededError:
        self.stats["abandoned"] += 1
        return DeadlineExceededError(
            f"the job's deadline passed while Veo operation {name} was running; polling stopped (the Gemini API "
            "cannot cancel it, so it may still finish and be billed). Raise timeout= for video.",
            provider=PROVIDER,
            model=model,
        )


def _progress(operation: Mapping[str, Any], elapsed: float, typical_s: float) -> tuple[int, int]:
    """`(step, 100)`: the operation's own percentage when it reports one, else an estimate below 95."""
    metadata = operation.get("metadata") or {}
    for key in ("progressPercent", "progress_percent", "progress"):
        value = metadata.get(key) if isinstance(metadata, Mapping) else None
        if isinstance(value, (int, float)):
            return min(99, max(0, int(value))), 100
    return min(95, int(100 * elapsed / max(1.0, typical_s))), 100
