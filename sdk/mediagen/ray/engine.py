"""A pool of Ray actors fed by the driver, one request at a time.

Why an actor pool fed by the driver rather than Ray Data's `map_batches` for `mediagen batch`: the
driver keeps one code path for parsing, resume, per-line errors, output names and the manifest
(the local batch's own), so a line's outcome does not depend on the engine; each line is retried
on another worker when its worker dies, and only the driver writes files, so nothing is written
twice. Ray Data remains the right tool inside a user's own pipeline: see `mediagen.ray.Generate`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from ..errors import GenerationFailedError
from ..requests import Request
from ..results import Result
from ._imports import import_ray, init_ray
from .worker import GenerateWorker, WorkerOutcome, forwarded_env, unwrap

__all__ = ["RayEngine", "RaySettings"]

logger = logging.getLogger("mediagen")


@dataclass(frozen=True)
class RaySettings:
    """How many workers, where, and what each one holds."""

    workers: int = 2
    """Actors in the pool; each holds one client (and its loaded models)."""
    address: str | None = None
    """A cluster to join (`ray://...`, `host:port`, `auto`); None starts a private local instance."""
    cpus_per_worker: float = 1.0
    """CPUs reserved per worker (fractions allowed: two workers fit one core with 0.5)."""
    gpus_per_worker: float = 0.0
    """GPUs reserved per worker (1 = a GPU each; 0.5 = two workers share one)."""
    requests_per_worker: int = 16
    """Requests a worker runs at once; they are micro-batched by its local backend."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment variables for the workers."""

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        for name in ("cpus_per_worker", "gpus_per_worker"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
        if self.requests_per_worker < 1:
            raise ValueError("requests_per_worker must be at least 1")


class _Slot:
    """One actor and the requests it is running."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self.in_flight = 0
        self.alive = True


class RayEngine:
    """Run requests on a pool of Ray actors; use as `async with RayEngine(settings) as engine`.

    With no address it starts its own local Ray instance (`address="local"`: it never joins a
    cluster an earlier `ray start` left running), bound to loopback, and shuts it down on exit.

    Args:
        settings: Workers, address and resources.
        client_kwargs: Passed to each worker's `Client`.

    Examples:
        >>> async def main():                                   # doctest: +SKIP
        ...     async with RayEngine(RaySettings(workers=2)) as engine:
        ...         res = await engine.generate(mg.ImageRequest(prompt="a fox"), "diffusers:/models/sd")
    """

    def __init__(self, settings: RaySettings | None = None, *, client_kwargs: Mapping[str, Any] | None = None) -> None:
        self.settings = settings or RaySettings()
        self._client_kwargs = dict(client_kwargs or {})
        self._slots: list[_Slot] = []
        self._owns_ray = False
        self._changed: asyncio.Condition | None = None
        self.restarts = 0
        """Workers replaced after one died during this run."""

    # -- lifetime ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start (or join) Ray and the workers; blocks until every worker is up."""
        ray = import_ray()
        s = self.settings
        self._owns_ray = init_ray(
            s.address,
            num_cpus=max(1, math.ceil(s.workers * s.cpus_per_worker)),
            num_gpus=math.ceil(s.workers * s.gpus_per_worker) or None,
        )
        self._slots = [_Slot(self._spawn()) for _ in range(s.workers)]
        ray.get([slot.actor.pid.remote() for slot in self._slots])
        logger.info("ray engine: %d workers ready (%s)", s.workers, s.address or "local instance")

    def shutdown(self) -> None:
        """Stop the workers, and Ray itself when this engine started it."""
        ray = import_ray()
        for slot in self._slots:
            if slot.alive:
                try:
                    ray.get(slot.actor.aclose.remote(), timeout=30)
                except Exception:  # a worker that will not close cleanly is killed below anyway
                    logger.debug("ray engine: a worker did not close cleanly", exc_info=True)
                ray.kill(slot.actor)
        self._slots = []
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False

    async def __aenter__(self) -> RayEngine:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.shutdown)

    def _spawn(self) -> Any:
        ray = import_ray()
        s = self.settings
        env = forwarded_env()
        env.update(s.env)
        remote = ray.remote(GenerateWorker).options(
            num_cpus=s.cpus_per_worker,
            num_gpus=s.gpus_per_worker,
            max_concurrency=s.requests_per_worker,
            max_restarts=0,  # the driver replaces a dead worker and re-sends its lines itself
        )
        return remote.remote(env, self._client_kwargs)

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the live workers."""
        ray = import_ray()
        return list(ray.get([slot.actor.pid.remote() for slot in self._slots if slot.alive]))

    # -- requests ----------------------------------------------------------------------------------

    async def generate(self, request: Request, model: str | list[str] | None) -> Result:
        """Run one request on the least busy worker; if that worker dies, run it on another.

        Raises:
            MediagenError: The request failed (the worker's own error, unchanged).
            GenerationFailedError: Every attempt lost its worker.
        """
        ray = import_ray()
        died: tuple[type[BaseException], ...] = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)
        attempts = self.settings.workers + 2
        for _ in range(attempts):
            slot = await self._acquire()
            try:
                outcome: WorkerOutcome = await slot.actor.generate.remote(request, model)
            except died:
                self._replace(slot)
                continue
            except ray.exceptions.RayTaskError as exc:
                raise GenerationFailedError(f"a Ray worker failed: {exc}") from exc
            finally:
                await self._release(slot)
            return unwrap(outcome)
        raise GenerationFailedError(f"{attempts} Ray workers died while running this request; giving up")

    async def _acquire(self) -> _Slot:
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            while True:
                live = [s for s in self._slots if s.alive and s.in_flight < self.settings.requests_per_worker]
                if live:
                    slot = min(live, key=lambda s: s.in_flight)
                    slot.in_flight += 1
                    return slot
                await self._changed.wait()

    async def _release(self, slot: _Slot) -> None:
        assert self._changed is not None
        async with self._changed:
            slot.in_flight -= 1
            self._changed.notify_all()

    def _replace(self, slot: _Slot) -> None:
        if not slot.alive:
            return
        slot.alive = False
        self.restarts += 1
        logger.warning("ray engine: a worker died; starting a replacement and retrying its requests")
        self._slots.append(_Slot(self._spawn()))
