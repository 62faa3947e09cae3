"""What runs inside each Ray actor: one mediagen client, many requests at once.

The actor is asynchronous (Ray runs its coroutines on one event loop), so concurrent requests
sent to one worker reach the same client, and the local backend micro-batches them exactly as it
does in a single process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from ..client import Client
from ..errors import MediagenError
from ..events import Event, Log, Progress
from ..requests import Request
from ..results import Result

__all__ = ["GenerateWorker", "WorkerOutcome", "forwarded_env", "unwrap"]

WorkerOutcome = tuple[Result | None, MediagenError | None]
"""A result, or the mediagen error that ended the request (errors travel as values, not Ray's wrappers)."""

# What a worker needs from the driver's environment to behave like the driver's own client.
_FORWARDED_ENV = (
    "MEDIAGEN_CONFIG",
    "MEDIAGEN_CACHE_DIR",
    "MEDIAGEN_ALLOW_REMOTE",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_HOME",
)


def forwarded_env() -> dict[str, str]:
    """The driver's settings a worker process must share (config path, cache, offline flags)."""
    return {k: v for k, v in os.environ.items() if k in _FORWARDED_ENV}


def unwrap(outcome: WorkerOutcome) -> Result:
    """The result a worker sent, or its error raised here."""
    result, error = outcome
    if error is not None:
        raise error
    assert result is not None
    return result


class GenerateWorker:
    """Holds one `Client`; `generate` returns results with their bytes read, ready to ship.

    Args:
        env: Environment variables to set first (config path, cache dir, offline flags).
        client_kwargs: Passed to `Client` (e.g. `providers`, `timeout`).
    """

    def __init__(self, env: Mapping[str, str] | None = None, client_kwargs: Mapping[str, Any] | None = None) -> None:
        os.environ.update(env or {})
        self._client = Client(**dict(client_kwargs or {}))

    async def generate(self, request: Request, model: str | list[str] | None) -> WorkerOutcome:
        """Run one request; read every artifact so the driver gets bytes, not URLs only this worker can reach."""
        return await self._run(request, model, None)

    async def generate_stream(
        self, request: Request, model: str | list[str] | None
    ) -> AsyncIterator[Progress | Log | WorkerOutcome]:
        """`generate`, yielding the job's `Progress` and `Log` events as they happen, then its outcome.

        For a streaming caller (a Ray Serve handle with `stream=True`): the steps of a job reach
        the caller while it runs. Closing the stream early cancels the request.
        """
        events: asyncio.Queue[Progress | Log] = asyncio.Queue()

        def on_event(event: Event) -> None:
            if isinstance(event, Progress | Log):
                # The caller's own job stamps its id on them.
                events.put_nowait(dataclasses.replace(event, job_id=""))

        task = asyncio.ensure_future(self._run(request, model, on_event))
        try:
            while not task.done():
                getter = asyncio.ensure_future(events.get())
                await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                else:
                    getter.cancel()
            while not events.empty():
                yield events.get_nowait()
            yield task.result()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _run(
        self, request: Request, model: str | list[str] | None, on_event: Callable[[Event], Any] | None
    ) -> WorkerOutcome:
        try:
            result = await self._client.generate(request, model=model, on_event=on_event)
            for artifact in result.artifacts:
                await artifact.aread()
        except MediagenError as exc:
            return None, exc
        return result, None

    def pid(self) -> int:
        """This worker's process id (tests kill it to check that lines are retried elsewhere)."""
        return os.getpid()

    async def aclose(self) -> None:
        """Close the client and its backends."""
        await self._client.aclose()
