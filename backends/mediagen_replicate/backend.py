"""The Replicate backend: mediagen requests, run on Replicate's hosted models.

`ReplicateBackend.run` reads top to bottom: check the request against the model, map it onto the
model's inputs and validate them, send input media, run the prediction, and turn its outputs into
artifacts. One run is one prediction: the client splits `n` by the model's capabilities.

The parts live next door, one concept each: `client.py` (token and endpoint), `refs.py` (model
references), `schema.py` (a model's inputs and their check), `curated.py` (what we know beyond the
schema), `catalog.py` (models resolved, schemas fetched once), `mapping.py` (requests into
inputs), `inputs.py` and `outputs.py` (media in and out), `transport.py` (predictions over HTTP),
`options.py` and `webhooks.py`. Retries and limits are mediagen's shared ones
(`mediagen.policies`), set up here from the backend's settings.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mediagen._config import DEFAULT_MAX_DOWNLOAD_BYTES, DEFAULT_MAX_OUTPUTS_PER_N, DEFAULT_MAX_RESULT_BYTES
from mediagen._download import ByteBudget
from mediagen.artifacts import Artifact, name_outputs
from mediagen.backend import Backend, Capabilities, RunContext
from mediagen.errors import GenerationFailedError, UnsupportedRequestError
from mediagen.hosted import check_output_count, download_all, warn_if_short
from mediagen.policies import ConcurrencyLimiter, RateLimiter, RetryPolicy
from mediagen.requests import TASKS, Request
from mediagen.results import Result, Timings, Usage

from .catalog import ModelCatalog, ModelInfo
from .client import ENV_TOKEN, ReplicateConnection
from .errors import PROVIDER
from .inputs import DEFAULT_INLINE_MAX_BYTES, media_to_inputs
from .mapping import MappedInputs, build_inputs, inputs_per_call
from .options import ReplicateOptions
from .outputs import artifacts_from_output, output_urls
from .transport import LogReporter, PollPacer, Prediction, ReplicateTransport, Target, parse_time
from .webhooks import webhook_fields

if TYPE_CHECKING:
    from replicate.client import Client

__all__ = ["ReplicateBackend", "DEFAULT_MAX_CONCURRENCY", "DEFAULT_CREATES_PER_MINUTE"]

DEFAULT_MAX_CONCURRENCY = 256
"""Predictions in flight at once. Replicate sets no such cap; this bounds sockets and spend rate."""
DEFAULT_CREATES_PER_MINUTE = 600
"""Replicate's documented limit on prediction creates."""

_SEED_LOG = re.compile(r"(?im)^\s*(?:using\s+)?(?:random\s+)?seed\s*[:=]\s*(\d+)\s*$")


