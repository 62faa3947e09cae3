"""Talking to fal's queue: submit exactly once, follow the status with logs, fetch the result, cancel.

Endpoints (under the queue root, `https://queue.fal.run` by default)::

    POST {app id}[?fal_webhook=...]              submit         → request_id
    GET  {owner}/{alias}/requests/{id}/status?logs=1   status   → IN_QUEUE | IN_PROGRESS | COMPLETED
    GET  {owner}/{alias}/requests/{id}           result         → the app's output JSON
    PUT  {owner}/{alias}/requests/{id}/cancel    cancel         → 202 CANCELLATION_REQUESTED

What this layer adds:

A submit is never duplicated
    fal's queue takes no idempotency key and offers no way to list the jobs a key submitted to
    someone else's app, so a submit whose fate is unknown cannot be found again. It is therefore
    sent again only when it provably was not queued: a 429 (the queue refused it), a connection
    that failed before the request went out, or a 5xx from the ingress in front of the queue
    (no `x-fal-request-id` header: fal's gateway stamps every call it took, which is how the
    official client tells ingress errors apart too). A 5xx that does carry an `x-fal-request-id` is
    resolved by asking the queue for that id's status: known → adopted, 404 → not queued → sent
    again. When the answer is lost after sending (dropped connection, read timeout), the submit
    fails with a non-retryable `ProviderError` that says the job may be queued: it is not sent twice.
Reads that ride out trouble
    Status, result and cancel calls are retried on 429, 5xx and connection errors with backoff,
    jitter and `Retry-After` (`mediagen.policies.RetryPolicy`), never past the job's deadline.
One deadline
    The time left goes to fal as `X-Fal-Request-Timeout` (how long the job may wait in the queue);
    when our deadline passes the job is cancelled and `DeadlineExceededError` raised.
Cancel on cancel
    Cancelling the mediagen job calls fal's cancel for the fal job (shielded, bounded), also when the
    cancellation arrives while the submit is still in flight: its answer is awaited, then cancelled.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from mediagen.backend import RunContext, check_remote_allowed
from mediagen.errors import DeadlineExceededError, MediagenError, ProviderError
from mediagen.hosted import MAX_API_BODY_BYTES, read_capped
from mediagen.policies import ConcurrencyLimiter, RateLimiter, RetryPolicy

from .apps import AppId
from .errors import PROVIDER, error_for_job, error_for_response, transport_error

if TYPE_CHECKING:
    import httpx

    from .client import FalConnection

__all__ = ["FalJob", "FalTransport", "LogReporter"]

logger = logging.getLogger("mediagen.backends.fal")
T = TypeVar("T")

_TQDM = re.compile(r"(\d+)%\s*\|[^|]*\|\s*(\d+)/(\d+)")
# Share of the time already waited that the next poll waits, when nothing better is known.
_WAIT_SHARE = 0.3
# Bounds on the clean-up done after a cancellation, so a cancelled job never hangs on it.
_CLEANUP_TIMEOUT_S = 15.0


@dataclass
class FalJob:
    """One fal job, as far as we have followed it."""

    request_id: str
    app: AppId
    status: dict[str, Any] = field(default_factory=dict)
    """The last status answer (`COMPLETED`, with `metrics`, once done)."""
    output: dict[str, Any] = field(default_factory=dict)
    """The result JSON."""
    submitted_at: float = 0.0
    started_at: float | None = None
    completed_at: float | None = None
    adopted: bool = False
    """True when the submit's answer was lost and the job was found by its `x-fal-request-id`."""

    def raw(self) -> dict[str, Any]:
        """What fal said about the job, unconverted (`Result.raw`)."""
        return {"request_id": self.request_id, "app": str(self.app), "status": self.status, "output": self.output}


