"""`n` split into calls the model accepts, run side by side, merged into one result.

This is the one place where `n` is split: a backend gets at most what its `Capabilities` allow
per call (`max_outputs_per_call`, or `max_seeded_outputs_per_call` for a seeded request), each
call with the seed of its first output, and never splits again.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .._registry import available_providers, get_backend_class
from ..errors import UnsupportedRequestError
from ..events import Started
from ..results import GenerationWarning, Result, Timings, Usage
from .base import BackendSource, ModelId, Runner

if TYPE_CHECKING:
    from ..backend import Capabilities, RunContext
    from ..requests import Request

__all__ = ["SplitOutputs", "check_capabilities", "split_n"]


class SplitOutputs:
    """Check the request against the model's capabilities, split `n`, merge the results.

    Args:
        inner: The runner of each call (limits, then the backend).
        backends: The backend of a provider, for its capabilities.
        max_concurrent_calls: How many calls of one request run at once.
    """

    def __init__(self, inner: Runner, backends: BackendSource, *, max_concurrent_calls: int) -> None:
        self._inner = inner
        self._backends = backends
        self._max_concurrent_calls = max(1, max_concurrent_calls)

    async def run(self, request: Request, model: ModelId, ctx: RunContext) -> Result:
        """The request as one or more calls, merged."""
        # 1. Check the model can serve this task at all, before anything is sent.
        backend = await self._backends(model.provider)
        caps = await backend.capabilities(model.model)
        check_capabilities(request, model, caps)

        # 2. Split n into calls the backend accepts, each with its own seeds.
        parts = split_n(request, caps)

        # 3. Run them (a few at a time) and merge what comes back.
        ctx.emit(Started(provider=model.provider, model=model.model))
        semaphore = asyncio.Semaphore(self._max_concurrent_calls)

        async def call(part: Request) -> Result:
            async with semaphore:
                return await self._inner.run(part, model, ctx)

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
        merged = _merge(results, model)
        for warning in ctx.warnings:
            if warning not in merged.warnings:
                merged.warnings.append(warning)
        merged.warnings = [
            w if w.provider else w.model_copy(update={"provider": model.provider}) for w in merged.warnings
        ]
        _fill_usage(merged)
        return merged


def split_n(request: Request, caps: Capabilities) -> list[Request]:
    """The calls that make `request.n` outputs: `ceil(n / limit)` of them, the last with the rest.

    Call `k` starts at output `offset` and carries seed `seed + offset`, so output `i` of the whole
    request is made with `seed + i` however it was split.
    """
    limit = caps.max_outputs_per_call
    if request.seed is not None and caps.max_seeded_outputs_per_call is not None:
        limit = min(limit or request.n, caps.max_seeded_outputs_per_call)
    limit = limit or request.n
    if request.n <= limit:
        return [request]
    parts: list[Request] = []
    for offset in range(0, request.n, limit):
        update: dict[str, Any] = {"n": min(limit, request.n - offset)}
        if request.seed is not None:
            update["seed"] = (request.seed + offset) % 2**32
        parts.append(request.model_copy(update=update))
    return parts


def check_capabilities(request: Request, model: ModelId, caps: Capabilities) -> None:
    """Refuse a request the model cannot serve: its task, or a size past the model's limits.

    Raises:
        UnsupportedRequestError: Naming the limit, and for a task the providers that could.
    """
    provider, name = model
    task = request.task
    if task not in caps.tasks:
        could = [p for p in available_providers() if p != provider and _provider_claims(p, task)]
        hint = f"; providers that can: {', '.join(could)}" if could else ""
        raise UnsupportedRequestError(
            f"{model} cannot do {task} (it does {', '.join(sorted(caps.tasks)) or 'nothing'}){hint}",
            feature=task,
            supported_by=could,
            provider=provider,
            model=name,
        )
    width = getattr(request, "width", None)
    height = getattr(request, "height", None)
    if caps.max_width and width and width > caps.max_width:
        raise UnsupportedRequestError(
            f"{model} makes at most {caps.max_width} px wide; width is {width}", feature="width"
        )
    if caps.max_height and height and height > caps.max_height:
        raise UnsupportedRequestError(
            f"{model} makes at most {caps.max_height} px high; height is {height}", feature="height"
        )
    frames = getattr(request, "frames", None)
    if caps.max_frames and frames and frames > caps.max_frames:
        raise UnsupportedRequestError(
            f"{model} makes at most {caps.max_frames} frames; frames is {frames}", feature="frames"
        )
    duration = getattr(request, "duration_s", None)
    if caps.max_duration_s and duration and duration > caps.max_duration_s:
        raise UnsupportedRequestError(
            f"{model} makes at most {caps.max_duration_s:g} s; duration_s is {duration:g}", feature="duration_s"
        )


def _provider_claims(name: str, task: str) -> bool:
    try:
        cls = get_backend_class(name)
    except Exception:  # a provider that cannot load here is no suggestion; its error must not mask this one
        return False
    return task in cls.tasks and name != "test"


def _merge(results: list[Result], model: ModelId) -> Result:
    if len(results) == 1:
        result = results[0]
        # The provider it was routed to, as with merged results (a backend instance may serve another name).
        result.provider = model.provider
        result.model = result.model or model.model
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
        provider=model.provider,
        model=model.model,
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
        usage.megapixels = sum(img.width * img.height / 1e6 for img in result.images if img.has_decoded()) + sum(
            v.frames.shape[0] * v.frames.shape[1] * v.frames.shape[2] / 1e6 for v in result.videos if v.has_decoded()
        )
    if not usage.video_s:
        usage.video_s = sum(v.duration_s for v in result.videos if v.has_decoded())
    if not usage.audio_s:
        usage.audio_s = sum(a.duration_s for a in result.audios if a.has_decoded())
