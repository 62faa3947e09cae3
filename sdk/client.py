"""The async client: one surface for every modality and backend."""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from ._config import DEFAULT_MAX_CONCURRENT_CALLS, Config, load_config
from .backend import Backend, Capabilities, RunContext
from .errors import (
    AllBackendsFailedError,
    DeadlineExceededError,
    InvalidRequestError,
    MediagenError,
    ModelNotFoundError,
    UnsupportedRequestError,
)
from .events import Event, Started
from .jobs import Job
from .registry import available_providers, get_backend_class, parse_model
from .requests import AudioRequest, ImageRequest, MeshRequest, Request, VideoRequest, request_class
from .results import GenerationWarning, Result, Timings, Usage
from .routing import Cooldowns, should_fall_back

__all__ = ["Client", "USE_CLIENT_DEFAULT", "ModelArg"]

logger = logging.getLogger("mediagen")

ModelArg = str | Sequence[str] | None
"""A model string, an alias, a list of them (a fallback chain), or None for the configured default."""


class _UseClientDefault(enum.Enum):
    """Tells "not given: use the client's setting" from `None` ("explicitly off")."""

    token = 0

    def __repr__(self) -> str:
        return "USE_CLIENT_DEFAULT"


USE_CLIENT_DEFAULT = _UseClientDefault.token
"""Sentinel default of per-call settings such as `timeout` (where None means "no deadline")."""

Timeout = float | None | _UseClientDefault


class _State(enum.Enum):
    OPEN = 1
    CLOSED = 2


class _BaseClient:
    """All that does no I/O: configuration, model strings, aliases, request building."""

    def __init__(
        self,
        *,
        config: Config | str | os.PathLike[str] | None = None,
        timeout: float | _UseClientDefault | None = USE_CLIENT_DEFAULT,
        strict: bool | None = None,
        providers: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.config = config if isinstance(config, Config) else load_config(config)
        self.timeout: float | None = self.config.timeout if isinstance(timeout, _UseClientDefault) else timeout
        self.strict = self.config.strict if strict is None else strict
        self._provider_settings: dict[str, dict[str, Any]] = {
            name: dict(values) for name, values in self.config.providers.items()
        }
        for name, values in (providers or {}).items():
            self._provider_settings.setdefault(name, {}).update(values)

    def resolve_models(self, model: ModelArg, modality: str) -> list[tuple[str, str]]:
        """Turn a model argument into the chain of `(provider, model)` to try, in order.

        Raises:
            ModelNotFoundError: No model was given and none is configured, or a string is malformed.
        """
        if model is None:
            default = self.config.defaults.get(modality)  # type: ignore[call-overload]
            if default is None:
                raise ModelNotFoundError(
                    f"no model given and no default {modality} model configured: pass "
                    f"model='provider:model' (e.g. 'test:fake' to try things out), or set "
                    f"[defaults] {modality} = '...' in mediagen.toml"
                )
            model = default
        specs = [model] if isinstance(model, str) else list(model)
        if not specs:
            raise ModelNotFoundError("an empty list of models was given; name at least one")
        chain: list[tuple[str, str]] = []
        seen: set[str] = set()

        def add(spec: str, depth: int) -> None:
            if depth > 8:
                raise ModelNotFoundError(f"alias {spec!r} refers to itself (directly or through others)")
            if spec in self.config.aliases:
                target = self.config.aliases[spec]
                for item in [target] if isinstance(target, str) else target:
                    add(item, depth + 1)
                return
            if spec not in seen:
                seen.add(spec)
                chain.append(parse_model(spec))

        for spec in specs:
            add(spec, 0)
        return chain

    def build_request(self, modality: str, **fields: Any) -> Request:
        """Build and validate a request from keyword fields.

        Raises:
            InvalidRequestError: A field is missing, unknown or out of range (the message lists each).
        """
        cls = request_class(modality)
        try:
            return cls(**fields)  # type: ignore[return-value]
        except ValidationError as exc:
            raise _invalid(exc, cls.__name__) from exc

    def _timeout(self, timeout: Timeout) -> float | None:
        return self.timeout if isinstance(timeout, _UseClientDefault) else timeout


def _invalid(exc: ValidationError, what: str) -> InvalidRequestError:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "request"
        msg = str(err["msg"]).removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}")
    errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
    return InvalidRequestError(f"invalid {what}:\n" + "\n".join(lines), errors=errors)


