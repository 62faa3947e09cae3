"""The pipeline cache: loaded models kept on a device within a memory budget, least recently used out first.

Loading a model takes seconds to minutes, so a backend keeps what it loaded. Entries are generic (a
pipeline, a ControlNet, a transformers model ...), each with the bytes it holds on the device and the
entries it depends on: a *view* such as an image-to-image pipeline made with `from_pipe` shares its
parent's weights, costs nothing, and goes when its parent goes.

Before loading, a backend asks `plan` where a model of that size can live: on the device, or (on an
accelerator) in CPU memory with each part moved to the device while it runs ("offload"), or nowhere,
which is a `GenerationFailedError` that says what to change, not a crash. `make_room` then evicts
least-recently-used entries until the new one fits.

Only the device worker changes the cache; `describe` may be called from any thread.
"""

from __future__ import annotations

import enum
import gc
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from mediagen.errors import GenerationFailedError

from .devices import empty_cache, is_accelerator, memory_info

__all__ = ["CacheEntry", "PipelineCache", "Placement", "module_bytes"]

_GB = 1024**3

# Leave room for activations: a model that fills the device to the last byte cannot run.
_AUTO_BUDGET_SHARE_ACCELERATOR = 0.85
_AUTO_BUDGET_SHARE_CPU = 0.75


class Placement(str, enum.Enum):
    """Where a model's weights live."""

    DEVICE = "device"
    """On the device, all of the time."""
    OFFLOAD = "offload"
    """In CPU memory; each part moves to the device while it runs (slower, much less device memory)."""
    VIEW = "view"
    """Shares another entry's weights (a `from_pipe` pipeline)."""


@dataclass
class CacheEntry:
    """One cached object and what it costs."""

    key: Hashable
    value: Any
    size_bytes: int
    """Device memory it holds (0 for views and offloaded models' CPU-resident parts)."""
    parents: tuple[Hashable, ...] = ()
    """Entries it depends on: evicting one of them evicts this one too."""
    label: str = ""
    """How `describe` names it."""
    placement: Placement = Placement.DEVICE
    loaded_at: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    uses: int = 0


def module_bytes(obj: Any) -> tuple[int, int]:
    """Bytes of the weights of a torch module, or of every module among a pipeline's components.

    Returns:
        `(total, largest)`: all of it, and the biggest single module (what offloading needs on the
        device at once).
    """
    import torch

    if isinstance(obj, torch.nn.Module):
        modules = [obj]
    else:
        components = getattr(obj, "components", None) or {}
        modules = [m for m in components.values() if isinstance(m, torch.nn.Module)]
    sizes = [sum(t.numel() * t.element_size() for t in (*m.parameters(), *m.buffers())) for m in modules]
    return sum(sizes), max(sizes, default=0)


