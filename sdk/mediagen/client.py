"""The async client: one surface for every modality and backend."""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from ._config import DEFAULT_MAX_CONCURRENT_CALLS, Config, load_config
from ._fields import AudioFields, ImageFields, MeshFields, Unpack, VideoFields
from ._registry import get_backend_class, parse_model
from .artifacts import name_outputs
from .backend import Backend, Cancellation, RunContext
from .cache import CacheSettings, ResultCache, cache_key
from .errors import InvalidRequestError, ModelNotFoundError
from .events import Event
from .jobs import Job
from .ledger import Ledger, PriceTable
from .policies import Policy
from .provenance import stamp as stamp_provenance
from .requests import AudioRequest, ImageRequest, MeshRequest, Request, VideoRequest, request_class
from .results import Result
from .routing import Cooldowns
from .runners import (
    AttemptDeadline,
    Cached,
    CallBackend,
    Fallback,
    JobDeadline,
    Limited,
    ModelId,
    Retrying,
    Runner,
    SplitOutputs,
)
from .safety import install_log_redaction, register_secret

__all__ = ["Client", "USE_CLIENT_DEFAULT", "ModelArg", "CacheArg"]

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

CacheArg = bool | Literal["refresh"] | _UseClientDefault
"""Per call: True uses the result cache (even without a seed), False bypasses it, "refresh"
recomputes and replaces the entry; USE_CLIENT_DEFAULT caches seeded requests when the client has a cache."""


@dataclass(frozen=True)
class _Call:
    """Per-call settings that are not request fields."""

    cache: CacheArg = USE_CLIENT_DEFAULT
    provenance: bool = True
    policy: Policy | None = None


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
        self.timeout: float | None = _check_timeout(
            self.config.timeout if isinstance(timeout, _UseClientDefault) else timeout
        )
        self.strict = self.config.strict if strict is None else strict
        self._provider_settings: dict[str, dict[str, Any]] = {
            name: dict(values) for name, values in self.config.providers.items()
        }
        for name, values in (providers or {}).items():
            self._provider_settings.setdefault(name, {}).update(values)
        # `[providers.<name>.policy]` is the client's to enforce, not a backend constructor setting.
        self._policies: dict[str, Policy] = {}
        for name, values in self._provider_settings.items():
            if "policy" in values:
                try:
                    self._policies[name] = Policy.parse(values.pop("policy"))
                except ValueError as exc:
                    raise ValueError(f"[providers.{name}.policy] is invalid: {exc}") from exc

    def policy(self, provider: str) -> Policy:
        """The policy configured for a provider (`[providers.<name>.policy]`), or the defaults."""
        return self._policies.get(provider) or Policy()

    def resolve_models(self, model: ModelArg, modality: str) -> list[tuple[str, str]]:
        """Turn a model argument into the chain of `(provider, model)` to try, in order.

        Raises:
            InvalidRequestError: `model` is neither a string nor a list of strings.
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
        specs = _model_specs(model)
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
        return self.timeout if isinstance(timeout, _UseClientDefault) else _check_timeout(timeout)


def _check_timeout(timeout: object) -> float | None:
    """A timeout in seconds: None (no deadline), or a finite number above zero.

    Raises:
        InvalidRequestError: Anything else (`nan`, `inf`, zero, negative, not a number).
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise InvalidRequestError(f"timeout must be seconds (a number) or None, got {type(timeout).__name__}")
    if not math.isfinite(timeout) or timeout <= 0:
        raise InvalidRequestError(f"timeout must be finite seconds above zero, or None for no deadline; got {timeout}")
    return float(timeout)


