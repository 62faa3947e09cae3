"""The async client: one surface for every modality and backend."""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from ._config import DEFAULT_MAX_CONCURRENT_CALLS, Config, load_config
from ._registry import available_providers, get_backend_class, parse_model
from .backend import Backend, Capabilities, RunContext
from .cache import CacheSettings, ResultCache, cache_key
from .errors import (
    AllBackendsFailedError,
    DeadlineExceededError,
    InvalidRequestError,
    ModelNotFoundError,
    UnsupportedRequestError,
)
from .events import Event, Started
from .jobs import Job
from .ledger import Ledger, PriceTable
from .policies import ConcurrencyLimiter, Policy, RateLimiter, is_retryable_error
from .provenance import stamp as stamp_provenance
from .requests import AudioRequest, ImageRequest, MeshRequest, Request, VideoRequest, request_class
from .results import GenerationWarning, Result, Timings, Usage
from .routing import Cooldowns, should_fall_back
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

_CALL_OPTIONS = ("cache", "provenance", "policy", "previews")


@dataclass(frozen=True)
class _Call:
    """Per-call settings that are not request fields."""

    cache: CacheArg = USE_CLIENT_DEFAULT
    provenance: bool = True
    policy: Policy | None = None


@dataclass
class _Limits:
    """One provider's shared limits."""

    concurrency: ConcurrencyLimiter
    rate: RateLimiter | None


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
        self._max_concurrent_calls = max(1, max_concurrent_calls)
        self.cooldowns = Cooldowns()
        self.provenance = provenance
        self._limits: dict[str, _Limits] = {}
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
            job._request_cancel("client closed")
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
        if seconds is not None and seconds <= 0:
            raise InvalidRequestError(f"timeout must be positive seconds or None, got {seconds}")
        call = self._call_options(chain, cache, provenance, policy)
        deadline = None if seconds is None else time.monotonic() + seconds
        if previews is not None and (isinstance(previews, bool) or not isinstance(previews, int) or previews < 1):
            raise InvalidRequestError(f"previews must be a whole number of steps >= 1, or None; got {previews!r}")
        ctx = RunContext(deadline=deadline, strict=self.strict if strict is None else strict, previews=previews)
        reservation = self._ledger.reserve(self._ledger.prices.estimate(request, *chain[0]))

        async def runner(job: Job) -> Result:
            return await self._execute(job, request, chain, ctx, seconds, call)

        try:
            job = Job(runner, request=request, model=model, ctx=ctx)
        except BaseException:
            reservation.release()
            raise
        ctx.job_id = job.id
        ctx._emit = job.emit
        self._jobs.add(job)
        job._task.add_done_callback(lambda _: self._jobs.discard(job))
        # A done callback, not a `finally` in the runner: a job cancelled before it starts never runs it.
        job._task.add_done_callback(lambda _: reservation.release())
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
        **fields: Any,
    ) -> Result:
        """Generate images. `fields` are `ImageRequest` fields (`n`, `seed`, `width`, `image` ...).

        `cache`, `provenance` and `policy` among them go to `generate` (they are per-call settings).

        Examples:
            >>> res = await client.image("a red fox", model="test:fake", width=64, height=64)  # doctest: +SKIP
        """
        call = {name: fields.pop(name) for name in _CALL_OPTIONS if name in fields}
        request = self.build_request("image", prompt=prompt, **fields)
        return await self.generate(request, model=model, timeout=timeout, strict=strict, on_event=on_event, **call)

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
        """Generate a video. `fields` are `VideoRequest` fields (`image`, `frames`, `fps` ...) or `cache`, `provenance`, `policy`."""
        call = {name: fields.pop(name) for name in _CALL_OPTIONS if name in fields}
        request = self.build_request("video", prompt=prompt, **fields)
        return await self.generate(request, model=model, timeout=timeout, strict=strict, on_event=on_event, **call)

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
        """Generate sound. `fields` are `AudioRequest` fields (`kind`, `duration_s`, `voice` ...) or `cache`, `provenance`, `policy`."""
        call = {name: fields.pop(name) for name in _CALL_OPTIONS if name in fields}
        request = self.build_request("audio", prompt=prompt, **fields)
        return await self.generate(request, model=model, timeout=timeout, strict=strict, on_event=on_event, **call)

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
        """Generate a 3D mesh. `fields` are `MeshRequest` fields (`image`, `format` ...) or `cache`, `provenance`, `policy`."""
        call = {name: fields.pop(name) for name in _CALL_OPTIONS if name in fields}
        request = self.build_request("mesh", prompt=prompt, **fields)
        return await self.generate(request, model=model, timeout=timeout, strict=strict, on_event=on_event, **call)

    # -- running a job --------------------------------------------------------------------------

    async def _execute(
        self,
        job: Job,
        request: Request,
        chain: list[tuple[str, str]],
        ctx: RunContext,
        seconds: float | None,
        call: _Call | None = None,
    ) -> Result:
        call = call or _Call(provenance=self.provenance)
        keys: dict[tuple[str, str], str] = {}
        started = time.monotonic()
        try:
            if seconds is None:
                result = await self._run_job(request, chain, ctx, call, keys)
            else:
                result = await asyncio.wait_for(self._run_job(request, chain, ctx, call, keys), seconds)
        except DeadlineExceededError:
            # The backend's own deadline error (a TimeoutError too): not the client's wait_for timing out.
            ctx.cancelled.set()
            raise
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
        # Book-keeping happens after the deadline: the result is made, and losing it now would waste it.
        await self._settle(result, request, ctx, call, keys)
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

    # -- the result cache, the ledger and provenance ----------------------------------------------

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

    async def _cache_key(self, request: Request, provider: str, model: str) -> str | None:
        try:
            backend = await self.backend(provider)
            revision = await backend.revision(model)
            # Hashing input media may encode or read them: not on the event loop.
            return await asyncio.to_thread(cache_key, request, provider, model, revision)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an uncacheable request, or a backend that cannot load: run it
            logger.debug("no result-cache key for %s:%s: %s", provider, model, exc)
            return None

    async def _run_job(
        self,
        request: Request,
        chain: list[tuple[str, str]],
        ctx: RunContext,
        call: _Call,
        keys: dict[tuple[str, str], str],
    ) -> Result:
        cache = self._cache_for(call.cache, request)
        if cache is not None and call.cache != "refresh":
            # Any member's entry answers the request: each would be a valid answer of the chain.
            for provider, model in chain:
                key = await self._cache_key(request, provider, model)
                if key is None:
                    continue
                keys[(provider, model)] = key
                hit = await asyncio.to_thread(cache.get, key)
                if hit is not None:
                    ctx.provider, ctx.model = provider, model
                    ctx.emit(Started(provider=provider, model=model))
                    return hit
        return await self._run_chain(request, chain, ctx, call.policy)

    async def _settle(
        self, result: Result, request: Request, ctx: RunContext, call: _Call, keys: dict[tuple[str, str], str]
    ) -> None:
        if result.cached:
            self._ledger.record_cache_hit()
        else:
            self._ledger.price(result.provider, result.model, result.usage)
            self._ledger.record(result.provider, result.model, result.usage)
        if call.provenance:
            stamp_provenance(result, request)
        cache = self._cache_for(call.cache, request)
        if cache is None or result.cached:
            return
        served = (ctx.provider, ctx.model)
        key = keys.get(served) or await self._cache_key(request, *served)
        if key is None:
            return
        try:
            await cache.aput(key, result, replace=call.cache == "refresh")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a full disk must not fail a generation that succeeded
            logger.warning("could not store the result in the cache at %s: %s", cache.directory, exc)

    # -- fallback chains, retries and attempt deadlines --------------------------------------------

    async def _run_chain(
        self,
        request: Request,
        chain: list[tuple[str, str]],
        ctx: RunContext,
        policy: Policy | None = None,
    ) -> Result:
        failures: list[tuple[str, BaseException]] = []
        notes: list[GenerationWarning] = []
        job_deadline = ctx.deadline
        for index, (provider, model) in enumerate(chain):
            name = f"{provider}:{model}"
            last = index == len(chain) - 1
            member_policy = self.policy(provider).override(policy)
            if len(chain) > 1 and not last and (left := self.cooldowns.cooling(name)) > 0:
                notes.append(
                    _note("fallback", provider, f"skipped {name}: cooling down for {left:.0f} s after a failure")
                )
                continue
            try:
                result = await self._run_member(request, provider, model, ctx, member_policy, job_deadline, last, notes)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.cooldowns.trip(name, exc, seconds=member_policy.cooldown_s)
                if len(chain) == 1 or not should_fall_back(exc):
                    raise
                failures.append((name, exc))
                why = f"{name} failed ({type(exc).__name__}: {exc})"
                notes.append(_note("fallback", provider, why + ("; tried the next model" if not last else "")))
                logger.info("%s; %s", why, "trying the next model" if not last else "no model left")
                continue
            finally:
                ctx.deadline = job_deadline
            self.cooldowns.clear(name)
            result.warnings = notes + result.warnings
            return result
        raise AllBackendsFailedError(
            "every model in the chain failed:\n"
            + "\n".join(f"  {n}: {e}" for n, e in failures)
            + "".join(f"\n  ({note.message})" for note in notes if note.message.startswith("skipped")),
            errors=failures,
            retryable=any(getattr(e, "retryable", False) for _, e in failures),
        )

    async def _run_member(
        self,
        request: Request,
        provider: str,
        model: str,
        ctx: RunContext,
        policy: Policy,
        job_deadline: float | None,
        last: bool,
        notes: list[GenerationWarning],
    ) -> Result:
        """One chain member: its attempts, retried under its policy unless its backend retries itself."""
        backend = await self.backend(provider)
        retry = policy.retry

        async def attempt() -> Result:
            return await self._attempt(request, provider, model, ctx, policy, job_deadline, last)

        if retry is None or retry.attempts <= 1 or backend.handles_retries:
            return await attempt()

        def retrying(failures: int, exc: BaseException, wait: float) -> None:
            why = f"{provider}:{model} failed ({type(exc).__name__}: {exc})"
            notes.append(_note("retry", provider, f"{why}; try {failures + 1} of {retry.attempts} after {wait:.2g} s"))
            logger.info("%s; retrying in %.2g s", why, wait)

        return await retry.run(attempt, is_retryable=is_retryable_error, deadline=job_deadline, on_retry=retrying)

    async def _attempt(
        self,
        request: Request,
        provider: str,
        model: str,
        ctx: RunContext,
        policy: Policy,
        job_deadline: float | None,
        last: bool,
    ) -> Result:
        """One try of one member, cut off at its attempt deadline."""
        ctx.policy = policy
        begun = time.monotonic()
        deadline = policy.attempt_deadline(now=begun, job_deadline=job_deadline, last=last)
        ctx.deadline = deadline
        if deadline is None or deadline == job_deadline:
            return await self._run_one(request, provider, model, ctx)  # the job's own deadline governs

        task = asyncio.ensure_future(self._run_one(request, provider, model, ctx))
        try:
            await asyncio.wait({task}, timeout=max(0.0, deadline - time.monotonic()))
        except asyncio.CancelledError:
            ctx.cancelled.set()
            task.cancel()
            await asyncio.wait({task})
            raise
        timed_out = not task.done()
        if timed_out:
            ctx.cancelled.set()  # worker threads poll this; the task's cancellation reaches coroutines
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled() and task.exception() is None:
            # Done in time, or finished just as it was cut off: use it; running it again would be twice.
            return task.result()
        if not timed_out:
            return task.result()  # raises the attempt's own error
        # The abandoned attempt keeps its (set) flag; the next attempt gets a fresh one.
        ctx.cancelled = threading.Event()
        raise DeadlineExceededError(
            f"{provider}:{model} did not finish within its attempt deadline ({deadline - begun:.3g} s) "
            "and was cancelled; raise attempt_timeout / attempt_share in its policy if it needs longer",
            provider=provider,
            model=model,
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

        limits = self._provider_limits(provider)

        async def call(part: Request) -> Result:
            async with semaphore, limits.concurrency:
                if limits.rate is not None:
                    await limits.rate.acquire()
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

    def _provider_limits(self, provider: str) -> _Limits:
        # Shared by every job of the client: that is what makes them limits.
        limits = self._limits.get(provider)
        if limits is None:
            policy = self.policy(provider)
            rate = None
            if policy.requests_per_minute is not None:
                rate = RateLimiter(policy.requests_per_minute, burst=policy.burst)
            limits = self._limits[provider] = _Limits(ConcurrencyLimiter(policy.max_concurrency), rate)
        return limits

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


def _note(feature: str, provider: str, message: str) -> GenerationWarning:
    # Why a model did not serve the request: the result carries it, so nobody has to read logs.
    return GenerationWarning(type="other", feature=feature, message=message, provider=provider)


def _provider_claims(name: str, task: str) -> bool:
    try:
        cls = get_backend_class(name)
    except Exception:  # a provider that cannot load here is no suggestion; its error must not mask this one
        return False
    return task in cls.tasks and name != "test"


def _merge(results: list[Result], provider: str, model: str) -> Result:
    if len(results) == 1:
        result = results[0]
        # The provider it was routed to, as with merged results (a backend instance may serve another name).
        result.provider = provider
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