class Client(_BaseClient):
    """The async client.

    Args:
        config: A `Config`, or the path of a `mediagen.toml`; by default the file found through
            `$MEDIAGEN_CONFIG`, the working directory, or `~/.config/mediagen/`.
        timeout: Default deadline in seconds for each job (None: no deadline).
        strict: Raise `UnsupportedRequestError` instead of warning when a backend cannot honour a
            setting.
        backends: Ready backend instances by provider name (they are closed with the client).
        providers: Settings for backend constructors by provider name, over the config's.
        max_concurrent_calls: How many backend calls one request split by `n` runs at once.

    Examples:
        >>> async with mg.Client() as client:  # doctest: +SKIP
        ...     res = await client.image("a red fox", model="test:fake", n=2, seed=7)
        ...     res.artifacts[0].save("fox.png")
    """

    def __init__(
        self,
        *,
        config: Config | str | os.PathLike[str] | None = None,
        timeout: float | _UseClientDefault | None = USE_CLIENT_DEFAULT,
        strict: bool | None = None,
        backends: Mapping[str, Backend] | None = None,
        providers: Mapping[str, Mapping[str, Any]] | None = None,
        max_concurrent_calls: int = DEFAULT_MAX_CONCURRENT_CALLS,
    ) -> None:
        super().__init__(config=config, timeout=timeout, strict=strict, providers=providers)
        self._backends: dict[str, Backend] = dict(backends or {})
        self._backend_locks: dict[str, asyncio.Lock] = {}
        self._jobs: set[Job] = set()
        self._state = _State.OPEN
        self._max_concurrent_calls = max(1, max_concurrent_calls)
        self.cooldowns = Cooldowns()

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        self._check_open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel unfinished jobs and close every backend. Safe to call twice."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        pending = [job for job in self._jobs if not job.done()]
        await asyncio.gather(*(job.cancel("client closed") for job in pending), return_exceptions=True)
        backends, self._backends = list(self._backends.values()), {}
        for backend in backends:
            try:
                await backend.aclose()
            except Exception:  # one backend failing to close must not keep the others open
                logger.exception("closing the %s backend failed", backend.provider)

    def _check_open(self) -> None:
        if self._state is _State.CLOSED:
            raise RuntimeError("this mediagen.Client is closed; create a new one")

    async def backend(self, provider: str) -> Backend:
        """The client's backend for a provider, created on first use from its settings.

        Raises:
            ModelNotFoundError: No such provider.
            ImportError: The provider's extra is not installed.
        """
        self._check_open()
        if provider in self._backends:
            return self._backends[provider]
        lock = self._backend_locks.setdefault(provider, asyncio.Lock())
        async with lock:
            if provider not in self._backends:
                cls = get_backend_class(provider)
                self._backends[provider] = cls(**self._provider_settings.get(provider, {}))
        return self._backends[provider]

    # -- the one entry point: submit ------------------------------------------------------------

    def submit(
        self,
        request: Request,
        *,
        model: ModelArg = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        strict: bool | None = None,
    ) -> Job:
        """Start a generation in the background and return its `Job` at once.

        Args:
            request: What to generate.
            model: Model string, alias, or a list of them tried in order; None for the default.
            timeout: One deadline in seconds for the whole job (queue, run, download).
            strict: Override the client's strictness for this job.

        Raises:
            InvalidRequestError: `request` is not a request (or fails validation).
            ModelNotFoundError: The model string is malformed or no default is configured.
            RuntimeError: The client is closed, or no event loop is running.
        """
        self._check_open()
        if not isinstance(request, (ImageRequest, VideoRequest, AudioRequest, MeshRequest)):
            raise InvalidRequestError(
                f"expected an ImageRequest, VideoRequest, AudioRequest or MeshRequest, got {type(request).__name__}"
            )
        chain = self.resolve_models(model, request.modality)
        seconds = self._timeout(timeout)
        if seconds is not None and seconds <= 0:
            raise InvalidRequestError(f"timeout must be positive seconds or None, got {seconds}")
        deadline = None if seconds is None else time.monotonic() + seconds
        ctx = RunContext(deadline=deadline, strict=self.strict if strict is None else strict)

        async def runner(job: Job) -> Result:
            return await self._execute(job, request, chain, ctx, seconds)

        job = Job(runner, request=request, model=model, ctx=ctx)
        ctx.job_id = job.id
        ctx._emit = job.emit
        self._jobs.add(job)
        job._task.add_done_callback(lambda _: self._jobs.discard(job))
        return job

    async def generate(
        self,
        request: Request,
        *,
        model: ModelArg = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        strict: bool | None = None,
        on_event: Callable[[Event], Any] | None = None,
    ) -> Result:
        """Generate what `request` asks for and wait for the result.

        Args:
            request: What to generate.
            model: Model string, alias, or a list of them tried in order; None for the default.
            timeout: One deadline in seconds for the whole job.
            strict: Override the client's strictness for this call.
            on_event: Called with each event (progress bars); may be a coroutine function.

        Raises:
            MediagenError: The generation failed (see the error tree).
            asyncio.CancelledError: The call was cancelled; the job is cancelled with it.
        """
        job = self.submit(request, model=model, timeout=timeout, strict=strict)
        try:
            if on_event is not None:
                async for event in job.events():
                    out = on_event(event)
                    if asyncio.iscoroutine(out):
                        await out
            return await job.result()
        except asyncio.CancelledError:
            await job.cancel()
            raise

    async def image(
        self,
        prompt: str,
        *,
        model: ModelArg = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        strict: bool | None = None,
        on_event: Callable[[Event], Any] | None = None,
        **fields: Any,
    ) -> Result:
        """Generate images. `fields` are `ImageRequest` fields (`n`, `seed`, `width`, `image` ...).

        Examples:
            >>> res = await client.image("a red fox", model="test:fake", width=64, height=64)  # doctest: +SKIP
        """
        request = self.build_request("image", prompt=prompt, **fields)
        return await self.generate(request, model=model, timeout=timeout, strict=strict, on_event=on_event)

    async def video(
        self,
        prompt: str | None = None,
        *,
        model: ModelArg = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        strict: bool | None = None,
        on_event: Callable[[Event], Any] | None = None,
        **fields: Any,
    ) -> Result:
        """Generate a video. `fields` are `VideoRequest` fields (`image`, `frames`, `fps` ...)."""
        request = self.build_request("video", prompt=prompt, **fields)
        return await self.generate(request, model=model, timeout=timeout, strict=strict, on_event=on_event)

    async def audio(
        self,
        prompt: str,
        *,
        model: ModelArg = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        strict: bool | None = None,
        on_event: Callable[[Event], Any] | None = None,
        **fields: Any,
    ) -> Result:
        """Generate sound. `fields` are `AudioRequest` fields (`kind`, `duration_s`, `voice` ...)."""
        request = self.build_request("audio", prompt=prompt, **fields)
        return await self.generate(request, model=model, timeout=timeout, strict=strict, on_event=on_event)

    async def mesh(
        self,
        prompt: str | None = None,
        *,
        model: ModelArg = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        strict: bool | None = None,
        on_event: Callable[[Event], Any] | None = None,
        **fields: Any,
    ) -> Result:
        """Generate a 3D mesh. `fields` are `MeshRequest` fields (`image`, `format` ...)."""
        request = self.build_request("mesh", prompt=prompt, **fields)
        return await self.generate(request, model=model, timeout=timeout, strict=strict, on_event=on_event)

    # -- running a job --------------------------------------------------------------------------

    async def _execute(
        self, job: Job, request: Request, chain: list[tuple[str, str]], ctx: RunContext, seconds: float | None
    ) -> Result:
        started = time.monotonic()
        try:
            if seconds is None:
                result = await self._run_chain(request, chain, ctx)
            else:
                result = await asyncio.wait_for(self._run_chain(request, chain, ctx), seconds)
        except asyncio.TimeoutError as exc:
            ctx.cancelled.set()
            raise DeadlineExceededError(
                f"the job did not finish within its {seconds:g} s deadline and was cancelled; "
                "raise timeout= or make the request smaller",
                provider=ctx.provider or None,
                model=ctx.model or None,
            ) from exc
        except asyncio.CancelledError:
            ctx.cancelled.set()
            raise
        result.timings.total_s = time.monotonic() - started
        for warning in result.warnings:
            logger.warning("%s: %s", result.model_string, warning)
        logger.info(
            "%s %s via %s: %d artifact(s) in %.2f s",
            request.modality,
            request.task,
            result.model_string,
            len(result.artifacts),
            result.timings.total_s,
        )
        return result

    async def _run_chain(self, request: Request, chain: list[tuple[str, str]], ctx: RunContext) -> Result:
        failures: list[tuple[str, BaseException]] = []
        notes: list[GenerationWarning] = []
        for index, (provider, model) in enumerate(chain):
            name = f"{provider}:{model}"
            last = index == len(chain) - 1
            if len(chain) > 1 and (left := self.cooldowns.cooling(name)) > 0 and not last:
                notes.append(GenerationWarning.other(f"skipped {name}: cooling down for {left:.0f} s after a failure"))
                continue
            try:
                result = await self._run_one(request, provider, model, ctx)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                if not isinstance(exc, Exception) or len(chain) == 1 or not should_fall_back(exc):
                    raise
                self.cooldowns.trip(name, exc)
                failures.append((name, exc))
                notes.append(GenerationWarning.other(f"{name} failed ({type(exc).__name__}: {exc}); tried the next"))
                continue
            self.cooldowns.clear(name)
            result.warnings = notes + result.warnings
            return result
        raise AllBackendsFailedError(
            "every model in the chain failed:\n" + "\n".join(f"  {n}: {e}" for n, e in failures),
            errors=failures,
            retryable=any(getattr(e, "retryable", False) for _, e in failures),
        )

    async def _run_one(self, request: Request, provider: str, model: str, ctx: RunContext) -> Result:
        # 1. Find the backend and check it can serve this task at all.
        backend = await self.backend(provider)
        ctx.provider, ctx.model = provider, model
        caps = await backend.capabilities(model)
        self._check_capabilities(request, provider, model, caps)

        # 2. Split n into calls the backend accepts, each with its own seeds.
        limit = caps.max_outputs_per_call or request.n
        sizes = [min(limit, request.n - start) for start in range(0, request.n, limit)]
        parts: list[Request] = []
        offset = 0
        for size in sizes:
            update: dict[str, Any] = {"n": size}
            if request.seed is not None:
                update["seed"] = (request.seed + offset) % 2**32
            parts.append(request.model_copy(update=update))
            offset += size

        # 3. Run them (a few at a time) and merge what comes back.
        ctx.emit(Started(provider=provider, model=model))
        ctx.warnings = []
        semaphore = asyncio.Semaphore(self._max_concurrent_calls)

        async def call(part: Request) -> Result:
            async with semaphore:
                return await backend.run(part, model, ctx)

        if len(parts) == 1:
            results = [await call(parts[0])]
        else:
            tasks = [asyncio.ensure_future(call(part)) for part in parts]
            try:
                results = list(await asyncio.gather(*tasks))
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        merged = _merge(results, provider, model)
        for warning in ctx.warnings:
            if warning not in merged.warnings:
                merged.warnings.append(warning)
        merged.warnings = [w if w.provider else w.model_copy(update={"provider": provider}) for w in merged.warnings]
        _fill_usage(merged)
        return merged

    def _check_capabilities(self, request: Request, provider: str, model: str, caps: Capabilities) -> None:
        task = request.task
        if task not in caps.tasks:
            could = [name for name in available_providers() if name != provider and _provider_claims(name, task)]
            hint = f"; providers that can: {', '.join(could)}" if could else ""
            raise UnsupportedRequestError(
                f"{provider}:{model} cannot do {task} (it does {', '.join(sorted(caps.tasks)) or 'nothing'}){hint}",
                feature=task,
                supported_by=could,
                provider=provider,
                model=model,
            )
        width = getattr(request, "width", None)
        height = getattr(request, "height", None)
        if caps.max_width and width and width > caps.max_width:
            raise UnsupportedRequestError(
                f"{provider}:{model} makes at most {caps.max_width} px wide; width is {width}",
                feature="width",
            )
        if caps.max_height and height and height > caps.max_height:
            raise UnsupportedRequestError(
                f"{provider}:{model} makes at most {caps.max_height} px high; height is {height}",
                feature="height",
            )
        frames = getattr(request, "frames", None)
        if caps.max_frames and frames and frames > caps.max_frames:
            raise UnsupportedRequestError(
                f"{provider}:{model} makes at most {caps.max_frames} frames; frames is {frames}",
                feature="frames",
            )
        duration = getattr(request, "duration_s", None)
        if caps.max_duration_s and duration and duration > caps.max_duration_s:
            raise UnsupportedRequestError(
                f"{provider}:{model} makes at most {caps.max_duration_s:g} s; duration_s is {duration:g}",
                feature="duration_s",
            )


