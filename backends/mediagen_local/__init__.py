"""The runtime local backends share: device choice, one worker thread per device, micro-batching, a pipeline cache.

Nothing here knows about diffusers or transformers: a backend brings its own `run(batch)` and its own
loaders, and gets a device worker that never blocks the event loop, batching of concurrent
compatible requests, and a memory-budgeted cache of what it loaded. torch is imported lazily, inside
the functions that need it.
"""

from __future__ import annotations

from .batcher import DEFAULT_BATCH_WINDOW_S, DEFAULT_MAX_BATCH, Batch, BatchItem, Done, MicroBatcher
from .devices import (
    MemoryInfo,
    dtype_name,
    empty_cache,
    is_accelerator,
    is_out_of_memory,
    memory_info,
    pick_device,
    pick_dtype,
)
from .pipeline_cache import CacheEntry, PipelineCache, Placement, module_bytes
from .quiet import quiet_third_party
from .startup import LocalRuntime, RuntimeSettings, parse_settings, planned_runtime, start_runtime
from .worker import DeviceWorker, get_worker, settle_future

__all__ = [
    "DEFAULT_BATCH_WINDOW_S",
    "DEFAULT_MAX_BATCH",
    "Batch",
    "BatchItem",
    "CacheEntry",
    "DeviceWorker",
    "Done",
    "LocalRuntime",
    "MemoryInfo",
    "MicroBatcher",
    "PipelineCache",
    "Placement",
    "RuntimeSettings",
    "dtype_name",
    "empty_cache",
    "get_worker",
    "is_accelerator",
    "is_out_of_memory",
    "memory_info",
    "module_bytes",
    "pick_device",
    "pick_dtype",
    "parse_settings",
    "planned_runtime",
    "settle_future",
    "start_runtime",
]

# Every local backend imports this package before it touches diffusers or transformers (reading a
# model's index already does): the filters of their noise must be in place by then.
quiet_third_party()
