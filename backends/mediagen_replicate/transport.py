"""Talking to Replicate's prediction API: create exactly once, wait, cancel, report progress.

The official client (`replicate.Client`) owns the connection: endpoint, auth header, user agent and
connection pool. Its async API serves for what it does well (model versions, file uploads).
Predictions are created, read and cancelled through its httpx client directly, because its
prediction API cannot send `Cancel-After`, hides `Retry-After` on errors, and rejects the `aborted`
status a prediction gets when its deadline passes before it starts.

What this layer adds:

Exactly-once creates
    A create is a billable prediction, so it is retried only when it provably was not created: a
    429, or a connection that failed before the request was sent. When the outcome is unknown (the
    connection dropped after sending, a 5xx, a read timeout) the transport looks for the prediction
    in `GET /v1/predictions` and adopts it; only when it is not there is the create sent again. A
    listed prediction matches by a fingerprint that survives what the server does to the input
    (`matching.input_matches`: same model and version, created inside the search window, every
    sent key echoed with an equal value after type-tolerant normalisation, defaults ignored), and
    is never one a call of ours already holds. When two predictions match, neither is adopted and
    the call fails without sending the create again: a clear error beats a double bill. Creates
    whose inputs could match one prediction (`matching.inputs_collide`) are not sent while one of
    them is being searched for, and a search waits for such creates in flight to land. Each create
    carries one `Idempotency-Key` across its retries, so a server that honours it can deduplicate too.
Credentials stay home
    Every request goes through the official client's connection (its token); a URL the server
    hands back (a pagination `next` link) on another origin is refused before it is sent
    (`mediagen.safety.check_credentialed_url`), and prediction ids are quoted into paths.
Reads that ride out trouble
    GETs and cancels are retried on 429, 5xx and connection errors with backoff, jitter and
    `Retry-After` (`mediagen.policies.RetryPolicy`), never past the job's deadline.
Limits
    Creates pass a sliding-window `mediagen.policies.RateLimiter` (any 600 within a minute by
    default); a 429 pauses it for every caller. A `ConcurrencyLimiter` bounds the predictions in flight.
Waiting
    Sync mode first (`Prefer: wait=N`, N bounded by the deadline), then polls paced by the model:
    from its progress bar when it has one, else from how long the model took before, else a backoff
    that grows with the time already waited.
One deadline
    A job's deadline becomes `Cancel-After` on the create and, when it passes, a cancel call;
    cancelling the job sends the cancel call, then lets the cancellation through.
"""

from __future__ import annotations

import asyncio
import collections
import io
import logging
import math
import re
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from mediagen.backend import RunContext, check_remote_allowed
from mediagen.errors import DeadlineExceededError, MediagenError, ProviderError
from mediagen.hosted import MAX_API_BODY_BYTES, read_capped
from mediagen.policies import ConcurrencyLimiter, RateLimiter, RetryPolicy
from mediagen.safety import check_credentialed_url

from .errors import PROVIDER, error_for_prediction, error_for_response, map_errors, transport_error
from .matching import input_matches, inputs_collide

if TYPE_CHECKING:
    import httpx

    from .client import ReplicateConnection

__all__ = [
    "TERMINAL_STATUSES",
    "Prediction",
    "Target",
    "LogReporter",
    "PollPacer",
    "ReplicateTransport",
    "parse_time",
]

logger = logging.getLogger("mediagen_replicate")

Prediction = dict[str, Any]
"""A prediction object as the API returns it."""
T = TypeVar("T")

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "aborted"})
_TQDM = re.compile(r"(\d+)%\s*\|[^|]*\|\s*(\d+)/(\d+)")
# How far back the prediction list is searched for a create whose answer was lost.
_MAX_SCAN_PAGES = 10
# Before any create of ours has answered, the search for a lost one reaches back this far by our
# own clock (generous: the server's clock may differ from ours).
_CLOCK_SKEW = timedelta(minutes=10)
# Bounds on the clean-up done after a cancellation, so a cancelled job never hangs on it.
_CLEANUP_TIMEOUT_S = 15.0