def _provider_claims(name: str, task: str) -> bool:
    try:
        cls = get_backend_class(name)
    except (ImportError, MediagenError, RuntimeError, AttributeError):
        return False
    return task in cls.tasks and name != "test"


def _merge(results: list[Result], provider: str, model: str) -> Result:
    if len(results) == 1:
        result = results[0]
        result.provider = result.provider or provider
        result.model = result.model or model
        return result
    timings = Timings()
    usage = Usage()
    warnings: list[GenerationWarning] = []
    for r in results:
        timings = timings.merge(r.timings)
        usage = usage + r.usage
        warnings += [w for w in r.warnings if w not in warnings]
    return Result(
        artifacts=[a for r in results for a in r.artifacts],
        provider=provider,
        model=model,
        seeds=[s for r in results for s in r.seeds],
        timings=timings,
        usage=usage,
        warnings=warnings,
        raw=[r.raw for r in results],
    )


def _fill_usage(result: Result) -> None:
    # Backends report what they know; counts anyone can see are filled in here.
    usage = result.usage
    if not usage.images:
        usage.images = len(result.images)
    if not usage.meshes:
        usage.meshes = len(result.meshes)
    # Only what is already decoded is measured: decoding a video just to count pixels would cost more
    # than the number is worth.
    if not usage.megapixels:
        usage.megapixels = sum(img.width * img.height / 1e6 for img in result.images if img._has_decoded()) + sum(
            v.frames.shape[0] * v.frames.shape[1] * v.frames.shape[2] / 1e6 for v in result.videos if v._has_decoded()
        )
    if not usage.video_s:
        usage.video_s = sum(v.duration_s for v in result.videos if v._has_decoded())
    if not usage.audio_s:
        usage.audio_s = sum(a.duration_s for a in result.audios if a._has_decoded())