def _model_specs(model: object) -> list[str]:
    """The model strings of a model argument: one string, or a list or tuple of them.

    Raises:
        InvalidRequestError: Anything else, or an item that is not a string.
    """
    if isinstance(model, str):
        return [model]
    if isinstance(model, (bytes, bytearray)):
        raise InvalidRequestError("model must be a str, not bytes; decode it first (e.g. model='test:fake')")
    if not isinstance(model, (list, tuple)):
        raise InvalidRequestError(
            f"model must be a model string ('provider:model'), an alias, or a list of them; got {type(model).__name__}"
        )
    for index, item in enumerate(model):
        if not isinstance(item, str):
            raise InvalidRequestError(f"model list item {index} must be a model string, got {type(item).__name__}")
    return list(model)


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
        providers: Settings for backend constructors by provider name, over the config's; a
            `policy` table in them sets the provider's `mediagen.policies.Policy`.
        max_concurrent_calls: How many backend calls one request split by `n` runs at once.
        cache: The result cache: True (at `[cache] dir`), a directory, a `ResultCache`, or
            False/None for none; by default `[cache] enabled` decides (off unless set).
        budget: Refuse new jobs once the recorded cost reaches this (None: no cap); by default
            `budget` from the configuration.
        provenance: Stamp each artifact's `metadata["provenance"]` (written into saved files).

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
        cache: bool | str | os.PathLike[str] | ResultCache | _UseClientDefault | None = USE_CLIENT_DEFAULT,
        budget: float | _UseClientDefault | None = USE_CLIENT_DEFAULT,
        provenance: bool = True,
    ) -> None:
        super().__init__(config=config, timeout=timeout, strict=strict, providers=providers)
        self._backends: dict[str, Backend] = dict(backends or {})
        self._backend_locks: dict[str, asyncio.Lock] = {}
        self._jobs: set[Job] = set()
        self._state = _State.OPEN
        self.cooldowns = Cooldowns()
        self.provenance = provenance
        # One chain member's path, shared by every job (the limits in it are the provider's, across jobs).
        self._member: Runner = Retrying(
            AttemptDeadline(
                SplitOutputs(
                    Limited(CallBackend(self.backend), self.policy),
                    self.backend,
                    max_concurrent_calls=max_concurrent_calls,
                )
            ),
            self.backend,
        )
        try:
            self._cache_settings = CacheSettings.model_validate(self.config.cache)
        except ValueError as exc:
            raise ValueError(f"[cache] is invalid: {exc}") from exc
        self.cache: ResultCache | None = self._make_cache(cache)
        """The result cache in use by default (None: results are cached only when a call asks)."""
        self._opt_in_cache: ResultCache | None = None
        cap = self.config.budget if isinstance(budget, _UseClientDefault) else budget
        if cap is not None and cap < 0:
            raise ValueError(f"budget must be zero or more, got {cap}")
        self._ledger = Ledger(PriceTable(self.config.prices), cap)
        if cap is not None and not self._ledger.prices:
            logger.warning(
                "a budget of %g is set but no [prices] are configured: cost stays 0, the cap never trips", cap
            )
        for settings in self._provider_settings.values():
            for key, value in settings.items():
                if isinstance(value, str) and key.lower().endswith(("token", "secret", "api_key", "password")):
                    register_secret(value)
        install_log_redaction()

    def _make_cache(
        self, cache: bool | str | os.PathLike[str] | ResultCache | _UseClientDefault | None
    ) -> ResultCache | None:
        if isinstance(cache, _UseClientDefault):
            cache = self._cache_settings.enabled
        if isinstance(cache, ResultCache):
            return cache
        if cache is None or cache is False:
            return None
        if cache is True:
            return ResultCache.from_settings(self._cache_settings)
        return ResultCache(cache, max_bytes=self._cache_settings.max_bytes)

    @property
    def usage(self) -> Ledger:
        """What this client's jobs consumed: `.total`, `.by_provider`, `.by_model`, `.spent`.

        Examples:
            >>> client.usage.total.images, client.usage.spent  # doctest: +SKIP
            (4, 0.012)
        """
        return self._ledger

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
        for job in pending:
            # Cancel now, before any job that has not started yet runs into the closed client.
            job.request_cancel("client closed")
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
                install_log_redaction()  # the backend's modules may have made `mediagen.*` loggers
        return self._backends[provider]

    # -- the one entry point: submit ------------------------------------------------------------

    def submit(
        self,
        request: Request,
        *,
        model: ModelArg = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        strict: bool | None = None,
        cache: CacheArg = USE_CLIENT_DEFAULT,
        provenance: bool | None = None,
        policy: Policy | Mapping[str, Any] | None = None,
        previews: int | None = None,
    ) -> Job:
        """Start a generation in the background and return its `Job` at once.

        Args:
            request: What to generate.
            model: Model string, alias, or a list of them tried in order; None for the default.
            timeout: One deadline in seconds for the whole job (queue, run, download).
            strict: Override the client's strictness for this job.
            cache: True to use the result cache (even for a request without a seed), False to
                bypass it, "refresh" to recompute and replace the entry; by default seeded
                requests use the client's cache, if it has one.
            provenance: Override the client's `provenance` for this job.
            policy: Overrides of the providers' policies for this job (`retry`,
                `attempt_timeout`, `attempt_share`, `cooldown_s`).
            previews: Ask for a `Preview` event (a small rough picture of each output) every
                this many steps, where the backend can make one (local diffusers pipelines);
                None for none.

        Raises:
            InvalidRequestError: `request` is not a request (or fails validation), or a per-call
                setting is invalid.
            ModelNotFoundError: The model string is malformed or no default is configured.
            BudgetExceededError: The budget is spent, or this job would pass it.
            RuntimeError: The client is closed, or no event loop is running.
        """
        self._check_open()
        if not isinstance(request, (ImageRequest, VideoRequest, AudioRequest, MeshRequest)):
            raise InvalidRequestError(
                f"expected an ImageRequest, VideoRequest, AudioRequest or MeshRequest, got {type(request).__name__}"
            )
        chain = self.resolve_models(model, request.modality)
        seconds = self._timeout(timeout)
        call = self._call_options(chain, cache, provenance, policy)
        deadline = None if seconds is None else time.monotonic() + seconds
        strictness = self.strict if strict is None else strict
        cancelled = Cancellation()
        if previews is not None and (isinstance(previews, bool) or not isinstance(previews, int) or previews < 1):
            raise InvalidRequestError(f"previews must be a whole number of steps >= 1, or None; got {previews!r}")
        reservation = self._ledger.reserve(self._ledger.prices.estimate(request, *chain[0]))

        async def runner(job: Job) -> Result:
            ctx = RunContext(
                deadline=deadline,
                emit=job.emit,
                strict=strictness,
                job_id=job.id,
                cancelled=cancelled,
                previews=previews,
            )
            return await self._execute(request, chain, ctx, seconds, call)

        try:
            job = Job(runner, request=request, model=model, cancelled=cancelled)
        except BaseException:
            reservation.release()
            raise
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        # A done callback, not a `finally` in the runner: a job cancelled before it starts never runs it.
        job.add_done_callback(lambda _: reservation.release())
        return job

    def _call_options(self, chain: list[tuple[str, str]], cache: Any, provenance: bool | None, policy: Any) -> _Call:
        if not (isinstance(cache, _UseClientDefault) or isinstance(cache, bool) or cache == "refresh"):
            raise InvalidRequestError(f"cache must be True, False or 'refresh', got {cache!r}")
        override: Policy | None = None
        if policy is not None:
            # Checked here, so a bad override fails the call at once rather than inside the job.
            for provider, _model in chain:
                self.policy(provider).override(policy)
            override = policy if isinstance(policy, Policy) else Policy.model_validate(dict(policy))
        return _Call(cache=cache, provenance=self.provenance if provenance is None else provenance, policy=override)

    async def generate(
        self,
        request: Request,
        *,
        model: ModelArg = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        strict: bool | None = None,
        on_event: Callable[[Event], Any] | None = None,
        cache: CacheArg = USE_CLIENT_DEFAULT,
        provenance: bool | None = None,
        policy: Policy | Mapping[str, Any] | None = None,
        previews: int | None = None,
    ) -> Result:
        """Generate what `request` asks for and wait for the result.

        Args:
            request: What to generate.
            model: Model string, alias, or a list of them tried in order; None for the default.
            timeout: One deadline in seconds for the whole job.
            strict: Override the client's strictness for this call.
            on_event: Called with each event (progress bars); may be a coroutine function.
            cache: Use (True), bypass (False) or refresh ("refresh") the result cache; see `submit`.
            provenance: Override the client's `provenance` for this call.
            policy: Overrides of the providers' policies for this call; see `submit`.
            previews: `Preview` events every this many steps, where the backend can; see `submit`.

        Raises:
            MediagenError: The generation failed (see the error tree).
            asyncio.CancelledError: The call was cancelled; the job is cancelled with it.
        """
        job = self.submit(
            request,
            model=model,
            timeout=timeout,
            strict=strict,
            cache=cache,
            provenance=provenance,
            policy=policy,
            previews=previews,
        )
        try:
            if on_event is not None:
                async for event in job.events():
                    out = on_event(event)
                    if asyncio.iscoroutine(out):
                        await out
            return await job.result()
        except BaseException:
            # Cancelled, or `on_event` raised: either way nobody waits for this job any more.
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
        cache: CacheArg = USE_CLIENT_DEFAULT,
        provenance: bool | None = None,
        policy: Policy | Mapping[str, Any] | None = None,
        **fields: Unpack[ImageFields],
    ) -> Result:
        """Generate images; `fields` are the other `ImageRequest` fields, each typed (`n`, `seed`, `width` ...).

        The other arguments are `generate`'s.

        Examples:
            >>> res = await client.image("a red fox", model="test:fake", width=64, height=64)  # doctest: +SKIP
        """
        request = self.build_request("image", prompt=prompt, **fields)
        return await self.generate(
            request,
            model=model,
            timeout=timeout,
            strict=strict,
            on_event=on_event,
            cache=cache,
            provenance=provenance,
            policy=policy,
        )

    async def video(
        self,
        prompt: str | None = None,
        *,
        model: ModelArg = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        strict: bool | None = None,
        on_event: Callable[[Event], Any] | None = None,
        cache: CacheArg = USE_CLIENT_DEFAULT,
        provenance: bool | None = None,
        policy: Policy | Mapping[str, Any] | None = None,
        **fields: Unpack[VideoFields],
    ) -> Result:
        """Generate a video; `fields` are the other `VideoRequest` fields (`image`, `frames`, `fps` ...)."""
        request = self.build_request("video", prompt=prompt, **fields)
        return await self.generate(
            request,
            model=model,
            timeout=timeout,
            strict=strict,
            on_event=on_event,
            cache=cache,
            provenance=provenance,
            policy=policy,
        )

    async def audio(
        self,
        prompt: str,
        *,
        model: ModelArg = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        strict: bool | None = None,
        on_event: Callable[[Event], Any] | None = None,
        cache: CacheArg = USE_CLIENT_DEFAULT,
        provenance: bool | None = None,
        policy: Policy | Mapping[str, Any] | None = None,
        **fields: Unpack[AudioFields],
    ) -> Result:
        """Generate sound; `fields` are the other `AudioRequest` fields (`kind`, `duration_s`, `voice` ...)."""
        request = self.build_request("audio", prompt=prompt, **fields)
        return await self.generate(
            request,
            model=model,
            timeout=timeout,
            strict=strict,
            on_event=on_event,
            cache=cache,
            provenance=provenance,
            policy=policy,
        )

    async def mesh(
        self,
        prompt: str | None = None,
        *,
        model: ModelArg = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        strict: bool | None = None,
        on_event: Callable[[Event], Any] | None = None,
        cache: CacheArg = USE_CLIENT_DEFAULT,
        provenance: bool | None = None,
        policy: Policy | Mapping[str, Any] | None = None,
        **fields: Unpack[MeshFields],
    ) -> Result:
        """Generate a 3D mesh; `fields` are the other `MeshRequest` fields (`image`, `format` ...)."""
        request = self.build_request("mesh", prompt=prompt, **fields)
        return await self.generate(
            request,
            model=model,
            timeout=timeout,
            strict=strict,
            on_event=on_event,
            cache=cache,
            provenance=provenance,
            policy=policy,
        )

    # -- running a job --------------------------------------------------------------------------

    def runner(
        self,
        chain: Sequence[tuple[str, str]],
        *,
        timeout: float | None = None,
        cache: ResultCache | None = None,
        refresh: bool = False,
        policy: Policy | None = None,
    ) -> Runner:
        """The execution path of one job over `chain`, as layers (see `mediagen.runners`).

        Outermost first: the result cache (when the call uses it), the job's deadline, the
        fallback chain, retries, the attempt deadline, the split of `n`, the provider's limits,
        and the backend call. Run it with `runner.run(request, ModelId(*chain[0]), ctx)`.

        Args:
            chain: The `(provider, model)` members, in order.
            timeout: The job's timeout in seconds (for messages; the deadline is `ctx.deadline`).
            cache: The result cache to read and fill; None for none.
            refresh: Recompute and replace cache entries instead of reading them.
            policy: The call's overrides of each provider's policy.
        """
        members = [ModelId(*member) for member in chain]

        def policy_for(provider: str) -> Policy:
            return self.policy(provider).override(policy)

        runner: Runner = Fallback(self._member, members[1:], cooldowns=self.cooldowns, policy_for=policy_for)
        runner = JobDeadline(runner, timeout=timeout, single=len(members) == 1)
        if cache is not None:
            runner = Cached(runner, cache, key_for=self._cache_key, fallbacks=members[1:], refresh=refresh)
        return runner

    async def _execute(
        self, request: Request, chain: list[tuple[str, str]], ctx: RunContext, seconds: float | None, call: _Call
    ) -> Result:
        started = time.monotonic()
        runner = self.runner(
            chain,
            timeout=seconds,
            cache=self._cache_for(call.cache, request),
            refresh=call.cache == "refresh",
            policy=call.policy,
        )
        result = await runner.run(request, ModelId(*chain[0]), ctx)
        # Book-keeping happens after the deadline: the result is made, and losing it now would waste it.
        result.warnings = [w for w in ctx.notes if w not in result.warnings] + result.warnings
        if result.cached:
            self._ledger.record_cache_hit()
        else:
            self._ledger.price(result.provider, result.model, result.usage)
            self._ledger.record(result.provider, result.model, result.usage)
        # Each output gets a file name of its own, so `save(directory)` keeps every one.
        name_outputs(result.artifacts)
        if call.provenance:
            stamp_provenance(result, request)
        result.timings.total_s = time.monotonic() - started
        for warning in result.warnings:
            logger.warning("%s: %s", result.model_string, warning)
        logger.info(
            "%s %s via %s: %d artifact(s) in %.2f s%s",
            request.modality,
            request.task,
            result.model_string,
            len(result.artifacts),
            result.timings.total_s,
            " (from the result cache)" if result.cached else "",
        )
        return result

    # -- the result cache -----------------------------------------------------------------------

    def _cache_for(self, mode: CacheArg, request: Request) -> ResultCache | None:
        if mode is False:
            return None
        if isinstance(mode, _UseClientDefault):
            # Without a seed the caller asked for a fresh random output: never serve an old one.
            return self.cache if request.seed is not None else None
        if self.cache is not None:
            return self.cache
        # Asked for by this call alone: the configured location, without turning it on for others.
        if self._opt_in_cache is None:
            self._opt_in_cache = ResultCache.from_settings(self._cache_settings)
        return self._opt_in_cache

    async def _cache_key(self, request: Request, model: ModelId) -> str | None:
        try:
            backend = await self.backend(model.provider)
            revision = await backend.revision(model.model)
            # Hashing input media may encode or read them: not on the event loop.
            return await asyncio.to_thread(cache_key, request, model.provider, model.model, revision)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an uncacheable request, or a backend that cannot load: run it
            logger.debug("no result-cache key for %s: %s", model, exc)
            return None
