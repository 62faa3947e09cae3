"""Predictions: HTTP inputs become requests, requests become jobs on one shared client.

Every prediction, whichever API created it, runs as a `Job` of the server's one `mediagen.Client`,
so concurrent HTTP callers of a local model meet in the same device worker and micro-batcher as
in-process callers would. The service keeps the running predictions in memory (status, logs,
progress), writes each one to the store when it is created, starts and ends, and sends webhooks.

Inputs are checked before anything runs: unknown fields, values out of range, `n` over the
server's cap. Media inputs (`image`, `images`, `mask`, `control_image`) are `data:` URLs or URLs of this
server's own outputs: the server never fetches a URL it is handed, nor reads a path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from .._media import decode_data_url, sniff_media_type, suffix_for_media_type
from ..artifacts import Artifact, Image
from ..client import Client
from ..errors import BudgetExceededError, MediagenError, redact
from ..events import Cancelled, Completed, Failed, Log, Progress, Started
from ..jobs import Job
from ..ledger import Ledger, PriceTable
from ..policies import ConcurrencyLimiter, RateLimiter
from ..requests import Request, request_class
from ..results import Result
from .metrics import ServeMetrics
from .schema import MEDIA_FIELDS, ModelDescription
from .settings import ServeSettings, TokenSpec
from .store import PredictionRecord, PredictionStore, new_prediction_id
from .tracing import Span, start_span
from .webhooks import WEBHOOK_EVENTS, WebhookSender

__all__ = ["InputError", "LimitError", "PredictionService", "parse_cancel_after"]

logger = logging.getLogger("mediagen.serve")

SHUTDOWN_ERROR = "the server shut down before this prediction finished; create it again"
_OUTPUT_PATH = re.compile(r"^/outputs/(?P<id>[a-z0-9]{26})/(?P<key>[A-Za-z0-9_-]{16,64})/(?P<name>out-\d+\.[a-z0-9]+)$")
_UPLOAD_PATH = re.compile(
    r"^/uploads/(?P<id>[a-z0-9]{26})/(?P<key>[A-Za-z0-9_-]{16,64})/(?P<name>[A-Za-z0-9._-]{1,200})$"
)


class InputError(Exception):
    """The input is wrong; `fields` lists each problem as Replicate does (`type`, `field`, `description`)."""

    def __init__(self, fields: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{f['field']}: {f['description']}" for f in fields))
        self.fields = fields


class LimitError(Exception):
    """A per-token limit (rate, concurrency, budget) refused the prediction; `retry_after` in seconds."""

    def __init__(self, message: str, retry_after: float, *, budget: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.budget = budget
        """True when the token's budget is spent (402, not 429: waiting does not help)."""


def parse_cancel_after(value: str, minimum_s: float = 5.0) -> float:
    """Seconds from a `Cancel-After` header: `90`, `5m`, `1h30m45s` (at least `minimum_s`).

    Raises:
        InputError: Not a duration, or under `minimum_s`.
    """
    text = value.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)(h|m|s)", text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise InputError(
                [{"type": "invalid", "field": "Cancel-After", "description": f"not a duration: {value!r}"}]
            )
        seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if seconds < minimum_s:
        raise InputError(
            [{"type": "invalid", "field": "Cancel-After", "description": f"must be at least {minimum_s:g}s"}]
        )
    return seconds


@dataclass
class _Live:
    """A prediction this process is running."""

    record: PredictionRecord
    job: Job
    origin: str
    """Scheme and host the creator used: webhook bodies carry URLs under it."""
    done: asyncio.Event = field(default_factory=asyncio.Event)
    timer: asyncio.TimerHandle | None = None
    cancel_reason: str | None = None
    span: Span = field(default_factory=Span)
    ledger: Ledger | None = None


@dataclass
class _TokenLimits:
    rate: RateLimiter | None
    concurrency: ConcurrencyLimiter
    ledger: Ledger
    """What the token's predictions cost; its budget, if it has one."""