@dataclass(eq=False)
class _Create:
    """A create of ours, while it is in flight or being searched for."""

    target: str
    """`Target.key` of its model."""
    input: Mapping[str, Any]
    """Its input as sent."""

    def collides(self, other: _Create) -> bool:
        return self is not other and self.target == other.target and inputs_collide(self.input, other.input)


def prediction_path(prediction_id: Any, action: str = "") -> str:
    """The API path of a prediction (its id quoted: an id from the server never changes the path)."""
    return f"/v1/predictions/{urllib.parse.quote(str(prediction_id), safe='')}{action}"


@dataclass(frozen=True)
class Target:
    """Where predictions of one model are created."""

    owner: str
    name: str
    version: str | None
    """The version id; None runs an official model by name."""

    @property
    def path(self) -> str:
        """The create endpoint."""
        if self.version is None:
            return f"/v1/models/{self.owner}/{self.name}/predictions"
        return "/v1/predictions"

    @property
    def key(self) -> str:
        """One string per model version (what run-time history is kept by)."""
        return f"{self.owner}/{self.name}:{self.version or 'official'}"

    def body(self, inputs: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
        """The create request's body."""
        body: dict[str, Any] = {"input": dict(inputs), **extra}
        if self.version is not None:
            body["version"] = self.version
        return body

    def made(self, prediction: Mapping[str, Any]) -> bool:
        """Whether a prediction was created for this model (and version)."""
        if prediction.get("model") != f"{self.owner}/{self.name}":
            return False
        return self.version is None or prediction.get("version") == self.version


# -- progress and pacing ------------------------------------------------------------------------


class LogReporter:
    """Turns a prediction's growing `logs` into events: tqdm bars → progress, other lines → log lines.

    Args:
        progress: Called with `(step, total)` when the progress bar moves.
        log: Called with each new log line.
        clock: When each progress step was seen (for pacing polls).
    """

    def __init__(
        self,
        progress: Callable[[int, int], None],
        log: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._progress = progress
        self._log = log
        self._clock = clock
        self._consumed = 0
        self._last: tuple[int, int] | None = None
        self.seen: list[tuple[float, float]] = []
        """`(time seen, fraction done)` each time the progress bar moved."""

    def update(self, prediction: Mapping[str, Any], *, final: bool = False) -> None:
        """Report what is new in the prediction's logs.

        Args:
            prediction: The latest prediction object.
            final: The prediction has ended: report an unfinished last line too.
        """
        logs = prediction.get("logs")
        if not isinstance(logs, str) or not logs:
            return  # a cancelled prediction's logs come back null; nothing new
        if len(logs) < self._consumed:
            self._consumed = 0  # rewritten from the start: read it again
        fresh = logs[self._consumed :]
        if not final:
            # A line still being written is read once it ends.
            fresh = fresh[: fresh.rfind("\n") + 1]
        self._consumed += len(fresh)
        moved = False
        for line in re.split(r"[\r\n]+", fresh):
            line = line.rstrip()
            if not line.strip():
                continue
            match = _TQDM.search(line)
            if match is None:
                self._log(line)
                continue
            step, total = int(match[2]), int(match[3])
            if total > 0 and (step, total) != self._last:
                self._last = (step, total)
                self._progress(step, total)
                moved = True
        if moved and self._last is not None:
            self.seen.append((self._clock(), min(1.0, self._last[0] / self._last[1])))


class PollPacer:
    """How long to wait before the next poll: about when the prediction should be done, no sooner.

    Estimates, best first:

    0. The bar is full: the outputs are being saved; poll again soon (half of `min_s`).
    1. Two progress readings apart in time give a rate, and the rate the time left.
    2. One reading: the time so far, scaled by what is left over what is done, halved (the reading
       lags the bar, and the time so far includes the queue).
    3. The model's earlier predictions: a running average of how long they took.
    4. Nothing known: a backoff from `min_s` that grows with each poll and with the time waited.

    Args:
        min_s: Shortest wait between polls.
        max_s: Longest wait between polls.
    """

    def __init__(self, min_s: float = 0.5, max_s: float = 10.0) -> None:
        self.min_s = min_s
        self.max_s = max(min_s, max_s)
        self._typical: dict[str, float] = {}

    def record(self, key: str, seconds: float) -> None:
        """Remember that a prediction of model `key` took `seconds` from create to end."""
        before = self._typical.get(key)
        self._typical[key] = seconds if before is None else 0.7 * before + 0.3 * seconds

    def typical(self, key: str) -> float | None:
        """The model's typical duration, when one has been seen."""
        return self._typical.get(key)

    def delay(
        self,
        key: str,
        *,
        elapsed: float,
        seen: Sequence[tuple[float, float]] = (),
        polls: int = 0,
        now: float | None = None,
    ) -> float:
        """Seconds to wait before the next poll.

        Args:
            key: The model (`Target.key`).
            elapsed: Seconds since the create was sent.
            seen: Progress readings, `(time seen, fraction done)`, oldest first.
            polls: Polls made so far.
            now: The current `time.monotonic()`, for tests.
        """
        now = time.monotonic() if now is None else now
        remaining: float | None = None
        if seen and seen[-1][1] >= 1.0:
            # Steps done, outputs being saved: the end is near, and worth half the usual wait.
            return max(0.05, self.min_s / 2)
        elif len(seen) >= 2 and seen[-1][1] > seen[0][1] and seen[-1][0] > seen[0][0]:
            rate = (seen[-1][1] - seen[0][1]) / (seen[-1][0] - seen[0][0])
            remaining = (1.0 - seen[-1][1]) / rate - (now - seen[-1][0])
        elif seen and seen[-1][1] > 0.0:
            remaining = 0.5 * elapsed * (1.0 - seen[-1][1]) / seen[-1][1]
        elif (typical := self._typical.get(key)) is not None and typical > elapsed:
            remaining = typical - elapsed
        if remaining is None:
            remaining = max(self.min_s * 1.5**polls, 0.2 * elapsed)
        return min(self.max_s, max(self.min_s, remaining))


# -- the transport ------------------------------------------------------------------------------


class ReplicateTransport:
    """Predictions on Replicate: created exactly once, waited for, cancelled with the job.

    Args:
        connection: The endpoint, auth and connection pool.
        retry: Retry policy of reads, cancels and provably-uncreated creates, unless a job's
            `ctx.policy.retry` replaces it.
        creates: Rate limiter of creates (a sliding window: Replicate's "600 a minute").
        slots: Cap on predictions in flight.
        pacer: Poll pacing.
        sync_wait_s: Seconds a create waits for the result (sync mode); 0 polls from the start.
        reconcile_delay_s: Pause before the second search for a create whose answer was lost
            (a prediction list may lag its creates by a moment).
    """

    def __init__(
        self,
        connection: ReplicateConnection,
        *,
        retry: RetryPolicy,
        creates: RateLimiter,
        slots: ConcurrencyLimiter,
        pacer: PollPacer,
        sync_wait_s: int = 60,
        reconcile_delay_s: float = 1.0,
    ) -> None:
        self.connection = connection
        self.retry = retry
        self.creates = creates
        self.slots = slots
        self.pacer = pacer
        self.sync_wait_s = max(0, min(60, int(sync_wait_s)))
        self.reconcile_delay_s = reconcile_delay_s
        self.max_body_bytes = MAX_API_BODY_BYTES
        self.stats: collections.Counter[str] = collections.Counter()
        """Requests sent by kind, retries, recovered creates ..."""
        # Ids of predictions some call of ours already holds (bounded; oldest forgotten first).
        self._claimed: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._claim_lock = asyncio.Lock()
        # Creates in flight, and creates whose answer was lost being searched for: a lost create must
        # not adopt the prediction of another create whose input could match the same one.
        self._in_flight: set[_Create] = set()
        self._recovering: set[_Create] = set()
        self._landings = asyncio.Condition()
        # The newest `created_at` among our creates: anything we create later is at least as new.
        self._watermark: datetime | None = None

    # -- a whole prediction -----------------------------------------------------------------------

    async def run(
        self,
        target: Target,
        inputs: Mapping[str, Any],
        *,
        ctx: RunContext,
        model: str,
        reporter: LogReporter,
        wait_s: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Prediction:
        """Create a prediction, wait for it and return it once it has succeeded.

        Args:
            target: The model to run.
            inputs: Its inputs, ready to send.
            ctx: Deadline and events.
            model: The model reference, for errors.
            reporter: Where progress and log lines go.
            wait_s: Sync-mode wait for this call; None for the transport's, 0 to poll at once.
            extra: More create-body fields (webhook, webhook_events_filter).

        Returns:
            The succeeded prediction.

        Raises:
            DeadlineExceededError: The deadline passed (the prediction was cancelled).
            GenerationFailedError: The prediction failed or was canceled elsewhere.
            MediagenError: Any other failure, translated.
            asyncio.CancelledError: The job was cancelled (the prediction was cancelled first).
        """
        # 1. Take a place among the predictions in flight, within the deadline.
        try:
            await self.slots.acquire(timeout=ctx.time_left())
        except TimeoutError:
            raise self._deadline_error(
                model, "waiting for a free place under max_concurrency; nothing was sent"
            ) from None
        try:
            started = time.monotonic()
            # 2. Create it, exactly once; sync mode may bring the result with it.
            prediction, synced = await self.create(target, inputs, ctx=ctx, model=model, wait_s=wait_s, extra=extra)
            try:
                # 3. Poll until it ends, reporting progress.
                prediction = await self.wait(
                    prediction, target=target, ctx=ctx, model=model, started=started, reporter=reporter, synced=synced
                )
            except BaseException:
                # 4. Whatever stops us (cancellation, deadline, losing contact) stops the prediction too.
                await self.cancel_quietly(str(prediction["id"]), model=model)
                raise
            self.pacer.record(target.key, time.monotonic() - started)
        finally:
            self.slots.release()
        # 5. Only success returns.
        if prediction.get("status") not in ("succeeded", "processing"):
            raise error_for_prediction(prediction, model=model, deadline_passed=ctx.time_left() == 0.0)
        return prediction

    # -- creating, exactly once -----------------------------------------------------------------

    async def create(
        self,
        target: Target,
        inputs: Mapping[str, Any],
        *,
        ctx: RunContext,
        model: str,
        wait_s: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> tuple[Prediction, bool]:
        """Create one prediction; retried only while it provably does not exist.

        Returns:
            The prediction as the create answered (or as found after a lost answer), and whether
            that answer came from a sync-mode wait.

        Raises:
            RateLimitedError: Still throttled when the retries or the deadline ran out.
            MediagenError: The create was refused, or its outcome could not be established.
        """
        import httpx

        body = target.body(inputs, extra or {})
        wait = self._sync_wait(ctx, wait_s)
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        if wait:
            headers["Prefer"] = f"wait={wait}"
        left = ctx.time_left()
        if left is not None:
            # Replicate's minimum is 5 s; our own cancel call covers shorter deadlines.
            headers["Cancel-After"] = f"{max(5, math.ceil(left))}s"
        timeout = httpx.Timeout(wait + 15.0 if wait else 30.0, connect=10.0, pool=60.0)
        mine = _Create(target.key, body["input"])
        retry = self.retry_for(ctx)
        attempt = 0
        while True:
            attempt += 1
            # 1. Wait for the rate limiter (a 429 pauses it for everyone).
            try:
                await self.creates.acquire(timeout=ctx.time_left())
            except TimeoutError:
                raise self._deadline_error(model, "waiting for the create rate limit; nothing was sent") from None
            # 2. Never while a create that could be confused with this one is being searched for.
            async with self._landings:
                await self._landings.wait_for(lambda: not any(mine.collides(c) for c in self._recovering))
                since = self._watermark or datetime.now(timezone.utc) - _CLOCK_SKEW
                self._in_flight.add(mine)
            # 3. Send it, and sort the outcome: created, provably not created, or unknown.
            try:
                response = await self._send(
                    "POST", target.path, json=body, headers=headers, timeout=timeout, kind="create"
                )
            except asyncio.CancelledError:
                await self._land(mine)
                # The create may have reached Replicate: find what it made and cancel that before letting go.
                await self._cancel_lost_create(target, mine, since=since, model=model)
                raise
            except httpx.TransportError as exc:
                await self._land(mine)
                error: MediagenError = transport_error(exc, model=model, secrets=self.connection.secrets)
                unknown = not _never_sent(exc)
            except BaseException:
                await self._land(mine)  # refused before sending (remote requests off, another origin)
                raise
            else:
                await self._land(mine)
                if response.status_code < 400:
                    return self._created(response, model), bool(wait)
                error = error_for_response(response, model=model)
                if response.status_code == 429:
                    # The server named a time: hold every create back until then, not just this one.
                    self.creates.pause(error.retry_after or 0.0)
                elif response.status_code < 500:
                    raise error
                unknown = response.status_code >= 500
            if unknown:
                try:
                    found = await self._recover(target, mine, since=since, model=model, cause=error)
                except asyncio.CancelledError:
                    await self._cancel_lost_create(target, mine, since=since, model=model)
                    raise
                if found is not None:
                    return found, False
            # 4. Provably not created: try again, if the policy and the deadline allow.
            delay = retry.next_delay(attempt, error, time_left=ctx.time_left())
            if delay is None:
                raise error
            self.stats["create_retries"] += 1
            logger.debug("create for %s not made (%s); retrying in %.2f s", model, error, delay)
            await asyncio.sleep(delay)

    def _sync_wait(self, ctx: RunContext, wait_s: int | None) -> int:
        wait = self.sync_wait_s if wait_s is None else max(0, min(60, wait_s))
        left = ctx.time_left()
        if left is not None:
            # Leave a second for the answer to travel before the deadline.
            wait = min(wait, int(left - 1.0))
        return max(0, wait)

    def _created(self, response: httpx.Response, model: str) -> Prediction:
        try:
            prediction = response.json()
        except ValueError as exc:
            raise ProviderError(
                f"Replicate answered the create with {response.status_code} but no JSON prediction",
                provider=PROVIDER,
                model=model,
                status=response.status_code,
            ) from exc
        if not isinstance(prediction, dict) or "id" not in prediction:
            raise ProviderError("Replicate's create answer holds no prediction id", provider=PROVIDER, model=model)
        self._claim(prediction)
        self.stats["predictions_created"] += 1
        return prediction

    def _claim(self, prediction: Mapping[str, Any]) -> None:
        self._claimed[str(prediction["id"])] = None
        while len(self._claimed) > 100_000:
            self._claimed.popitem(last=False)
        created = parse_time(prediction.get("created_at"))
        if created is not None and (self._watermark is None or created > self._watermark):
            self._watermark = created

    async def _land(self, create: _Create) -> None:
        """A create's answer (or failure) arrived: it is no longer in flight."""
        async with self._landings:
            self._in_flight.discard(create)
            self._landings.notify_all()

    async def _recover(
        self,
        target: Target,
        create: _Create,
        *,
        since: datetime | None,
        model: str,
        cause: MediagenError,
    ) -> Prediction | None:
        """Find the prediction of a create whose answer was lost; None when it was not created.

        Raises:
            ProviderError: The search could not tell: two predictions match it (neither is adopted),
                or the list was too long to search back far enough. Sending the create again could
                run it twice, so the call fails instead.
        """
        self.stats["creates_recovering"] += 1
        async with self._landings:
            # A create in flight whose input could match the same prediction may be its owner:
            # wait for its answer; and hold such creates back until this search is over.
            await self._landings.wait_for(lambda: not any(create.collides(c) for c in self._in_flight))
            self._recovering.add(create)
        try:
            for delay in (0.0, self.reconcile_delay_s) if self.reconcile_delay_s > 0 else (0.0,):
                if delay:
                    await asyncio.sleep(delay)
                async with self._claim_lock:
                    found, complete = await self._search(target, create, since=since, model=model)
                    if len(found) > 1:
                        self.stats["creates_ambiguous"] += 1
                        ids = ", ".join(str(p.get("id")) for p in found[:5])
                        raise ProviderError(
                            f"a create for {model} lost its answer ({cause.message}) and {len(found)} "
                            f"predictions match it ({ids}); adopting neither and not sending it again, to "
                            "avoid running it twice. Look them up on replicate.com; giving identical "
                            "requests distinct seeds keeps them apart.",
                            provider=PROVIDER,
                            model=model,
                            retryable=False,
                        ) from cause
                    if found:
                        self._claim(found[0])
                        self.stats["creates_recovered"] += 1
                        logger.info(
                            "found prediction %s after its create's answer was lost (%s)", found[0]["id"], cause
                        )
                        return found[0]
                if not complete:
                    raise ProviderError(
                        f"a create for {model} lost its answer and the prediction list is too long to tell "
                        "whether it was made; not sending it again, to avoid running it twice",
                        provider=PROVIDER,
                        model=model,
                        retryable=False,
                    ) from cause
            return None
        finally:
            async with self._landings:
                self._recovering.discard(create)
                self._landings.notify_all()

    async def _search(
        self, target: Target, create: _Create, *, since: datetime | None, model: str
    ) -> tuple[list[Prediction], bool]:
        """Look through recent predictions for unclaimed ones that `create` could have made.

        Returns:
            Every match, oldest first, and whether the search reached back past `since`.
        """
        after = "" if since is None else "?created_after=" + since.isoformat().replace("+00:00", "Z")
        url: str | None = "/v1/predictions" + after  # Replicate filters by it; the loopback server ignores it
        # By id: a list that grows while it is read shifts its pages, and a prediction can show twice.
        matches: dict[str, Prediction] = {}
        for _ in range(_MAX_SCAN_PAGES):
            if url is None:
                return list(matches.values())[::-1], True
            page = await self._json("GET", url, model=model, kind="list")
            results = page.get("results")
            for prediction in results if isinstance(results, list) else []:
                if not isinstance(prediction, dict):
                    continue
                created = parse_time(prediction.get("created_at"))
                if since is not None and created is not None and created < since:
                    return list(matches.values())[::-1], True
                if (
                    str(prediction.get("id")) not in self._claimed
                    and target.made(prediction)
                    and input_matches(create.input, prediction.get("input"))
                ):
                    matches.setdefault(str(prediction.get("id")), prediction)  # the list is newest first
            found = page.get("next")
            url = found if isinstance(found, str) and found else None
        return list(matches.values())[::-1], url is None

    async def _cancel_lost_create(self, target: Target, create: _Create, *, since: datetime | None, model: str) -> None:
        """After a cancellation during a create: find the prediction it may have made, and cancel it."""
        if any(create.collides(c) for c in self._in_flight | self._recovering):
            # What we would find may be another create's. Cancel-After still bounds ours.
            logger.warning(
                "a create for %s was interrupted while a like one was in flight; not cancelling blind", model
            )
            return

        async def find_and_cancel() -> None:
            async with self._claim_lock:
                found, _ = await self._search(target, create, since=since, model=model)
                if len(found) == 1:
                    self._claim(found[0])
            if len(found) == 1:
                await self._json("POST", prediction_path(found[0]["id"], "/cancel"), model=model, kind="cancel")
                self.stats["cancels"] += 1
            elif found:
                logger.warning(
                    "an interrupted create for %s matches %d predictions; cancelling none", model, len(found)
                )

        await self._shielded(find_and_cancel(), what=f"cancelling the interrupted create for {model}")

    # -- waiting ----------------------------------------------------------------------------------

    async def wait(
        self,
        prediction: Prediction,
        *,
        target: Target,
        ctx: RunContext,
        model: str,
        started: float,
        reporter: LogReporter,
        synced: bool = False,
    ) -> Prediction:
        """Poll a prediction until it ends, pacing polls by the model, within the deadline.

        Args:
            prediction: The prediction as created.
            target: Its model (for pacing).
            ctx: Deadline and events.
            model: The model reference, for errors.
            started: `time.monotonic()` when its create was sent.
            reporter: Where progress and log lines go.
            synced: The prediction came from a sync-mode wait; it is done once it holds output.

        Returns:
            The prediction, ended (or, from sync mode, with all its output).

        Raises:
            DeadlineExceededError: The deadline passed first.
        """
        reporter.update(prediction)
        polls = 0
        # From a sync-mode wait, output before the end means every file is ready (Replicate's rule).
        while not (prediction.get("status") in TERMINAL_STATUSES or (synced and _has_output(prediction))):
            synced = False
            elapsed = time.monotonic() - started
            delay = self.pacer.delay(target.key, elapsed=elapsed, seen=reporter.seen, polls=polls)
            left = ctx.time_left()
            if left is not None:
                if left <= 0:
                    raise self._deadline_error(
                        model, f"prediction {prediction['id']} was still {prediction.get('status')}"
                    )
                delay = min(delay, left)
            await asyncio.sleep(delay)
            if ctx.time_left() == 0.0:
                raise self._deadline_error(model, f"prediction {prediction['id']} was still {prediction.get('status')}")
            prediction = await self._json("GET", prediction_path(prediction["id"]), model=model, ctx=ctx, kind="get")
            polls += 1
            reporter.update(prediction)
        reporter.update(prediction, final=True)
        return prediction

    # -- single calls -----------------------------------------------------------------------------

    async def get(self, prediction_id: str, *, model: str | None = None) -> Prediction:
        """Read a prediction (retried on transient trouble)."""
        return await self._json("GET", prediction_path(prediction_id), model=model, kind="get")

    async def cancel(self, prediction_id: str, *, model: str | None = None) -> Prediction:
        """Cancel a prediction (retried: cancelling twice does no harm)."""
        self.stats["cancels"] += 1
        return await self._json("POST", prediction_path(prediction_id, "/cancel"), model=model, kind="cancel")

    async def cancel_quietly(self, prediction_id: str, *, model: str | None = None) -> None:
        """Cancel a prediction on the way out of a failure: shielded, bounded, never raising."""
        await self._shielded(self.cancel(prediction_id, model=model), what=f"cancelling prediction {prediction_id}")

    async def get_model(self, owner: str, name: str) -> dict[str, Any]:
        """The model object, with `latest_version` and `is_official`.

        Read directly: the official client's `Model` drops `is_official`, which decides the route.
        """
        found = await self._json("GET", f"/v1/models/{owner}/{name}", model=f"{owner}/{name}", kind="model")
        return dict(found)

    async def get_version(self, owner: str, name: str, version: str) -> dict[str, Any]:
        """A model version, with its OpenAPI schema (through the official client)."""
        from replicate.version import Versions

        ref = f"{owner}/{name}:{version}"

        async def fetch() -> dict[str, Any]:
            check_remote_allowed(self.connection.base_url)
            self.stats["requests"] += 1
            self.stats["version"] += 1
            with map_errors(model=ref, secrets=self.connection.secrets):
                found = await Versions(self.connection.official, model=(owner, name)).async_get(version)
            return {"id": found.id, "openapi_schema": found.openapi_schema}

        return await self._retrying(fetch)

    async def upload(self, data: bytes, filename: str, content_type: str) -> str:
        """Upload an input file (`POST /v1/files`, through the official client); return its URL.

        Retried on any transient failure: an upload is no prediction, and a stray copy expires in a day.
        """

        async def send() -> str:
            check_remote_allowed(self.connection.base_url)
            self.stats["requests"] += 1
            self.stats["upload"] += 1
            with map_errors(secrets=self.connection.secrets):
                created = await self.connection.official.files.async_create(
                    io.BytesIO(data), filename=filename, content_type=content_type
                )
            return str(created.urls["get"])

        return await self._retrying(send)

    def retry_for(self, ctx: RunContext | None) -> RetryPolicy:
        """The retry policy of a call: the job's own when it sets one, else the transport's.

        A job's policy is `ctx.policy.retry`, from mediagen's policy layer
        (`[providers.replicate.policy.retry]`, or `policy={"retry": ...}` per call).
        """
        job = ctx.policy.retry if ctx is not None else None
        return self.retry if job is None else job

    # -- plumbing ---------------------------------------------------------------------------------

    async def _json(
        self, method: str, url: str, *, model: str | None, kind: str, ctx: RunContext | None = None
    ) -> dict[str, Any]:
        """One JSON call, retried on 429, 5xx and connection trouble."""
        import httpx

        async def once() -> dict[str, Any]:
            try:
                response = await self._send(method, url, kind=kind)
            except httpx.TransportError as exc:
                raise transport_error(exc, model=model, secrets=self.connection.secrets) from exc
            if response.status_code >= 400:
                raise error_for_response(response, model=model)
            try:
                found = response.json()
            except ValueError as exc:
                raise ProviderError(
                    f"Replicate answered {method} {kind} with something other than JSON",
                    provider=PROVIDER,
                    model=model,
                    retryable=True,
                ) from exc
            if not isinstance(found, dict):
                raise ProviderError(
                    f"Replicate answered {method} {kind} with a JSON {type(found).__name__}",
                    provider=PROVIDER,
                    model=model,
                )
            return found

        return await self._retrying(once, ctx=ctx)

    async def _retrying(self, attempt: Callable[[], Awaitable[T]], *, ctx: RunContext | None = None) -> T:
        """Run `attempt` until it succeeds, or fails for good, or the policy or deadline runs out."""

        def counted(failures: int, error: BaseException, delay: float) -> None:
            self.stats["retries"] += 1
            logger.debug("retrying in %.2f s after: %s", delay, error)

        deadline = ctx.deadline if ctx is not None else None
        result: T = await self.retry_for(ctx).run(attempt, deadline=deadline, on_retry=counted)
        return result

    async def _send(
        self,
        method: str,
        url: str,
        *,
        kind: str,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        """One HTTP request through the official client's pool (never logged with its headers)."""
        http = self.connection.http
        # The token rides on every request of this client: never to an origin the user did not configure.
        check_credentialed_url(url, self.connection.base_url, provider=PROVIDER)
        full = url if "://" in url else self.connection.base_url + url
        check_remote_allowed(full)
        self.stats["requests"] += 1
        self.stats[kind] += 1
        sent = time.monotonic()
        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = timeout
        request = http.build_request(method, url, json=json, headers=dict(headers or {}), **extra)
        response = await http.send(request, stream=True)
        await read_capped(response, self.max_body_bytes, provider=PROVIDER)
        logger.debug(
            "%s %s -> %d in %.3f s", method, url.split("?", 1)[0], response.status_code, time.monotonic() - sent
        )
        return response

    async def _shielded(self, work: Awaitable[Any], *, what: str) -> None:
        """Finish clean-up even while being cancelled (again); bounded in time; failures only logged.

        A job cut by its deadline is often cancelled twice over (our own deadline check and the
        client's timer); the cancel call must still have been sent when the cancellation arrives.
        """
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

    def _deadline_error(self, model: str, doing: str) -> DeadlineExceededError:
        return DeadlineExceededError(
            f"the job's deadline passed ({doing}); raise timeout= or use a faster model",
            provider=PROVIDER,
            model=model,
        )

    def __repr__(self) -> str:
        return f"ReplicateTransport({self.connection!r}, {self.creates!r}, {self.slots!r})"


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


def _has_output(prediction: Mapping[str, Any]) -> bool:
    return prediction.get("status") == "processing" and prediction.get("output") is not None


def parse_time(value: Any) -> datetime | None:
    """Read an API timestamp (`2024-04-22T11:15:15.329Z`); None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    # Python 3.10 reads only 3 or 6 fractional digits; the API has sent other widths.
    text = re.sub(r"\.(\d+)", lambda m: "." + (m[1] + "000000")[:6], text, count=1)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
