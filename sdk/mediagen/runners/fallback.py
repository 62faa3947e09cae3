"""Fallback chains: the members of a chain tried in order, outages cooled down.

A request moves on only for failures another backend can fix (`mediagen.routing.should_fall_back`);
each member runs under its own copy of the context (its provider, model and policy). A member that
just failed with an outage is skipped for its policy's `cooldown_s`, unless it is the last one left.
Every member but the last runs inside `fast_failover()`, so an unreachable endpoint gives way after
one quick retry rather than its full retry budget. If every member fails, one
`AllBackendsFailedError` holds each error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..errors import AllBackendsFailedError
from ..policies import Policy, fast_failover
from ..results import GenerationWarning
from ..routing import Cooldowns, should_fall_back
from .base import ModelId, Runner

if TYPE_CHECKING:
    from ..backend import RunContext
    from ..requests import Request
    from ..results import Result

__all__ = ["Fallback"]

logger = logging.getLogger("mediagen")


class Fallback:
    """Runs `model`, then each of `fallbacks` in turn until one succeeds (pydantic-ai's `FallbackModel`).

    Args:
        inner: What runs one member (retries, attempt deadline, the call).
        fallbacks: The members to try after `model`, in order.
        cooldowns: Outages remembered across jobs.
        policy_for: Each member's policy (the provider's, with the call's overrides).
    """

    def __init__(
        self,
        inner: Runner,
        fallbacks: Sequence[ModelId] = (),
        *,
        cooldowns: Cooldowns,
        policy_for: Callable[[str], Policy],
    ) -> None:
        self._inner = inner
        self._fallbacks = tuple(fallbacks)
        self._cooldowns = cooldowns
        self._policy_for = policy_for

    async def run(self, request: Request, model: ModelId, ctx: RunContext) -> Result:
        """The first member's result that succeeds.

        Raises:
            MediagenError: A lone model's error, or one another member could not fix.
            AllBackendsFailedError: Every member failed (or was cooling down).
        """
        chain = (model, *self._fallbacks)
        failures: list[tuple[str, BaseException]] = []
        skipped: list[str] = []
        for index, member in enumerate(chain):
            name = str(member)
            left = len(chain) - 1 - index
            policy = self._policy_for(member.provider)
            if left and (cooling := self._cooldowns.cooling(name)) > 0:
                why = f"skipped {name}: cooling down for {cooling:.0f} s after a failure"
                skipped.append(why)
                ctx.note(_note(member, why))
                continue
            member_ctx = ctx.derive(provider=member.provider, model=member.model, policy=policy, fallbacks_left=left)
            try:
                with fast_failover(left > 0):
                    result = await self._inner.run(request, member, member_ctx)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._cooldowns.trip(name, exc, seconds=policy.cooldown_s)
                if len(chain) == 1 or not should_fall_back(exc):
                    raise
                failures.append((name, exc))
                why = f"{name} failed ({type(exc).__name__}: {exc})"
                ctx.note(_note(member, why + ("; tried the next model" if left else "")))
                logger.info("%s; %s", why, "trying the next model" if left else "no model left")
                continue
            self._cooldowns.clear(name)
            return result
        raise AllBackendsFailedError(
            "every model in the chain failed:\n"
            + "\n".join(f"  {n}: {e}" for n, e in failures)
            + "".join(f"\n  ({why})" for why in skipped),
            errors=failures,
            retryable=any(getattr(e, "retryable", False) for _, e in failures),
        )


def _note(member: ModelId, message: str) -> GenerationWarning:
    # Why a model did not serve the request: the result carries it, so nobody has to read logs.
    return GenerationWarning(type="other", feature="fallback", message=message, provider=member.provider)