class PipelineCache:
    """Loaded models of one device, within a memory budget, evicted least recently used first.

    Args:
        device: The device the entries live on.
        budget_bytes: Most bytes the entries may hold on the device. None takes a share of what is
            free when the first model loads (85 % on accelerators, 75 % of available RAM on a CPU).
    """

    def __init__(self, device: str, budget_bytes: int | None = None) -> None:
        self.device = device
        self._budget = budget_bytes
        self._entries: OrderedDict[Hashable, CacheEntry] = OrderedDict()
        self._lock = threading.RLock()
        self.evictions = 0
        """Entries evicted to make room (for `describe`)."""

    # -- reading --------------------------------------------------------------------------------

    @property
    def budget_bytes(self) -> int:
        """The memory budget (measured on first use when none was configured)."""
        if self._budget is None:
            share = _AUTO_BUDGET_SHARE_ACCELERATOR if is_accelerator(self.device) else _AUTO_BUDGET_SHARE_CPU
            self._budget = int(memory_info(self.device).free_bytes * share) + self.used_bytes
        return self._budget

    @property
    def used_bytes(self) -> int:
        """Device bytes the entries hold."""
        with self._lock:
            return sum(entry.size_bytes for entry in self._entries.values())

    def get(self, key: Hashable) -> Any | None:
        """The cached object, marked as just used; None when it is not cached."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._touch(entry)
            return entry.value

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def entry(self, key: Hashable) -> CacheEntry | None:
        """The entry itself (size, placement ...), without marking it used."""
        with self._lock:
            return self._entries.get(key)

    def describe(self) -> list[dict[str, Any]]:
        """What is loaded, most recently used first (for `mediagen backends`)."""
        now = time.monotonic()
        with self._lock:
            entries = list(reversed(self._entries.values()))
        return [
            {
                "name": entry.label or str(entry.key),
                "placement": entry.placement.value,
                "size_gb": round(entry.size_bytes / _GB, 3),
                "uses": entry.uses,
                "idle_s": round(now - entry.last_used, 1),
            }
            for entry in entries
        ]

    # -- planning and making room ---------------------------------------------------------------

    def plan(self, size_bytes: int, largest_bytes: int, *, what: str, can_offload: bool = True) -> Placement:
        """Where a model of `size_bytes` (whose largest part is `largest_bytes`) can live.

        Args:
            size_bytes: All of the model's weights.
            largest_bytes: Its biggest part (what offloading needs on the device at once).
            what: The model's name, for the error message.
            can_offload: Whether the model supports offloading at all.

        Returns:
            `Placement.DEVICE` when it fits, else `Placement.OFFLOAD` when its largest part does.

        Raises:
            GenerationFailedError: Not even offloading makes it fit.
        """
        budget = self.budget_bytes
        if size_bytes <= budget:
            return Placement.DEVICE
        offload = can_offload and is_accelerator(self.device)
        if offload and largest_bytes <= budget:
            return Placement.OFFLOAD
        need = largest_bytes if offload else size_bytes
        how = "even with CPU offload its largest part needs" if offload else "it needs"
        raise GenerationFailedError(
            f"{what} does not fit on {self.device}: {how} {need / _GB:.2f} GB and the memory budget is "
            f"{budget / _GB:.2f} GB. Raise memory_budget_gb, load it in a smaller dtype, or use a smaller model",
            model=what,
        )

    def make_room(self, size_bytes: int, *, keep: Iterable[Hashable] = ()) -> None:
        """Evict least-recently-used entries until `size_bytes` more fit in the budget (and the device).

        Args:
            size_bytes: Device bytes about to be loaded.
            keep: Entries not to evict (and, with them, the entries they depend on).
        """
        protected = self._with_ancestors(keep)
        budget = self.budget_bytes
        with self._lock:
            while self.used_bytes + size_bytes > budget:
                if not self._evict_oldest(protected):
                    break
        if not is_accelerator(self.device):
            return
        # Other processes (or fragmentation) may hold memory the budget does not know about.
        while memory_info(self.device).free_bytes < size_bytes:
            with self._lock:
                if not self._evict_oldest(protected):
                    return

    # -- writing --------------------------------------------------------------------------------

    def put(
        self,
        key: Hashable,
        value: Any,
        *,
        size_bytes: int = 0,
        parents: Iterable[Hashable] = (),
        label: str = "",
        placement: Placement = Placement.DEVICE,
    ) -> None:
        """Add (or replace) an entry, marked as just used."""
        entry = CacheEntry(
            key=key,
            value=value,
            size_bytes=size_bytes,
            parents=tuple(parents),
            label=label,
            placement=placement,
        )
        with self._lock:
            self._entries[key] = entry
            self._touch(entry)

    def evict(self, key: Hashable) -> None:
        """Drop an entry and every entry depending on it, and give their memory back."""
        with self._lock:
            dropped = self._drop(key)
        if dropped:
            self._release()

    def clear(self) -> None:
        """Drop everything (the backend is closing)."""
        with self._lock:
            had = bool(self._entries)
            self._entries.clear()
        if had:
            self._release()

    def _touch(self, entry: CacheEntry) -> None:
        entry.last_used = time.monotonic()
        entry.uses += 1
        self._entries.move_to_end(entry.key)
        # Using a view uses what it stands on: its parents must not look idle.
        for parent in entry.parents:
            if parent in self._entries:
                self._entries[parent].last_used = entry.last_used
                self._entries.move_to_end(parent)
        self._entries.move_to_end(entry.key)

    def _with_ancestors(self, keys: Iterable[Hashable]) -> set[Hashable]:
        found: set[Hashable] = set()
        todo = list(keys)
        with self._lock:
            while todo:
                key = todo.pop()
                if key in found:
                    continue
                found.add(key)
                entry = self._entries.get(key)
                if entry is not None:
                    todo.extend(entry.parents)
        return found

    def _evict_oldest(self, protected: set[Hashable]) -> bool:
        for key, entry in self._entries.items():
            if key in protected or entry.size_bytes == 0:
                continue
            self._drop(key)
            self.evictions += 1
            self._release()
            return True
        return False

    def _drop(self, key: Hashable) -> bool:
        if key not in self._entries:
            return False
        del self._entries[key]
        for child in [k for k, e in self._entries.items() if key in e.parents]:
            self._drop(child)
        return True

    def _release(self) -> None:
        # Pipelines hold reference cycles (components <-> hooks); collect them before asking the
        # allocator to give the memory back.
        gc.collect()
        empty_cache(self.device)
