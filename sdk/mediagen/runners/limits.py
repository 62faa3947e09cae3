"""The provider's limits: how many backend calls at once, how many a minute, across all jobs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..policies import ConcurrencyLimiter, Policy, RateLimiter
from .base import ModelId, Runner

if TYPE_CHECKING:
    from ..backend import RunContext
    from ..requests import Request
    from ..results import Result

__all__ = ["Limited"]


@dataclass
class _Limits:
    concurrency: ConcurrencyLimiter
    rate: RateLimiter | None


class Limited:
    """Each call passes its provider's concurrency limit and rate limit first.

    One instance serves every job of a client: that is what makes them limits. They come from the
    provider's policy (`max_concurrency`, `requests_per_minute`, `burst`), read on first use.

    Args:
        inner: The runner that makes the call.
        policy_for: The policy configured for a provider.
    """

    def __init__(self, inner: Runner, policy_for: Callable[[str], Policy]) -> None:
        self._inner = inner
        self._policy_for = policy_for
        self._limits: dict[str, _Limits] = {}

    async def run(self, request: Request, model: ModelId, ctx: RunContext) -> Result:
        """The call, once a slot and a rate-limit token are free."""
        limits = self._for(model.provider)
        async with limits.concurrency:
            if limits.rate is not None:
                await limits.rate.acquire()
            return await self._inner.run(request, model, ctx)

    def _for(self, provider: str) -> _Limits:
        limits = self._limits.get(provider)
        if limits is None:
            policy = self._policy_for(provider)
            rate = None
            if policy.requests_per_minute is not None:
                rate = RateLimiter(policy.requests_per_minute, burst=policy.burst)
            limits = self._limits[provider] = _Limits(ConcurrencyLimiter(policy.max_concurrency), rate)
        return limits
