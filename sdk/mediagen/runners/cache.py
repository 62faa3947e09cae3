"""The result cache as a layer: a stored result answers the request; a fresh one is stored."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from ..errors import DeadlineExceededError
from ..events import Started
from .base import ModelId, Runner

if TYPE_CHECKING:
    from ..backend import RunContext
    from ..cache import ResultCache
    from ..requests import Request
    from ..results import Result

__all__ = ["Cached", "KeyFor"]

logger = logging.getLogger("mediagen")

KeyFor = Callable[["Request", ModelId], Awaitable["str | None"]]
"""The cache key of a request on a model (None: not cacheable, e.g. a backend that cannot load)."""


class Cached:
    """Answer from the cache when any member of the chain has an entry; store what the run made.

    Any member's entry answers the request: each would be a valid answer of the chain. Storing
    happens after the run, outside its deadline: the result is made, losing it now would waste it,
    and a full disk never fails a generation that succeeded.

    Args:
        inner: What runs the request on a miss.
        cache: Where results live.
        key_for: The key of a request on a model.
        fallbacks: The chain's other members (their entries answer too).
        refresh: Recompute and replace the entry instead of reading it.
    """

    def __init__(
        self,
        inner: Runner,
        cache: ResultCache,
        *,
        key_for: KeyFor,
        fallbacks: Sequence[ModelId] = (),
        refresh: bool = False,
    ) -> None:
        self._inner = inner
        self._cache = cache
        self._key_for = key_for
        self._fallbacks = tuple(fallbacks)
        self._refresh = refresh

    async def run(self, request: Request, model: ModelId, ctx: RunContext) -> Result:
        """A stored result (`result.cached` is True), or the inner run's, stored."""
        keys: dict[ModelId, str] = {}
        if not self._refresh:
            # The look-up may ask a backend for its model's revision (a hosted one over the
            # network): it counts against the job's deadline like the run it may save.
            left = ctx.time_left()
            try:
                found = await asyncio.wait_for(self._lookup(request, model, keys), left)
            except asyncio.TimeoutError:
                ctx.cancelled.set()
                raise DeadlineExceededError(
                    "the job's deadline passed while looking up the result cache; raise timeout=",
                    provider=model.provider,
                    model=model.model,
                ) from None
            if found is not None:
                member, hit = found
                ctx.emit(Started(provider=member.provider, model=member.model))
                return hit
        result = await self._inner.run(request, model, ctx)
        served = ModelId(result.provider, result.model)
        key = keys.get(served) or await self._key_for(request, served)
        if key is not None:
            try:
                await self._cache.aput(key, result, replace=self._refresh)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a full disk must not fail a generation that succeeded
                logger.warning("could not store the result in the cache at %s: %s", self._cache.directory, exc)
        return result

    async def _lookup(
        self, request: Request, model: ModelId, keys: dict[ModelId, str]
    ) -> tuple[ModelId, Result] | None:
        """The first member's stored result, with that member; the keys computed go into `keys`."""
        for member in (model, *self._fallbacks):
            key = await self._key_for(request, member)
            if key is None:
                continue
            keys[member] = key
            hit = await asyncio.to_thread(self._cache.get, key)
            if hit is not None:
                return member, hit
        return None