# mypy run on this folder alone sees `mediagen` as untyped (an editable install it cannot follow).
class ReplicateBackend(Backend):
    """Runs mediagen requests on Replicate (`model="replicate:owner/name"` or `owner/name:<version>`).

    Apart from `__init__`, all methods are private or part of the contract.

    Args:
        api_token: API token; defaults to `$REPLICATE_API_TOKEN`. Never put it in mediagen.toml.
        base_url: API endpoint; defaults to `$REPLICATE_BASE_URL`, else Replicate's.
        client: A ready `replicate.Client` to use (its token and endpoint win); never closed here.
        max_concurrency: Predictions in flight at once (None: no cap).
        creates_per_minute: Prediction creates allowed in any 60 s, all at once if they come
            together (None: no limit; a 429 still holds every create back).
        poll_interval: Shortest wait between polls of a running prediction, in seconds.
        max_poll_interval: Longest wait between polls, in seconds.
        sync_wait_s: Seconds a create waits for the result before polling (sync mode, 0-60).
        max_download_bytes: Size cap of each output download (a `data:` URL's too).
        max_result_bytes: Size cap of all of one result's output downloads together.
        max_outputs_per_n: Outputs accepted per output asked for (`n`), previews included; a
            prediction that returns more fails with `MediaTooLargeError` before anything is fetched.
        data_url_max_bytes: Largest input file sent inline; larger ones are uploaded.
        max_retries: Tries of each call, the first included (creates only while provably not made),
            1 to 100; a job's `policy.retry` (mediagen's policy layer) replaces this and `retry_base_delay`.
        retry_base_delay: First backoff between tries, in seconds (doubling, with jitter).
        reconcile_delay_s: Pause before searching a second time for a create whose answer was lost.

    Examples:
        >>> async with mg.Client() as client:  # doctest: +SKIP
        ...     res = await client.image("a red fox in snow", model="replicate:black-forest-labs/flux-schnell",
        ...                              aspect_ratio="16:9", seed=7)
        ...     res.artifacts[0].save("fox.webp")
    """

    provider = "replicate"
    tasks = frozenset(TASKS)
    remote = True
    # Only this backend knows which calls can be repeated without a second billable prediction, so
    # the client must never re-run a whole `run`; the job's retry policy reaches the transport instead.
    handles_retries = True

    def __init__(
        self,
        *,
        api_token: str | None = None,
        base_url: str | None = None,
        client: Client | None = None,
        max_concurrency: int | None = DEFAULT_MAX_CONCURRENCY,
        creates_per_minute: int | None = DEFAULT_CREATES_PER_MINUTE,
        poll_interval: float = 0.5,
        max_poll_interval: float = 10.0,
        sync_wait_s: int = 60,
        max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        max_outputs_per_n: int = DEFAULT_MAX_OUTPUTS_PER_N,
        data_url_max_bytes: int = DEFAULT_INLINE_MAX_BYTES,
        max_retries: int = 10,
        retry_base_delay: float = 0.2,
        reconcile_delay_s: float = 1.0,
    ) -> None:
        # Settings are shown by `describe()`; the token and the client never are.
        super().__init__(
            base_url=base_url,
            max_concurrency=max_concurrency,
            creates_per_minute=creates_per_minute,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
            sync_wait_s=sync_wait_s,
            max_download_bytes=max_download_bytes,
            max_result_bytes=max_result_bytes,
            max_outputs_per_n=max_outputs_per_n,
            data_url_max_bytes=data_url_max_bytes,
            max_retries=max_retries,
            retry_base_delay=retry_base_delay,
            reconcile_delay_s=reconcile_delay_s,
        )
        self._api_token = api_token
        self._base_url = base_url
        self._client = client
        self._max_concurrency = max_concurrency
        self._max_download_bytes = max_download_bytes
        self._max_result_bytes = max_result_bytes
        self._max_outputs_per_n = max_outputs_per_n
        self._data_url_max_bytes = data_url_max_bytes
        # The backend's own default; the policy layer's backoff cap, jitter and Retry-After cap apply.
        self._retry = RetryPolicy(attempts=max_retries, backoff_base_s=retry_base_delay)
        # A sliding window, not a bucket: Replicate's rule is any 600 creates within a minute.
        self._creates = RateLimiter(creates_per_minute, sliding=True)
        self._slots = ConcurrencyLimiter(max_concurrency)
        self._pacer = PollPacer(min_s=poll_interval, max_s=max_poll_interval)
        self._sync_wait_s = sync_wait_s
        self._reconcile_delay_s = reconcile_delay_s
        self._transport: ReplicateTransport | None = None
        self._catalog = ModelCatalog(
            lambda owner, name: self._connect().get_model(owner, name),
            lambda owner, name, version: self._connect().get_version(owner, name, version),
        )

    # -- the contract -----------------------------------------------------------------------------

    async def capabilities(self, model: str) -> Capabilities:
        """What `model` can do: tasks from the curated table or its schema, limits from its schema."""
        return (await self._catalog.resolve(model)).capabilities()

    async def revision(self, model: str) -> str | None:
        """The version id predictions of `model` run on (what the result cache keys on).

        An official model run by name has no version pinned: None, and its cache key holds the
        name alone.
        """
        return (await self._catalog.resolve(model)).version

    async def run(self, request: Request, model: str, ctx: RunContext) -> Result:
        """Run `request` on `model` as one Replicate prediction.

        The client has already split `n` by `capabilities(model)` (`mediagen.runners.split`): a
        request for more outputs than one prediction makes is refused here, never split again.

        Args:
            request: The request.
            model: `owner/name` or `owner/name:<version>`.
            ctx: Deadline, events, warnings.

        Returns:
            The result; artifacts are lazy URLs unless `options={"download": True}`.

        Raises:
            UnsupportedRequestError: The model cannot do the task, or `n` is more than one
                prediction makes (run it through `mediagen.Client`, which splits `n`).
        """
        started = time.monotonic()

        # 1. Check the request: its options, the model, the task, and n against one prediction.
        options = ReplicateOptions.parse(request.options, model=model)
        info = await self._catalog.resolve(model)
        capabilities = info.capabilities()
        if request.task not in capabilities.tasks:
            raise UnsupportedRequestError(
                f"{PROVIDER}:{model} cannot do {request.task} (it does {', '.join(sorted(capabilities.tasks))})",
                feature=request.task,
                provider=PROVIDER,
                model=model,
            )
        per_call = _outputs_per_call(request, capabilities)
        if request.n > per_call:
            raise UnsupportedRequestError(
                f"{PROVIDER}:{model} makes at most {per_call} output(s) per prediction"
                f"{' with a seed' if request.seed is not None else ''}, n is {request.n}; "
                "run it through mediagen.Client, which splits n into several predictions",
                feature="n",
                provider=PROVIDER,
                model=model,
            )

        # 2. Map the request onto the model's inputs; validate them before sending anything.
        mapped = build_inputs(request, info, ctx, raw=options.model_inputs)
        seed = request.seed if mapped.seed_inputs else None
        [inputs] = inputs_per_call(info, mapped, [(seed, request.n)])

        # 3. Send input media by reference where it already is a URL, inline when small, else uploaded.
        transport = self._connect()
        inputs = await media_to_inputs(inputs, upload=transport.upload, inline_max_bytes=self._data_url_max_bytes)

        # 4. Run the prediction (rate-limited, sync wait first, cancelled with the job).
        target = Target(info.ref.owner, info.ref.name, info.version)
        wait_s = None if options.wait is None or options.wait is True else int(options.wait)
        prediction = await transport.run(
            target,
            inputs,
            ctx=ctx,
            model=model,
            reporter=LogReporter(ctx.progress, ctx.log),
            wait_s=wait_s,
            extra=webhook_fields(options.webhook, options.webhook_events_filter),
        )

        # 5. Turn outputs into artifacts (lazy URLs, or downloaded now when asked).
        artifacts, seeds = self._artifacts(request, info, prediction, seed)
        download_s = None
        if options.download:
            fetching = time.monotonic()
            artifacts = await download_all(
                artifacts,
                client=transport.connection.downloads,
                max_bytes=self._max_download_bytes,
                retry=transport.retry_for(ctx),
            )
            download_s = time.monotonic() - fetching
        warn_if_short(request, model, artifacts, ctx)

        # 6. The result, with what Replicate measured.
        return Result(
            artifacts=artifacts,
            provider=PROVIDER,
            model=model,
            seeds=seeds,
            timings=_timings(prediction, download_s, time.monotonic() - started),
            usage=_usage(request, prediction, mapped),
            warnings=list(ctx.warnings),
            raw=prediction,
        )

    async def aclose(self) -> None:
        """Close the connections this backend opened (a client passed in stays open)."""
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.connection.aclose()

    @classmethod
    def availability(cls) -> str | None:
        """Why the backend cannot run here: no token in the environment (the constructor may still get one)."""
        if not os.environ.get(ENV_TOKEN):
            return f"{ENV_TOKEN} is not set (or pass api_token= to ReplicateBackend)"
        return None

    def describe(self) -> dict[str, Any]:
        """Endpoint, limits, what is in flight, models resolved and requests sent."""
        transport = self._transport
        return {
            "base_url": transport.connection.base_url if transport else self._base_url or "(from the environment)",
            "max_concurrency": self._max_concurrency,
            "in_flight": self._slots.in_use,
            "waiting": self._slots.waiting,
            "creates_per_minute": self.settings["creates_per_minute"],
            "models": self._catalog.cached,
            "requests": dict(transport.stats) if transport else {},
        }

    def __repr__(self) -> str:
        where = self._transport.connection.base_url if self._transport else self._base_url or "env"
        return f"<ReplicateBackend {where} max_concurrency={self._max_concurrency}>"

    # -- helpers ----------------------------------------------------------------------------------

    def _connect(self) -> ReplicateTransport:
        """The transport, built on first use (a missing token is reported then, not at import)."""
        if self._transport is None:
            connection = ReplicateConnection(
                api_token=self._api_token,
                base_url=self._base_url,
                client=self._client,
                max_connections=(self._max_concurrency or 256) + 16,
            )
            self._transport = ReplicateTransport(
                connection,
                retry=self._retry,
                creates=self._creates,
                slots=self._slots,
                pacer=self._pacer,
                sync_wait_s=self._sync_wait_s,
                reconcile_delay_s=self._reconcile_delay_s,
            )
        return self._transport

    def _artifacts(
        self, request: Request, info: ModelInfo, prediction: Prediction, seed: int | None
    ) -> tuple[list[Artifact], list[int | None]]:
        if seed is None and request.n == 1:
            seed = _logged_seed(prediction)  # Cog models print the seed they drew
        # Bounded before any artifact is made: so many outputs, so many bytes in all.
        count = sum(1 for _ in output_urls(prediction.get("output")))
        check_output_count(count, request.n, per_n=self._max_outputs_per_n, model=f"{PROVIDER}:{info.ref}")
        found = artifacts_from_output(
            prediction.get("output"),
            kind=request.modality,
            order=info.curated.outputs if info.curated else (),
            max_bytes=self._max_download_bytes,
            metadata={"provider": PROVIDER, "prediction": prediction.get("id"), "seed": seed},
            budget=ByteBudget(self._max_result_bytes, what=f"the outputs of {PROVIDER}:{info.ref}"),
        )
        if not found:
            raise GenerationFailedError(
                f"prediction {prediction.get('id')} succeeded but its output holds no media URL: "
                f"{str(prediction.get('output'))[:200]}",
                provider=PROVIDER,
                model=str(info.ref),
                retryable=False,
            )
        # A seeded request comes one output per prediction (see `_outputs_per_call`): output i has seed + i.
        seeds = [seed if seed is None or request.n == 1 else seed + i for i in range(len(found))]
        # Every prediction names its file `out-0.<ext>`: numbered per result (the client numbers merged ones).
        name_outputs(found)
        return found, seeds


