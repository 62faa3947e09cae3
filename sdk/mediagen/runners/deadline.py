"""Deadlines: one for the whole job, and one for each attempt of a chain member.

The job's deadline (`timeout=`) covers queueing, every attempt and every download; when it
passes, the work is cancelled and `DeadlineExceededError` raised. An attempt's deadline comes from
the member's policy (`attempt_timeout`, `attempt_share`): past it, the attempt is cancelled and
the chain moves on, while the job's own deadline still stands.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from ..errors import DeadlineExceededError
from .base import ModelId, Runner

if TYPE_CHECKING:
    from ..backend import RunContext
    from ..requests import Request
    from ..results import Result

__all__ = ["AttemptDeadline", "JobDeadline"]


class JobDeadline:
    """The job ends by `ctx.deadline`: past it, the work is cancelled and the job fails.

    Args:
        inner: What runs the job.
        timeout: The job's timeout in seconds, for the message.
        single: Whether the job has one model (named on the error; in a chain, which one ran out
            of time is in the notes).
    """

    def __init__(self, inner: Runner, *, timeout: float | None, single: bool = True) -> None:
        self._inner = inner
        self._timeout = timeout
        self._single = single

    async def run(self, request: Request, model: ModelId, ctx: RunContext) -> Result:
        """The inner run, cut off at the deadline.

        Raises:
            DeadlineExceededError: The deadline passed before the job finished.
        """
        left = ctx.time_left()
        try:
            if left is None:
                return await self._inner.run(request, model, ctx)
            return await asyncio.wait_for(self._inner.run(request, model, ctx), left)
        except DeadlineExceededError:
            # The backend's own deadline error (a TimeoutError too): not `wait_for` timing out.
            ctx.cancelled.set()
            raise
        except asyncio.TimeoutError as exc:
            ctx.cancelled.set()
            took = f"its {self._timeout:g} s deadline" if self._timeout is not None else "its deadline"
            raise DeadlineExceededError(
                f"the job did not finish within {took} and was cancelled; raise timeout= or make the request smaller",
                provider=model.provider if self._single else None,
                model=model.model if self._single else None,
            ) from exc
        except asyncio.CancelledError:
            ctx.cancelled.set()
            raise


class AttemptDeadline:
    """One attempt ends by its policy's deadline (`ctx.policy.attempt_deadline`), else it is cancelled.

    The attempt runs under a copy of `ctx` holding that deadline, so the backend sees it too. An
    attempt that finishes just as it is cut off is used: running it again would do the work twice.

    Args:
        inner: What runs one attempt.
    """

    def __init__(self, inner: Runner) -> None:
        self._inner = inner

    async def run(self, request: Request, model: ModelId, ctx: RunContext) -> Result:
        """The attempt, cut off at its deadline.

        Raises:
            DeadlineExceededError: The attempt deadline passed (a chain moves on to its next member).
        """
        begun = time.monotonic()
        deadline = ctx.policy.attempt_deadline(now=begun, job_deadline=ctx.deadline, last=ctx.fallbacks_left == 0)
        if deadline is None or deadline == ctx.deadline:
            return await self._inner.run(request, model, ctx)  # the job's own deadline governs

        attempt = ctx.derive(deadline=deadline)
        task = asyncio.ensure_future(self._inner.run(request, model, attempt))
        try:
            await asyncio.wait({task}, timeout=max(0.0, deadline - time.monotonic()))
        except asyncio.CancelledError:
            attempt.cancelled.set()
            task.cancel()
            await asyncio.wait({task})
            raise
        timed_out = not task.done()
        if timed_out:
            attempt.cancelled.set()  # worker threads poll this; the task's cancellation reaches coroutines
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled() and task.exception() is None:
            # Done in time, or finished just as it was cut off: use it.
            return task.result()
        if not timed_out:
            return task.result()  # raises the attempt's own error
        raise DeadlineExceededError(
            f"{model} did not finish within its attempt deadline ({deadline - begun:.3g} s) "
            "and was cancelled; raise attempt_timeout / attempt_share in its policy if it needs longer",
            provider=model.provider,
            model=model.model,
        )
