"""Devices: which accelerator to run on, in which dtype, and how much memory it has.

Everything here imports torch inside the function that needs it, so that importing the runtime stays
cheap; callers run these functions off the event loop (in a worker or `asyncio.to_thread`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from mediagen.errors import UnsupportedRequestError

__all__ = [
    "MemoryInfo",
    "pick_device",
    "pick_dtype",
    "dtype_name",
    "is_accelerator",
    "memory_info",
    "empty_cache",
    "is_out_of_memory",
]

_DTYPE_ALIASES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


@dataclass(frozen=True)
class MemoryInfo:
    """Memory of a device, in bytes (for the CPU: the machine's RAM)."""

    total_bytes: int
    """All of it."""
    free_bytes: int
    """What is free now (what other processes and we hold is not)."""


def pick_device(requested: str | None = None) -> str:
    """The device to run on: the one asked for, else CUDA, then MPS, then the CPU.

    Args:
        requested: `"auto"`/None, or a torch device string such as `"cuda"`, `"cuda:1"`, `"mps"`, `"cpu"`.

    Returns:
        A torch device string; CUDA devices always carry their index (`"cuda:0"`).

    Raises:
        UnsupportedRequestError: The device asked for is not there.
    """
    import torch

    wanted = (requested or "auto").strip().lower()
    if wanted == "auto":
        if torch.cuda.is_available():
            return "cuda:0"
        if _mps_available():
            return "mps"
        return "cpu"
    kind, _, index = wanted.partition(":")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        number = int(index or 0)
        if number >= count:
            raise UnsupportedRequestError(
                f"device {requested!r} was asked for, but torch sees {count} CUDA device(s); "
                "set device = 'auto' (or 'cpu') under [providers.<name>] in mediagen.toml"
            )
        return f"cuda:{number}"
    if kind == "mps":
        if not _mps_available():
            raise UnsupportedRequestError(f"device {requested!r} was asked for, but MPS is not available here")
        return "mps"
    if kind == "cpu":
        return "cpu"
    raise UnsupportedRequestError(f"unknown device {requested!r}; use 'auto', 'cuda', 'cuda:N', 'mps' or 'cpu'")


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def pick_dtype(device: str, requested: str | None = None) -> Any:
    """The torch dtype to load weights in: the one asked for, else bf16 (or fp16) on GPUs, fp32 on the CPU.

    CPUs have no fast half-precision kernels for most diffusion layers, so fp32 is both faster and
    safer there; on CUDA bf16 keeps fp32's range (no NaNs from overflowing VAEs) where the card has it.

    Args:
        device: A string from `pick_device`.
        requested: `"auto"`/None, or `float32`/`fp32`, `float16`/`fp16`, `bfloat16`/`bf16`.

    Returns:
        A `torch.dtype`.

    Raises:
        UnsupportedRequestError: The name is not a dtype we load weights in.
    """
    import torch

    wanted = (requested or "auto").strip().lower()
    if wanted == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device == "mps":
            return torch.float16
        return torch.float32
    if wanted not in _DTYPE_ALIASES:
        raise UnsupportedRequestError(f"unknown dtype {requested!r}; use 'auto', 'float32', 'float16' or 'bfloat16'")
    return getattr(torch, _DTYPE_ALIASES[wanted])


def dtype_name(dtype: Any) -> str:
    """`torch.float16` → `"float16"` (for logs and `describe()`)."""
    return str(dtype).removeprefix("torch.")


def is_accelerator(device: str) -> bool:
    """True for devices whose memory is separate from the machine's RAM (CUDA, MPS)."""
    return device != "cpu"


def memory_info(device: str) -> MemoryInfo:
    """Total and free memory of a device.

    Args:
        device: A string from `pick_device`.

    Returns:
        The device's memory; for the CPU the machine's physical RAM and what the kernel reports
        as available.
    """
    import torch

    if device.startswith("cuda"):
        free, total = torch.cuda.mem_get_info(torch.device(device))
        return MemoryInfo(total_bytes=int(total), free_bytes=int(free))
    if device == "mps":
        total = int(torch.mps.recommended_max_memory())
        used = int(torch.mps.driver_allocated_memory())
        return MemoryInfo(total_bytes=total, free_bytes=max(0, total - used))
    return _system_memory()


def _system_memory() -> MemoryInfo:
    # /proc/meminfo knows what is reclaimable (page cache); sysconf's free pages do not.
    try:
        fields: dict[str, int] = {}
        with open("/proc/meminfo") as handle:
            for line in handle:
                name, _, rest = line.partition(":")
                fields[name] = int(rest.split()[0]) * 1024
        return MemoryInfo(total_bytes=fields["MemTotal"], free_bytes=fields.get("MemAvailable", fields["MemFree"]))
    except (OSError, KeyError, ValueError, IndexError):
        page = os.sysconf("SC_PAGE_SIZE")
        total = os.sysconf("SC_PHYS_PAGES") * page
        free = os.sysconf("SC_AVPHYS_PAGES") * page
        return MemoryInfo(total_bytes=int(total), free_bytes=int(free))


def empty_cache(device: str) -> None:
    """Hand memory the caching allocator holds back to the device (after evicting a model)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    elif device == "mps":
        torch.mps.empty_cache()


def is_out_of_memory(exc: BaseException | None) -> bool:
    """Whether `exc`, or an exception it was raised from, means the device ran out of memory.

    Backends translate torch errors into mediagen errors; the cause chain still says what happened,
    which is what the batcher looks at to split a batch that did not fit.
    """
    seen = 0
    while exc is not None and seen < 8:
        if type(exc).__name__ == "OutOfMemoryError":
            return True
        message = str(exc)
        if isinstance(exc, (RuntimeError, MemoryError)) and (
            isinstance(exc, MemoryError)
            or "out of memory" in message.lower()
            or "can't allocate memory" in message
            or "MPS backend out of memory" in message
        ):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False