def _outputs_per_call(request: Request, capabilities: Capabilities) -> int:
    """Most outputs one prediction makes for this request (what the client split `n` by)."""
    limit = capabilities.max_outputs_per_call or 1
    if request.seed is not None and capabilities.max_seeded_outputs_per_call is not None:
        limit = min(limit, capabilities.max_seeded_outputs_per_call)
    return limit


def _logged_seed(prediction: Mapping[str, Any]) -> int | None:
    logs = prediction.get("logs")
    match = _SEED_LOG.search(logs) if isinstance(logs, str) else None
    return int(match[1]) if match else None


def _timings(prediction: Prediction, download_s: float | None, total_s: float) -> Timings:
    created = parse_time(prediction.get("created_at"))
    began = parse_time(prediction.get("started_at"))
    predict = (prediction.get("metrics") or {}).get("predict_time")
    return Timings(
        queue_s=max(0.0, (began - created).total_seconds()) if created is not None and began is not None else None,
        run_s=float(predict) if isinstance(predict, (int, float)) else None,
        download_s=download_s,
        total_s=total_s,
    )


def _usage(request: Request, prediction: Prediction, mapped: MappedInputs) -> Usage:
    predict = (prediction.get("metrics") or {}).get("predict_time")
    usage = Usage(predict_s=float(predict) if isinstance(predict, (int, float)) else None)
    duration = getattr(request, "duration_s", None)
    if duration is not None and "duration_s" in mapped.sources.values():
        if request.modality == "audio":
            usage.audio_s = float(duration) * request.n
        elif request.modality == "video":
            usage.video_s = float(duration) * request.n
    return usage
