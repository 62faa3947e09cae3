"""The fal backend: mediagen requests, run as jobs on fal's queue.

`FalBackend.run` reads top to bottom: check the request against the app, map it onto the app's
input and check it, send input media, run the jobs, and turn their outputs into artifacts. The parts
live next door: `client.py` (key and endpoints), `apps.py` (app ids and their URLs), `mapping.py`
(requests into inputs), `transport.py` (jobs over HTTP), `outputs.py` (media in and out),
`options.py`. Retries and limits are mediagen's shared ones (`mediagen.policies`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from mediagen._config import DEFAULT_MAX_DOWNLOAD_BYTES, DEFAULT_MAX_OUTPUTS_PER_N, DEFAULT_MAX_RESULT_BYTES
from mediagen._download import ByteBudget
from mediagen.artifacts import Artifact
from mediagen.backend import Backend, Capabilities, RunContext
from mediagen.errors import GenerationFailedError, UnsupportedRequestError
from mediagen.hosted import check_output_count, download_all, warn_if_short
from mediagen.policies import ConcurrencyLimiter, RateLimiter, RetryPolicy
from mediagen.requests import TASKS, Request
from mediagen.results import Result, Timings, Usage

from .apps import AppId
from .client import FalConnection, find_key
from .errors import ENV_KEY, PROVIDER
from .mapping import MappedInputs, build_inputs, check_inputs, spec_for
from .options import FalOptions
from .outputs import DEFAULT_INLINE_MAX_BYTES, artifacts_from_output, media_to_inputs, output_files
from .transport import FalJob, FalTransport, LogReporter

__all__ = ["DEFAULT_MAX_CONCURRENCY", "DEFAULT_MAX_CONNECTIONS", "FalBackend"]

DEFAULT_MAX_CONNECTIONS = 100
"""Sockets to the queue (and, separately, to the file host) at once: httpx's default, which the
official client uses too."""
DEFAULT_MAX_CONCURRENCY = 256
"""Jobs followed at once. fal's own queue holds what its per-account cap does not run yet, so this
only bounds the polling and sockets on our side (the same default as Replicate's backend)."""


class FalBackend(Backend):
    """Runs mediagen requests on fal (`model="fal:fal-ai/flux/schnell"`, any app id).

    Apart from `__init__`, all methods are private or part of the contract.

    Args:
        key: API key; defaults to `$FAL_KEY` (or `$FAL_KEY_ID:$FAL_KEY_SECRET`). Never in mediagen.toml.
        base_url: Queue root (`[providers.fal] base_url`); defaults to `https://$FAL_QUEUE_RUN_HOST`,
            else `https://queue.fal.run`.
        storage_url: Where input uploads are initiated; defaults to `https://rest.fal.ai`.
        max_concurrency: Jobs in flight at once (None: no cap).
        submits_per_minute: Submits allowed per minute (None: no limit of ours; a 429 still holds
            every submit back for its `Retry-After`).
        poll_interval: First wait between status polls, in seconds (it grows by half each poll).
        max_poll_interval: Longest wait between polls.
        max_download_bytes: Size cap of each output download.
        max_result_bytes: Size cap of all of one result's output downloads together.
        max_outputs_per_n: Most output files accepted from a job per output it was asked for (more
            is a broken or hostile answer: refused before anything is fetched).
        data_url_max_bytes: Largest input file sent inline as a data URL; larger ones are uploaded.
        max_retries: Tries of each call, the first included (submits only while provably not queued);
            a job's `policy.retry` replaces this and `retry_base_delay`.
        retry_base_delay: First backoff between tries, in seconds (doubling, with jitter).
        max_connections: Sockets to fal's queue at once. Every queue call is short (no call waits
            for a job), so a small pool serves many jobs; a big one costs time, since the pool scans
            all its connections for each request.

    Examples:
        >>> async with mg.Client() as client:  # doctest: +SKIP
        ...     res = await client.image("a red fox in snow", model="fal:fal-ai/flux/schnell", seed=7)
        ...     res.artifacts[0].save("fox.png")
    """

    provider = "fal"
    tasks = frozenset(TASKS)
    remote = True
    # Only this backend knows which calls can be repeated without queueing a second billable job,
    # so the client must never re-run a whole `run`; the job's retry policy reaches the transport.
    handles_retries = True

    def __init__(
        self,
        *,
        key: str | None = None,
        base_url: str | None = None,
        storage_url: str | None = None,
        max_concurrency: int | None = DEFAULT_MAX_CONCURRENCY,
        submits_per_minute: int | None = None,
        poll_interval: float = 0.25,
        max_poll_interval: float = 5.0,
        max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        max_outputs_per_n: int = DEFAULT_MAX_OUTPUTS_PER_N,
        data_url_max_bytes: int = DEFAULT_INLINE_MAX_BYTES,
        max_retries: int = 10,
        retry_base_delay: float = 0.2,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        # Settings are shown by `describe()`; the key never is.
        super().__init__(
            base_url=base_url,
            storage_url=storage_url,
            max_concurrency=max_concurrency,
            submits_per_minute=submits_per_minute,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
            max_download_bytes=max_download_bytes,
            max_result_bytes=max_result_bytes,
            max_outputs_per_n=max_outputs_per_n,
            data_url_max_bytes=data_url_max_bytes,
            max_retries=max_retries,
            retry_base_delay=retry_base_delay,
            max_connections=max_connections,
        )
        self._key = key
        self._max_connections = max_connections
        self._base_url = base_url
        self._storage_url = storage_url
        self._max_concurrency = max_concurrency
        self._max_download_bytes = max_download_bytes
        self._max_result_bytes = max_result_bytes
        self._max_outputs_per_n = max_outputs_per_n
        self._data_url_max_bytes = data_url_max_bytes
        self._retry = RetryPolicy(attempts=max_retries, backoff_base_s=retry_base_delay)
        self._submits = RateLimiter(submits_per_minute, sliding=True) if submits_per_minute else RateLimiter(None)
        self._slots = ConcurrencyLimiter(max_concurrency)
        self._poll = (poll_interval, max_poll_interval)
        self._transport: FalTransport | None = None

    # -- the contract -----------------------------------------------------------------------------

    async def capabilities(self, model: str) -> Capabilities:
        """What the app can do: from the curated table, else every task with one output per job."""
        spec, curated = spec_for(AppId.parse(model).submit_path)
        if not curated:
            # An unknown app takes `num_images`, or makes one output: the client splits `n` for us
            # only when we say one per call, which is the safe reading.
            return Capabilities(tasks=frozenset(TASKS), max_outputs_per_call=1)
        return spec.capabilities()

    async def run(self, request: Request, model: str, ctx: RunContext) -> Result:
        """Run `request` on fal app `model` as one or more queue jobs.

        Args:
            request: The request.
            model: The app id (`fal-ai/flux/schnell`, `owner/alias/path`).
            ctx: Deadline, events, warnings.

        Returns:
            The result; artifacts are lazy URLs unless `options={"download": True}`.
        """
        started = time.monotonic()

        # 1. Check the request: its options, the app id, and whether the app does this task.
        options = FalOptions.parse(request.options, model=model)
        app = AppId.parse(model)
        spec, curated = spec_for(app.submit_path)
        if request.task not in spec.tasks:
            raise UnsupportedRequestError(
                f"{PROVIDER}:{model} cannot do {request.task} (it does {', '.join(sorted(spec.tasks))})",
                feature=request.task,
                provider=PROVIDER,
                model=model,
            )

        # 2. Map the request onto the app's input; check every job's input before sending any.
        mapped = build_inputs(request, app.submit_path, ctx, raw=options.app_inputs)
        jobs = _plan_jobs(request, mapped, spec.max_outputs if curated else request.n)
        per_job = [mapped.for_job(seed=seed, outputs=outputs) for seed, outputs in jobs]
        for inputs in per_job:
            check_inputs(inputs, app.submit_path, sources=mapped.sources)

        # 3. Send input media by reference where it already is a URL, inline when small, else uploaded:
        #    once for the request, whatever the number of jobs that read it.
        transport = self._connect()
        sent = await media_to_inputs(mapped.inputs, upload=transport.upload, inline_max_bytes=self._data_url_max_bytes)
        per_job = [replace(mapped, inputs=sent).for_job(seed=seed, outputs=outputs) for seed, outputs in jobs]

        # 4. Run the jobs together (cancelled with the mediagen job, and with each other on failure).
        headers = _headers(options)
        progress = _ProgressMux(ctx, len(per_job))
        done = await _all_or_none(
            transport.run(app, inputs, ctx=ctx, reporter=progress.reporter(i), headers=headers, webhook=options.webhook)
            for i, inputs in enumerate(per_job)
        )

        # 5. Turn outputs into artifacts (lazy URLs, or downloaded now when asked).
        artifacts, seeds = self._artifacts(request, model, spec.outputs, done, jobs)
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

        # 6. The result, with what fal measured.
        return Result(
            artifacts=artifacts,
            provider=PROVIDER,
            model=model,
            seeds=seeds,
            timings=_timings(done, download_s, time.monotonic() - started),
            usage=_usage(request, done, mapped),
            warnings=list(ctx.warnings),
            raw=done[0].raw() if len(done) == 1 else [job.raw() for job in done],
        )

    async def aclose(self) -> None:
        """Close the connections this backend opened."""
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.connection.aclose()

    @classmethod
    def availability(cls) -> str | None:
        """Why the backend cannot run here: no key in the environment (the constructor may still get one)."""
        if not find_key():
            return f"{ENV_KEY} is not set (or pass key= to FalBackend)"
        return None

    def describe(self) -> dict[str, Any]:
        """Endpoints, limits, what is in flight and requests sent."""
        transport = self._transport
        return {
            "base_url": transport.connection.base_url if transport else self._base_url or "(from the environment)",
            "storage_url": transport.connection.storage_url if transport else self._storage_url or "(default)",
            "max_concurrency": self._max_concurrency,
            "in_flight": self._slots.in_use,
            "waiting": self._slots.waiting,
            "requests": dict(transport.stats) if transport else {},
        }

    def __repr__(self) -> str:
        where = self._transport.connection.base_url if self._transport else self._base_url or "env"
        return f"<FalBackend {where} max_concurrency={self._max_concurrency}>"

    # -- helpers ----------------------------------------------------------------------------------

    def _connect(self) -> FalTransport:
        """The transport, built on first use (a missing key is reported then, not at import)."""
        if self._transport is None:
            connection = FalConnection(
                key=self._key,
                base_url=self._base_url,
                storage_url=self._storage_url,
                max_connections=self._max_connections,
            )
            self._transport = FalTransport(
                connection,
                retry=self._retry,
                submits=self._submits,
                slots=self._slots,
                poll_interval=self._poll[0],
                max_poll_interval=self._poll[1],
            )
        return self._transport

    def _artifacts(
        self,
        request: Request,
        model: str,
        order: Sequence[str],
        jobs: Sequence[FalJob],
        plan: Sequence[tuple[int | None, int]],
    ) -> tuple[list[Artifact], list[int | None]]:
        artifacts: list[Artifact] = []
        seeds: list[int | None] = []
        # Bounded before any artifact is made: so many outputs per job, so many bytes in all.
        budget = ByteBudget(self._max_result_bytes, what=f"the outputs of {PROVIDER}:{model}")
        for job, (seed, outputs) in zip(jobs, plan, strict=True):
            if seed is None and isinstance(job.output.get("seed"), int):
                seed = job.output["seed"]  # fal's image apps report the seed they drew
            count = sum(1 for _ in output_files(job.output, order))
            check_output_count(count, outputs, per_n=self._max_outputs_per_n, model=f"{PROVIDER}:{model}")
            found = artifacts_from_output(
                job.output,
                kind=request.modality,
                order=order,
                max_bytes=self._max_download_bytes,
                metadata={"provider": PROVIDER, "request_id": job.request_id, "seed": seed},
                budget=budget,
            )
            if not found:
                raise GenerationFailedError(
                    f"fal request {job.request_id} completed but its output holds no file: {str(job.output)[:200]}",
                    provider=PROVIDER,
                    model=model,
                    retryable=False,
                )
            artifacts += found
            seeds += [seed if outputs == 1 or seed is None else seed + i for i in range(len(found))]
        return artifacts, seeds


def _plan_jobs(request: Request, mapped: MappedInputs, per_job: int) -> list[tuple[int | None, int]]:
    """`(seed, outputs)` of each job: one per seed when seeded, else as few as the app allows."""
    if request.seed is not None and mapped.seed_input is not None:
        # Output i must come from seed + i, which one batch of num_images cannot promise.
        return [(seed, 1) for seed in request.seeds()]
    per_job = max(1, per_job) if mapped.outputs_input else 1
    jobs: list[tuple[int | None, int]] = []
    left = request.n
    while left > 0:
        jobs.append((None, min(per_job, left)))
        left -= jobs[-1][1]
    return jobs


def _headers(options: FalOptions) -> dict[str, str]:
    headers: dict[str, str] = {}
    if options.priority is not None:
        headers["X-Fal-Queue-Priority"] = options.priority
    if options.hint is not None:
        headers["X-Fal-Runner-Hint"] = options.hint
    if options.start_timeout is not None:
        headers["X-Fal-Request-Timeout"] = f"{options.start_timeout:g}"
    return headers


async def _all_or_none(calls: Any) -> list[FalJob]:
    """Await the jobs together; when one fails, cancel the others (each cancels its fal job)."""
    tasks: list[asyncio.Future[FalJob]] = [asyncio.ensure_future(c) for c in calls]
    if len(tasks) == 1:
        return [await tasks[0]]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class _ProgressMux:
    """One progress bar for several jobs of one request: the sum of their steps."""

    def __init__(self, ctx: RunContext, parts: int) -> None:
        self._ctx = ctx
        self._parts: list[tuple[int, int]] = [(0, 0)] * parts

    def reporter(self, index: int) -> LogReporter:
        def progress(step: int, total: int) -> None:
            self._parts[index] = (step, total)
            widest = max(t for _, t in self._parts)
            # A part that has not reported yet is counted as long as the longest one seen.
            self._ctx.progress(sum(s for s, _ in self._parts), sum(t or widest for _, t in self._parts))

        return LogReporter(progress, self._ctx.log)


def _timings(jobs: Sequence[FalJob], download_s: float | None, total_s: float) -> Timings:
    queue = [j.started_at - j.submitted_at for j in jobs if j.started_at is not None]
    run = [
        float(j.status["metrics"]["inference_time"])
        for j in jobs
        if isinstance((j.status.get("metrics") or {}).get("inference_time"), (int, float))
    ]
    # The jobs ran side by side: the slowest one is what the caller waited for.
    return Timings(
        queue_s=max(queue) if queue else None, run_s=max(run) if run else None, download_s=download_s, total_s=total_s
    )


def _usage(request: Request, jobs: Sequence[FalJob], mapped: MappedInputs) -> Usage:
    inference = [
        float(j.status["metrics"]["inference_time"])
        for j in jobs
        if isinstance((j.status.get("metrics") or {}).get("inference_time"), (int, float))
    ]
    usage = Usage(predict_s=sum(inference) if inference else None)
    duration = getattr(request, "duration_s", None)
    if duration is not None and "duration_s" in mapped.sources.values():
        if request.modality == "audio":
            usage.audio_s = float(duration) * request.n
        elif request.modality == "video":
            usage.video_s = float(duration) * request.n
    return usage