class LogReporter:
    """Turns fal's growing `logs` list into events: tqdm-style lines → progress, others → log lines."""

    def __init__(self, progress: Callable[[int, int], None], log: Callable[[str], None]) -> None:
        self._progress = progress
        self._log = log
        self._seen = 0
        self._last: tuple[int, int] | None = None
        self.fraction: float | None = None
        """How far the job's progress bar has got (0..1), once it has shown one."""

    def update(self, status: Mapping[str, Any]) -> None:
        """Report what is new in a status answer's logs (fal sends the whole list each time)."""
        logs = status.get("logs")
        if not isinstance(logs, list):
            return
        if len(logs) < self._seen:
            self._seen = 0  # a retried job starts its logs afresh
        for entry in logs[self._seen :]:
            message = entry.get("message") if isinstance(entry, Mapping) else entry
            if not isinstance(message, str) or not message.strip():
                continue
            match = _TQDM.search(message)
            if match is None:
                self._log(message.rstrip())
                continue
            step, total = int(match[2]), int(match[3])
            if total > 0 and (step, total) != self._last:
                self._last = (step, total)
                self.fraction = min(1.0, step / total)
                self._progress(step, total)
        self._seen = len(logs)


class FalTransport:
    """Jobs on fal's queue: submitted exactly once, followed, cancelled with the mediagen job.

    Args:
        connection: Key, endpoints and pools.
        retry: Retry policy of reads, cancels and provably-unqueued submits, unless a job's
            `ctx.policy.retry` replaces it.
        submits: Rate limiter of submits (a 429 pauses it for every caller).
        slots: Cap on jobs in flight.
        poll_interval: First wait between status polls, in seconds.
        max_poll_interval: Longest wait between polls.
    """

    def __init__(
        self,
        connection: FalConnection,
        *,
        retry: RetryPolicy,
        submits: RateLimiter,
        slots: ConcurrencyLimiter,
        poll_interval: float = 0.25,
        max_poll_interval: float = 5.0,
    ) -> None:
        self.connection = connection
        self.retry = retry
        self.submits = submits
        self.slots = slots
        self.poll_interval = poll_interval
        self.max_poll_interval = max(poll_interval, max_poll_interval)
        self.max_body_bytes = MAX_API_BODY_BYTES
        self.stats: collections.Counter[str] = collections.Counter()
        """Requests sent by kind, retries, adopted submits ..."""
        # How long each app's jobs took from submit to completion (a running average), for pacing polls.
        self._typical: dict[str, float] = {}

    # -- a whole job ----------------------------------------------------------------------------

    async def run(
        self,
        app: AppId,
        inputs: Mapping[str, Any],
        *,
        ctx: RunContext,
        reporter: LogReporter,
        headers: Mapping[str, str] | None = None,
        webhook: str | None = None,
    ) -> FalJob:
        """Submit a job, follow it to the end and fetch its result.

        Raises:
            DeadlineExceededError: The deadline passed (the job was cancelled).
            GenerationFailedError: The job completed with an error.
            InvalidRequestError: The app refused the input.
            MediagenError: Any other failure, translated.
            asyncio.CancelledError: The mediagen job was cancelled (the fal job was cancelled first).
        """
        model = str(app)
        # 1. Take a place among the jobs in flight, within the deadline.
        try:
            await self.slots.acquire(timeout=ctx.time_left())
        except TimeoutError:
            raise _deadline_error(model, "waiting for a free place under max_concurrency; nothing was sent") from None
        try:
            # 2. Submit, exactly once.
            job = await self.submit(app, inputs, ctx=ctx, headers=headers, webhook=webhook)
            try:
                # 3. Follow the status (with logs) until it completes, then read the result.
                await self.wait(job, ctx=ctx, reporter=reporter)
                await self.result(job, ctx=ctx)
            except BaseException:
                # 4. Whatever stops us (cancellation, deadline, losing contact, a failed job) stops
                #    the fal job too; cancelling a completed job is harmless.
                if not _ended(job):
                    await self.cancel_quietly(job)
                raise
        finally:
            self.slots.release()
        return job

    # -- submitting, exactly once ---------------------------------------------------------------

    async def submit(
        self,
        app: AppId,
        inputs: Mapping[str, Any],
        *,
        ctx: RunContext,
        headers: Mapping[str, str] | None = None,
        webhook: str | None = None,
    ) -> FalJob:
        """Queue one job; sent again only while it provably was not queued.

        Raises:
            RateLimitedError: Still throttled when the retries or the deadline ran out.
            MediagenError: The submit was refused, or its outcome could not be established.
        """
        import httpx

        model = str(app)
        url = f"{self.connection.base_url}/{app.submit_path}"
        params = {"fal_webhook": webhook} if webhook else None
        body = json.dumps(dict(inputs), separators=(",", ":")).encode()
        send_headers = {"Content-Type": "application/json", **(headers or {})}
        own_timeout = "X-Fal-Request-Timeout" not in send_headers
        retry = self.retry_for(ctx)
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.submits.acquire(timeout=ctx.time_left())
            except TimeoutError:
                raise _deadline_error(model, "waiting for the submit rate limit; nothing was sent") from None
            left = ctx.time_left()
            if left is not None:
                if left <= 1.0:
                    raise _deadline_error(model, "too little time left to submit; nothing was sent")
                if own_timeout:
                    # fal drops a job that has not started within this many seconds.
                    send_headers["X-Fal-Request-Timeout"] = f"{left:.1f}"
            sent_at = time.monotonic()
            task = asyncio.ensure_future(
                self._send("POST", url, kind="submit", content=body, headers=send_headers, params=params)
            )
            try:
                response = await asyncio.shield(task)
            except asyncio.CancelledError:
                # The submit may reach fal anyway: wait for its answer, then cancel what it queued.
                await self._cancel_after_submit(task, app)
                raise
            except httpx.TransportError as exc:
                error: MediagenError = transport_error(exc, model=model, secrets=self.connection.secrets)
                if not _never_sent(exc):
                    raise ProviderError(
                        f"the submit to {model} lost its answer ({type(exc).__name__}); the job may be queued on "
                        "fal, and fal offers no way to find it again, so it is not sent twice. Check "
                        "fal.ai/dashboard/requests before submitting again.",
                        provider=PROVIDER,
                        model=model,
                        retryable=False,
                    ) from exc
            else:
                if response.status_code < 400:
                    return self._queued(response, app, sent_at)
                error = error_for_response(response, model=model, kind="submit")
                if response.status_code == 429:
                    # The queue said when: hold every submit back until then, not just this one.
                    self.submits.pause(error.retry_after or 0.0)
                elif response.status_code >= 500:
                    taken = response.headers.get("x-fal-request-id")
                    if taken:
                        adopted = await self._adopt(app, taken, ctx=ctx, sent_at=sent_at, cause=error)
                        if adopted is not None:
                            return adopted
                    # No request id: the ingress answered, the queue never saw the job.
                else:
                    raise error
            delay = retry.next_delay(attempt, error, time_left=ctx.time_left())
            if delay is None:
                raise error
            self.stats["submit_retries"] += 1
            logger.debug("submit to %s not queued (%s); retrying in %.2f s", model, error, delay)
            await asyncio.sleep(delay)

    def _queued(self, response: httpx.Response, app: AppId, sent_at: float) -> FalJob:
        try:
            answer = response.json()
        except ValueError as exc:
            raise ProviderError(
                f"fal answered the submit with {response.status_code} but no JSON", provider=PROVIDER, model=str(app)
            ) from exc
        request_id = answer.get("request_id") if isinstance(answer, dict) else None
        if not isinstance(request_id, str):
            raise ProviderError("fal's submit answer holds no request_id", provider=PROVIDER, model=str(app))
        try:
            app.request_path(request_id)
        except ValueError as exc:
            raise ProviderError(str(exc), provider=PROVIDER, model=str(app)) from exc
        self.stats["jobs_submitted"] += 1
        return FalJob(request_id=request_id, app=app, status=dict(answer), submitted_at=sent_at)

    async def _adopt(
        self, app: AppId, request_id: str, *, ctx: RunContext, sent_at: float, cause: MediagenError
    ) -> FalJob | None:
        """A submit answered 5xx with a request id: adopt the job when the queue knows it.

        Returns:
            The job, or None when the queue does not know the id (then it was not queued).

        Raises:
            ProviderError: The queue could not say; sending the submit again could run it twice.
        """
        try:
            path = app.request_path(request_id, "status")
        except ValueError:
            raise cause from None
        self.stats["submits_resolving"] += 1
        try:
            status = await self._json("GET", path, model=str(app), kind="status", ctx=ctx)
        except MediagenError as exc:
            if exc.status == 404:
                return None
            raise ProviderError(
                f"the submit to {app} failed ({cause}) and fal could not say whether it queued request "
                f"{request_id}; not sending it again, to avoid running it twice",
                provider=PROVIDER,
                model=str(app),
                retryable=False,
            ) from exc
        self.stats["submits_adopted"] += 1
        logger.info("adopted fal request %s after its submit answered %s", request_id, cause.status)
        return FalJob(request_id=request_id, app=app, status=status, submitted_at=sent_at, adopted=True)

    async def _cancel_after_submit(self, task: asyncio.Future[httpx.Response], app: AppId) -> None:
        async def settle() -> None:
            response = await task
            if response.status_code < 400:
                job = self._queued(response, app, time.monotonic())
                await self.cancel(job)

        await self._shielded(settle(), what=f"cancelling the interrupted submit to {app}")

    # -- following ------------------------------------------------------------------------------

    async def wait(self, job: FalJob, *, ctx: RunContext, reporter: LogReporter) -> None:
        """Poll the job's status (with logs) until it completes, within the deadline."""
        model = str(job.app)
        path = job.app.request_path(job.request_id, "status")
        position: int | None = None
        while True:
            status = job.status
            state = status.get("status")
            if state == "IN_QUEUE":
                found = status.get("queue_position")
                if isinstance(found, int) and found != position:
                    position = found
                    ctx.log(f"fal: queued at position {found}")
            elif state in ("IN_PROGRESS", "COMPLETED") and job.started_at is None:
                job.started_at = time.monotonic()
            reporter.update(status)
            if state == "COMPLETED":
                job.completed_at = time.monotonic()
                self._record(str(job.app), job.completed_at - job.submitted_at)
                return
            now = time.monotonic()
            running = None if job.started_at is None else now - job.started_at
            delay = self._next_poll(str(job.app), now - job.submitted_at, running, reporter.fraction)
            left = ctx.time_left()
            if left is not None:
                if left <= 0:
                    raise _deadline_error(model, f"request {job.request_id} was still {state}")
                delay = min(delay, left)
            await asyncio.sleep(delay)
            if ctx.time_left() == 0.0:
                raise _deadline_error(model, f"request {job.request_id} was still {state}")
            job.status = await self._json("GET", path + "?logs=1", model=model, kind="status", ctx=ctx)

    def _next_poll(self, app: str, elapsed: float, running: float | None, fraction: float | None) -> float:
        """Seconds before the next status poll: about when the job should be done, no sooner.

        Estimates, best first: the job's own progress bar (time running, scaled by what is left over
        what is done); the app's typical duration, once its jobs have been seen to finish; else a
        share of the time already waited, so a late answer costs at most that share of the wait
        (a backoff that grows with the time waited, not with the polls made: under a slow server
        each poll takes long, and a count-based backoff would overshoot).
        """
        typical = self._typical.get(app)
        if running is not None and fraction is not None and 0.0 < fraction < 1.0:
            wait = running * (1.0 - fraction) / fraction
        elif typical is not None and elapsed < typical:
            wait = typical - elapsed
        else:
            wait = _WAIT_SHARE * elapsed
        return min(self.max_poll_interval, max(self.poll_interval, wait))

    def _record(self, app: str, seconds: float) -> None:
        before = self._typical.get(app)
        self._typical[app] = seconds if before is None else 0.7 * before + 0.3 * seconds

    async def result(self, job: FalJob, *, ctx: RunContext) -> None:
        """Fetch the result of a completed job; a job that completed with an error raises it."""
        import httpx

        model = str(job.app)
        path = job.app.request_path(job.request_id)
        failed = job.status.get("error") is not None
        if not failed:
            job.output = await self._json("GET", path, model=model, kind="result", ctx=ctx)
            return
        # A failed job's result call answers the app's own error status: read it once, not retried.
        try:
            response = await self._send("GET", f"{self.connection.base_url}/{path}", kind="result")
        except httpx.TransportError:
            response = None
        body: Any = job.status.get("error")
        status = 500
        if response is not None:
            status = response.status_code if response.status_code >= 400 else 500
            try:
                body = response.json()
            except ValueError:
                body = response.text[:500] or body
        raise error_for_job(
            status, body, request_id=job.request_id, model=model, error_type=_text(job.status.get("error_type"))
        )

    # -- cancelling -----------------------------------------------------------------------------

    async def cancel(self, job: FalJob) -> None:
        """Ask fal to cancel the job (retried: cancelling twice does no harm)."""
        import httpx

        path = job.app.request_path(job.request_id, "cancel")
        self.stats["cancels"] += 1

        async def once() -> None:
            try:
                response = await self._send("PUT", f"{self.connection.base_url}/{path}", kind="cancel")
            except httpx.TransportError as exc:
                raise transport_error(exc, model=str(job.app), secrets=self.connection.secrets) from exc
            # 400 ALREADY_COMPLETED and 404 NOT_FOUND leave nothing to cancel.
            if response.status_code >= 400 and response.status_code not in (400, 404):
                raise error_for_response(response, model=str(job.app), kind="cancel")

        await self.retry.run(once)

    async def cancel_quietly(self, job: FalJob) -> None:
        """Cancel on the way out of a failure: shielded, bounded, never raising (but re-raising a cancellation)."""
        await self._shielded(self.cancel(job), what=f"cancelling fal request {job.request_id}")

    # -- plumbing -------------------------------------------------------------------------------

    def retry_for(self, ctx: RunContext | None) -> RetryPolicy:
        """The job's own retry policy when it sets one (`ctx.policy.retry`), else the transport's."""
        job = ctx.policy.retry if ctx is not None else None
        return self.retry if job is None else job

    async def upload(self, data: bytes, file_name: str, content_type: str) -> str:
        """Store an input file through fal's storage API; return its URL.

        `POST {storage}/storage/upload/initiate` (with the key) answers a signed `upload_url` and the
        `file_url`; the bytes go by `PUT upload_url` through the pool that carries no key. Retried
        on transient trouble: an upload is no job, and a stray copy costs nothing.
        """
        import httpx

        initiate = f"{self.connection.storage_url}/storage/upload/initiate?storage_type=gcs"
        answer = await self._json(
            "POST", initiate, model=None, kind="upload", body={"file_name": file_name, "content_type": content_type}
        )
        upload_url, file_url = answer.get("upload_url"), answer.get("file_url")
        if not (isinstance(upload_url, str) and isinstance(file_url, str)):
            raise ProviderError("fal's storage answered without upload_url and file_url", provider=PROVIDER)
        if not upload_url.startswith(("https://", "http://")) or not file_url.startswith(("https://", "http://")):
            raise ProviderError("fal's storage answered with a non-http upload URL", provider=PROVIDER)

        async def put() -> None:
            check_remote_allowed(upload_url)
            self.stats["requests"] += 1
            self.stats["upload_put"] += 1
            try:
                response = await self.connection.downloads.put(
                    upload_url, content=data, headers={"Content-Type": content_type}
                )
            except httpx.TransportError as exc:
                raise transport_error(exc, secrets=self.connection.secrets) from exc
            if response.status_code >= 400:
                raise error_for_response(response, kind="upload")

        await self.retry.run(put)
        return file_url

    async def _json(
        self,
        method: str,
        path: str,
        *,
        model: str | None,
        kind: str,
        ctx: RunContext | None = None,
        body: Any = None,
    ) -> dict[str, Any]:
        """One JSON call on a keyed endpoint, retried on 429, 5xx and connection trouble."""
        import httpx

        url = path if "://" in path else f"{self.connection.base_url}/{path}"

        async def once() -> dict[str, Any]:
            try:
                response = await self._send(
                    method,
                    url,
                    kind=kind,
                    content=None if body is None else json.dumps(body).encode(),
                    headers={"Content-Type": "application/json"} if body is not None else None,
                )
            except httpx.TransportError as exc:
                raise transport_error(exc, model=model, secrets=self.connection.secrets) from exc
            if response.status_code >= 400:
                raise error_for_response(response, model=model, kind=kind)
            try:
                found = response.json()
            except ValueError as exc:
                raise ProviderError(
                    f"fal answered {kind} with something other than JSON",
                    provider=PROVIDER,
                    model=model,
                    retryable=True,
                ) from exc
            if not isinstance(found, dict):
                raise ProviderError(
                    f"fal answered {kind} with a JSON {type(found).__name__}", provider=PROVIDER, model=model
                )
            return found

        def counted(failures: int, error: BaseException, delay: float) -> None:
            self.stats["retries"] += 1
            logger.debug("retrying %s in %.2f s after: %s", kind, delay, error)

        deadline = ctx.deadline if ctx is not None else None
        result: dict[str, Any] = await self.retry_for(ctx).run(once, deadline=deadline, on_retry=counted)
        return result

    async def _send(
        self,
        method: str,
        url: str,
        *,
        kind: str,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One HTTP call with the key, to a keyed endpoint only (never logged with its headers)."""
        if not self.connection.keyed(url):
            # Only URLs built here reach this point; this guards the key against a future mistake.
            raise ProviderError(f"refusing to send the fal key to {url.split('?')[0]!r}", provider=PROVIDER)
        check_remote_allowed(url)
        self.stats["requests"] += 1
        self.stats[kind] += 1
        sent = time.monotonic()
        request = self.connection.http.build_request(
            method, url, content=content, headers=dict(headers or {}), params=dict(params) if params else None
        )
        response = await self.connection.http.send(request, stream=True)
        await read_capped(response, self.max_body_bytes, provider=PROVIDER)
        logger.debug(
            "%s %s -> %d in %.3f s", method, url.split("?", 1)[0], response.status_code, time.monotonic() - sent
        )
        return response

    async def _shielded(self, work: Awaitable[Any], *, what: str) -> None:
        """Finish clean-up even while being cancelled (again); bounded in time; failures only logged."""
        task = asyncio.ensure_future(asyncio.wait_for(work, _CLEANUP_TIMEOUT_S))
        cancelled = False
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                cancelled = True
            except Exception:
                break
        if not task.cancelled() and task.exception() is not None:
            logger.warning("%s failed: %s", what, task.exception())
        if cancelled:
            raise asyncio.CancelledError


def _ended(job: FalJob) -> bool:
    return job.status.get("status") == "COMPLETED"


def _deadline_error(model: str, doing: str) -> DeadlineExceededError:
    return DeadlineExceededError(
        f"the job's deadline passed ({doing}); raise timeout= or use a faster model", provider=PROVIDER, model=model
    )


def _never_sent(exc: BaseException) -> bool:
    """Whether httpx failed before any byte of the request could reach the server."""
    import httpx

    return isinstance(
        exc,
        (
            httpx.ConnectError,
            httpx.ConnectTimeout,
            httpx.PoolTimeout,
            httpx.UnsupportedProtocol,
            httpx.LocalProtocolError,
        ),
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
