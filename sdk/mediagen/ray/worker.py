"""What runs inside each Ray actor: one mediagen client, many requests at once.

The actor is asynchronous (Ray runs its coroutines on one event loop), so concurrent requests
sent to one worker reach the same client, and the local backend micro-batches them exactly as it
does in a single process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..client import Client
from ..errors import MediagenError
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
        try:
            result = await self._client.generate(request, model=model)
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
