"""Retries of one chain member, under its policy (`ctx.policy.retry`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..policies import is_retryable_error
from ..results import GenerationWarning
from .base import BackendSource, ModelId, Runner

if TYPE_CHECKING:
    from ..backend import RunContext
    from ..requests import Request
    from ..results import Result

__all__ = ["Retrying"]

logger = logging.getLogger("mediagen")


class Retrying:
    """Runs the member again after a failure that may pass, each try under a fresh context.

    No policy (`retry` None or one attempt) runs it once. A backend that retries its own transport
    calls (`handles_retries`: only it knows which calls can be repeated without paying twice) is
    never retried here; it reads `ctx.policy.retry` itself. Each retry is noted on the result.

    Args:
        inner: What runs one try.
        backends: The backend of a provider, to ask whether it handles retries.
    """

    def __init__(self, inner: Runner, backends: BackendSource) -> None:
        self._inner = inner
        self._backends = backends

    async def run(self, request: Request, model: ModelId, ctx: RunContext) -> Result:
        """The member's tries, until one succeeds or the policy gives up (raising the last error)."""
        retry = ctx.policy.retry
        if retry is None or retry.attempts <= 1 or (await self._backends(model.provider)).handles_retries:
            return await self._inner.run(request, model, ctx.derive())

        def retrying(failures: int, exc: BaseException, wait: float) -> None:
            why = f"{model} failed ({type(exc).__name__}: {exc})"
            message = f"{why}; try {failures + 1} of {retry.attempts} after {wait:.2g} s"
            ctx.note(GenerationWarning(type="other", feature="retry", message=message, provider=model.provider))
            logger.info("%s; retrying in %.2g s", why, wait)

        return await retry.run(
            lambda: self._inner.run(request, model, ctx.derive()),
            is_retryable=is_retryable_error,
            deadline=ctx.deadline,
            on_retry=retrying,
        )