class PredictionService:
    """Creates, runs, finds and cancels predictions.

    Args:
        client: The shared client every prediction runs on.
        store: Where predictions and outputs are kept.
        models: Served models by `owner/name`.
        settings: Limits and caps.
        webhooks: The webhook sender.
        metrics: Where counts go (None: nowhere).
    """

    def __init__(
        self,
        client: Client,
        store: PredictionStore,
        models: Mapping[str, ModelDescription],
        settings: ServeSettings,
        webhooks: WebhookSender,
        metrics: ServeMetrics | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.models = dict(models)
        self.settings = settings
        self.webhooks = webhooks
        self.metrics = metrics
        self._live: dict[str, _Live] = {}
        self._limits: dict[str, _TokenLimits] = {}
        self._stopping = False
        self._tasks: set[asyncio.Future[Any]] = set()
        """Background work (following jobs, cancelling them): held so it is not collected mid-way."""

    # -- counts ---------------------------------------------------------------------------------

    def queued(self) -> int:
        """Predictions created and not started."""
        return sum(1 for live in self._live.values() if live.record.status == "starting")

    def running(self) -> int:
        """Predictions started and not ended."""
        return sum(1 for live in self._live.values() if live.record.status == "processing")

    # -- inputs ---------------------------------------------------------------------------------

    def build_request(self, model: ModelDescription, given: Mapping[str, Any]) -> Request:
        """Turn an HTTP input object into a validated request.

        Raises:
            InputError: Unknown fields, bad values, media that is neither a data URL nor ours.
        """
        if not isinstance(given, Mapping):
            raise InputError([{"type": "invalid_type", "field": "input", "description": "input must be an object"}])
        own = model.parse_input(given)
        if own is not None:
            return own
        allowed = model.input_properties
        problems: list[dict[str, str]] = []
        fields: dict[str, Any] = {}
        for name, value in given.items():
            if name not in allowed:
                problems.append(
                    {
                        "type": "additional_property_not_allowed",
                        "field": "input",
                        "description": f"Additional property {name} is not allowed (inputs: {', '.join(allowed)})",
                    }
                )
            elif name in MEDIA_FIELDS and value is not None:
                try:
                    if name == "images" and isinstance(value, list):
                        fields[name] = [self._media(item) for item in value]
                    else:
                        fields[name] = self._media(value)
                except ValueError as exc:
                    problems.append({"type": "invalid", "field": f"input.{name}", "description": str(exc)})
            else:
                fields[name] = value
        count = fields.get("n", 1)
        if isinstance(count, int) and count > self.settings.max_outputs:
            problems.append(
                {
                    "type": "number_lte",
                    "field": "input.n",
                    "description": f"Must be less than or equal to {self.settings.max_outputs}",
                }
            )
        if problems:
            raise InputError(problems)
        try:
            return request_class(model.modality)(**fields)  # type: ignore[return-value]
        except ValidationError as exc:
            raise InputError(
                [
                    {
                        "type": str(err["type"]),
                        "field": ".".join(["input", *(str(p) for p in err["loc"])]),
                        "description": str(err["msg"]).removeprefix("Value error, "),
                    }
                    for err in exc.errors()
                ]
            ) from exc

    def _media(self, value: Any) -> Artifact:
        if isinstance(value, Mapping) and isinstance(value.get("url"), str):
            value = value["url"]
        if not isinstance(value, str):
            raise ValueError("must be a data: URL or the URL of an output of this server")
        if value.startswith("data:"):
            data, declared = decode_data_url(value)
            media_type = sniff_media_type(data) or declared
        else:
            where = urllib.parse.urlsplit(value).path
            match = _OUTPUT_PATH.match(where)
            path = self.store.output_file(match["id"], match["key"], match["name"]) if match else None
            if match is None and (upload := _UPLOAD_PATH.match(where)):
                path = self.store.upload_file(upload["id"], upload["key"], upload["name"])
            if path is None:
                raise ValueError(
                    "this server fetches no URLs: send the media as a data: URL, upload it (POST /v1/files), "
                    "or pass the URL of one of this server's own outputs"
                )
            data = path.read_bytes()
            media_type = sniff_media_type(data)
        if not (media_type or "").startswith("image/"):
            raise ValueError(f"must be an image (got {media_type or 'unrecognised bytes'})")
        return Image(data, media_type=media_type)

    # -- limits ---------------------------------------------------------------------------------

    def _token_limits(self, token: TokenSpec | None) -> _TokenLimits:
        name = token.name if token else ""
        limits = self._limits.get(name)
        if limits is None:
            per_minute = (token.requests_per_minute if token else None) or self.settings.requests_per_minute
            concurrency = (token.max_concurrency if token else None) or self.settings.max_concurrency
            limits = self._limits[name] = _TokenLimits(
                RateLimiter(per_minute, burst=max(1, math.ceil(per_minute / 6))) if per_minute else None,
                ConcurrencyLimiter(concurrency),
                Ledger(PriceTable(self.client.config.prices), token.budget if token else None),
            )
        return limits

    # -- creating and running -------------------------------------------------------------------

    async def create(
        self,
        model: ModelDescription,
        given: Mapping[str, Any],
        *,
        token: TokenSpec | None,
        origin: str,
        webhook: str | None = None,
        webhook_events: list[str] | None = None,
        cancel_after_s: float | None = None,
        trace_headers: Mapping[str, str] | None = None,
    ) -> PredictionRecord:
        """Check, store and start a prediction.

        Raises:
            InputError: The input, webhook or filter is wrong.
            LimitError: The token's rate, concurrency or budget limit refuses it.
        """
        # 1. Check everything that can be checked before anything is spent.
        request = self.build_request(model, given)
        if webhook is not None:
            why = self.webhooks.check_url(webhook) if isinstance(webhook, str) else "webhook must be a URL string"
            if why:
                raise InputError([{"type": "invalid", "field": "webhook", "description": why}])
        if webhook_events is not None:
            bad = [e for e in webhook_events if e not in WEBHOOK_EVENTS] if isinstance(webhook_events, list) else [""]
            if bad:
                raise InputError(
                    [
                        {
                            "type": "enum",
                            "field": "webhook_events_filter",
                            "description": f"each event must be one of {', '.join(WEBHOOK_EVENTS)}",
                        }
                    ]
                )
        if self._stopping:
            raise LimitError("the server is shutting down", retry_after=5)

        # 2. The token's limits: a rate token now, a concurrency slot held until the end.
        limits = self._token_limits(token)
        if limits.rate is not None and not limits.rate.try_acquire():
            raise LimitError("Request was throttled.", retry_after=max(1.0, limits.rate.wait_time()))
        provider, model_name = self.client.resolve_models(model.served.chain, model.modality)[0]
        try:
            reservation = limits.ledger.reserve(limits.ledger.prices.estimate(request, provider, model_name))
        except BudgetExceededError as exc:
            raise LimitError(str(exc), retry_after=0, budget=True) from exc
        try:
            await limits.concurrency.acquire(timeout=0)
        except TimeoutError:
            reservation.release()
            raise LimitError(
                f"this token already has {limits.concurrency.limit} predictions running; wait for one to end",
                retry_after=1,
            ) from None

        # 3. Store it, then start it on the shared client.
        record = PredictionRecord(
            id=new_prediction_id(),
            owner=model.served.owner,
            name=model.served.name,
            version=model.version,
            token=token.name if token else "",
            input=dict(given),
            webhook=webhook,
            webhook_events=webhook_events,
        )
        if cancel_after_s is not None:
            record.deadline = record.created_at + cancel_after_s
        try:
            await asyncio.to_thread(self.store.save, record)
            job = self.client.submit(request, model=model.served.chain)
        except MediagenError as exc:
            limits.concurrency.release()
            reservation.release()
            record.status, record.error, record.completed_at = "failed", redact(str(exc)), time.time()
            await asyncio.to_thread(self.store.save, record)  # not left `starting` until a restart
            raise InputError([{"type": "invalid", "field": "", "description": str(exc)}]) from exc
        except BaseException:
            limits.concurrency.release()
            reservation.release()
            raise
        span = start_span(
            "mediagen.prediction",
            trace_headers,
            {"mediagen.prediction_id": record.id, "mediagen.model": model.served.ref, "mediagen.task": request.task},
        )
        live = self._live[record.id] = _Live(record, job, origin, span=span, ledger=limits.ledger)
        if cancel_after_s is not None:
            loop = asyncio.get_running_loop()
            live.timer = loop.call_later(cancel_after_s, self._cancel_soon, record.id, "Cancel-After")
        task = self._background(self._follow(live, model))
        task.add_done_callback(lambda _: limits.concurrency.release())
        task.add_done_callback(lambda _: reservation.release())
        return record

    def _background(self, work: Any) -> asyncio.Future[Any]:
        task: asyncio.Future[Any] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _cancel_soon(self, prediction_id: str, reason: str) -> None:
        live = self._live.get(prediction_id)
        if live is not None and not live.record.done:
            live.cancel_reason = reason
            self._background(live.job.cancel(reason))

    async def _follow(self, live: _Live, model: ModelDescription) -> None:
        record = live.record
        attempt: Span | None = None
        started = time.monotonic()
        try:
            async for event in live.job.events():
                if isinstance(event, Started):
                    if attempt is not None:
                        attempt.end()
                    attempt = live.span.child(
                        "mediagen.attempt", {"mediagen.backend": f"{event.provider}:{event.model}"}
                    )
                    if record.status == "starting":
                        record.status = "processing"
                        record.started_at = time.time()
                        started = time.monotonic()
                        await asyncio.to_thread(self.store.save, record)
                        self._webhook(live, "start")
                elif isinstance(event, Progress):
                    record.logs += _progress_line(event.step, event.total, time.monotonic() - started) + "\n"
                    self._webhook(live, "logs")
                elif isinstance(event, Log):
                    record.logs += redact(event.message) + "\n"
                    self._webhook(live, "logs")
                elif isinstance(event, Completed):
                    await self._succeed(record, event.result, model)
                    if live.ledger is not None and not event.result.cached:
                        usage = event.result.usage
                        live.ledger.price(event.result.provider, event.result.model, usage)
                        live.ledger.record(event.result.provider, event.result.model, usage)
                elif isinstance(event, Failed):
                    self._fail(record, event.error, live.span)
                elif isinstance(event, Cancelled):
                    if self._stopping and live.cancel_reason is None:
                        record.status, record.error = "failed", SHUTDOWN_ERROR
                    else:
                        record.status = "canceled"
                        if live.cancel_reason == "Cancel-After":
                            record.error = "canceled: the Cancel-After deadline passed"
        except Exception as exc:  # storing the outputs failed: the prediction fails, the server goes on
            logger.exception("prediction %s could not be completed", record.id)
            self._fail(record, exc, live.span)
        finally:
            if attempt is not None:
                attempt.end()
            if not record.done:  # no terminal event came (cancelled before it began)
                record.status = "failed" if self._stopping else "canceled"
                record.error = SHUTDOWN_ERROR if self._stopping else record.error
            record.completed_at = time.time()
            if record.started_at is not None:
                record.predict_time = record.completed_at - record.started_at
            if live.timer is not None:
                live.timer.cancel()
            live.span.set("mediagen.status", record.status)
            live.span.end()
            try:
                await asyncio.to_thread(self.store.save, record)
            finally:
                if self.metrics is not None:
                    self.metrics.predictions.labels(record.ref, record.status).inc()
                self._webhook(live, "output")
                self._webhook(live, "completed")
                live.done.set()
                self._live.pop(record.id, None)

    async def _succeed(self, record: PredictionRecord, result: Result, model: ModelDescription) -> None:
        files = await asyncio.to_thread(_encode_all, result.artifacts)
        names = await asyncio.to_thread(self.store.write_outputs, record, files)
        record.output = names
        layout = model.output_layout(result)
        record.extra = {
            "warnings": [str(w) for w in result.warnings],
            "seeds": list(result.seeds),
            "backend": result.model_string,
        }
        if layout is not None:
            record.extra["output_layout"] = layout
        if result.seeds and any(s is not None for s in result.seeds):
            record.logs += f"Using seed: {result.seeds[0]}\n"
        record.status = "succeeded"
        if self.metrics is not None:
            label = model.served.ref
            if result.usage.device_s:
                self.metrics.device_seconds.labels(label).inc(result.usage.device_s)
            raws = result.raw if isinstance(result.raw, list) else [result.raw]
            for raw in raws:
                if isinstance(raw, Mapping) and isinstance(raw.get("batch_outputs"), int):
                    self.metrics.batch_size.labels(label).observe(raw["batch_outputs"])

    def _fail(self, record: PredictionRecord, error: BaseException, span: Span) -> None:
        record.status = "failed"
        record.error = redact(str(error)) or type(error).__name__
        span.fail(error)
        if self.metrics is not None:
            self.metrics.errors.labels(type(error).__name__).inc()

    def _webhook(self, live: _Live, event: str) -> None:
        record = live.record
        if record.webhook is None:
            return
        body = json.dumps(record.to_json(live.origin)).encode()
        self.webhooks.notify(record.id, record.webhook, record.webhook_events, event, record.token, body)

    # -- reading --------------------------------------------------------------------------------

    async def get(self, prediction_id: str, token: TokenSpec | None) -> PredictionRecord | None:
        """A prediction of this token (running or stored), or None: another token's is not found."""
        live = self._live.get(prediction_id)
        record = live.record if live is not None else await asyncio.to_thread(self.store.get, prediction_id)
        if record is None or record.token != (token.name if token else ""):
            return None
        return record

    def fresh(self, record: PredictionRecord) -> PredictionRecord:
        """The in-memory state of a running prediction (fresher than its row), else `record`."""
        live = self._live.get(record.id)
        return live.record if live is not None else record

    async def wait(self, record: PredictionRecord, seconds: float | None) -> bool:
        """Wait until a prediction ends, at most `seconds` (None: as long as it takes); True when it ended."""
        live = self._live.get(record.id)
        if live is None:
            return record.done
        try:
            await asyncio.wait_for(asyncio.shield(live.done.wait()), seconds)
        except asyncio.TimeoutError:
            return False
        return True

    async def cancel(self, record: PredictionRecord) -> PredictionRecord:
        """Cancel a running prediction and wait until it has stopped; an ended one is returned as it is."""
        live = self._live.get(record.id)
        if live is not None and not record.done:
            live.cancel_reason = "canceled"
            await live.job.cancel("canceled through the API")
            await live.done.wait()
        return record

    # -- stopping -------------------------------------------------------------------------------

    async def shutdown(self, grace_s: float) -> None:
        """Let running predictions finish for up to `grace_s`, then stop the rest as failed."""
        self._stopping = True
        waiting = [live.done.wait() for live in self._live.values()]
        if waiting:
            logger.info("waiting up to %g s for %d running prediction(s)", grace_s, len(waiting))
            await asyncio.wait([asyncio.ensure_future(w) for w in waiting], timeout=grace_s)
        for live in list(self._live.values()):
            await live.job.cancel("server shutting down")
            await live.done.wait()
        await self.webhooks.drain(timeout=5.0)


def _encode_all(artifacts: list[Artifact]) -> list[tuple[bytes, str]]:
    files = []
    for artifact in artifacts:
        data = artifact.read()
        media_type = artifact.media_type or sniff_media_type(data)
        files.append((data, suffix_for_media_type(media_type) or ".bin"))
    return files


def _progress_line(step: int, total: int, elapsed_s: float) -> str:
    # tqdm's format, which replicate-python's `Prediction.progress` parses.
    total = max(total, 1)
    percent = int(100 * step / total)
    filled = int(10 * step / total)
    rate = step / elapsed_s if elapsed_s > 0 else 0.0
    left = (total - step) / rate if rate > 0 else 0.0
    return (
        f"{percent:3d}%|{'█' * filled}{' ' * (10 - filled)}| {step}/{total} "
        f"[{_mmss(elapsed_s)}<{_mmss(left)}, {rate:5.2f}it/s]"
    )


def _mmss(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    return f"{seconds // 60:02d}:{seconds % 60:02d}"
