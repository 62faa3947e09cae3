"""Starting a local backend's runtime: pick the device and dtype, get its worker, a cache and a batcher.

Every local backend does this the same way on its first request, from the same settings
(`device`, `dtype`, `memory_budget_gb`, `max_batch`, `batch_window_s`); what differs is the batch
function it brings. Call `start_runtime` off the event loop: choosing the device imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from .batcher import Batch, MicroBatcher, P, R
from .devices import dtype_name, pick_device, pick_dtype
from .imports import quiet_library_progress
from .pipeline_cache import PipelineCache
from .worker import DeviceWorker, get_worker

__all__ = ["LocalRuntime", "RuntimeSettings", "parse_settings", "planned_runtime", "start_runtime"]

_GB = 1024**3
_S = TypeVar("_S", bound=BaseModel)


def parse_settings(model: type[_S], settings: dict[str, Any], provider: str) -> _S:
    """Validate a backend's `[providers.<provider>]` settings.

    Raises:
        ValueError: A setting is unknown or out of range; the message lists the known ones.
    """
    try:
        return model(**settings)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        known = ", ".join(model.model_fields)
        raise ValueError(f"bad [providers.{provider}] settings: {problems} (known settings: {known})") from None


class RuntimeSettings(Protocol):
    """The settings every local backend has (its pydantic settings model satisfies this)."""

    @property
    def device(self) -> str: ...
    @property
    def dtype(self) -> str: ...
    @property
    def memory_budget_gb(self) -> float | None: ...
    @property
    def max_batch(self) -> int: ...
    @property
    def batch_window_s(self) -> float: ...


@dataclass
class LocalRuntime(Generic[P, R]):
    """What a local backend holds once it has picked its device."""

    device: str
    dtype: Any
    worker: DeviceWorker
    """The device's worker thread, shared with every other local backend on that device."""
    cache: PipelineCache
    """This backend's loaded models."""
    batcher: MicroBatcher[P, R]
    """Batches this backend's concurrent compatible requests into one call on the worker."""

    def describe(self, **extra: Any) -> dict[str, Any]:
        """Device, dtype, `extra`, then the loaded models, batching and the worker (for `describe`)."""
        return {
            "device": self.device,
            "dtype": dtype_name(self.dtype),
            **extra,
            "loaded": self.cache.describe(),
            "batching": self.batcher.describe(),
            "worker": self.worker.describe(),
        }


def start_runtime(settings: RuntimeSettings, run_batch: Callable[[Batch[P]], Sequence[R]]) -> LocalRuntime[P, R]:
    """Pick the device and dtype the settings ask for, and set up the runtime there.

    Args:
        settings: The backend's settings.
        run_batch: Runs one batch on the device worker (see `MicroBatcher`).

    Returns:
        The runtime: nothing is loaded yet.
    """
    quiet_library_progress()
    device = pick_device(settings.device)
    dtype = pick_dtype(device, settings.dtype)
    worker = get_worker(device)
    budget = None if settings.memory_budget_gb is None else int(settings.memory_budget_gb * _GB)
    return LocalRuntime(
        device=device,
        dtype=dtype,
        worker=worker,
        cache=PipelineCache(device, budget),
        batcher=MicroBatcher(worker, run_batch, max_batch=settings.max_batch, window_s=settings.batch_window_s),
    )


def planned_runtime(settings: RuntimeSettings) -> dict[str, Any]:
    """Where a runtime would start, for `describe` before the first request (nothing is loaded)."""
    device = pick_device(settings.device)
    return {"device": device, "dtype": dtype_name(pick_dtype(device, settings.dtype)), "loaded": []}
