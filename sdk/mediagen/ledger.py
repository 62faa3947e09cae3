"""The usage ledger: what each generation consumed, what it cost, and a budget cap.

Every result carries `usage` in units that compare across providers (images, megapixels, seconds
of video and audio, meshes, local device seconds, the provider's compute seconds). A price table in
`mediagen.toml` turns usage into cost; the most specific entry wins (`provider:model` with the
version, then without it, then `provider`)::

    budget = 5.00                                        # refuse new jobs once 5.00 is spent

    [prices."replicate:black-forest-labs/flux-schnell"]
    images = 0.003

    [prices.replicate]
    predict_s = 0.000725                                 # any other Replicate model: per second

    [prices.diffusers]
    device_s = 0.0002                                    # what your GPU costs, per second of use

`client.usage` is the client's `Ledger`: totals overall, per provider and per model.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import BudgetExceededError
from .results import Usage

if TYPE_CHECKING:
    from .requests import Request

__all__ = ["UNITS", "PriceTable", "Ledger", "Reservation"]

UNITS = ("images", "megapixels", "video_s", "audio_s", "meshes", "device_s", "predict_s")
"""The units a price may be given in: the numeric fields of `Usage`."""


class PriceTable:
    """Prices per unit of usage, by `provider:model` or `provider`.

    Args:
        prices: `{"provider" or "provider:model": {unit: price}}`, as in `[prices]`.

    Raises:
        ValueError: A unit is not one of `UNITS`, or a price is negative.

    Examples:
        >>> table = PriceTable({"replicate": {"predict_s": 0.001}})
        >>> table.cost("replicate", "owner/name", Usage(predict_s=2.5))
        0.0025
    """

    def __init__(self, prices: Mapping[str, Mapping[str, float]] | None = None) -> None:
        self.prices: dict[str, dict[str, float]] = {}
        for key, units in (prices or {}).items():
            for unit, price in units.items():
                if unit not in UNITS:
                    raise ValueError(
                        f"[prices.{key!r}] names the unit {unit!r}; use one of {', '.join(UNITS)} (each per unit: "
                        "per image, per megapixel, per second)"
                    )
                if price < 0:
                    raise ValueError(f"[prices.{key!r}] {unit} = {price}: a price cannot be negative")
            self.prices[key] = {unit: float(price) for unit, price in units.items()}

    def __bool__(self) -> bool:
        return bool(self.prices)

    def lookup(self, provider: str, model: str) -> dict[str, float] | None:
        """The prices that apply to a model: the most specific entry, or None."""
        candidates = [f"{provider}:{model}"]
        if ":" in model:  # "owner/name:<version>" falls back to "owner/name"
            candidates.append(f"{provider}:{model.rsplit(':', 1)[0]}")
        candidates.append(provider)
        for key in candidates:
            if key in self.prices:
                return self.prices[key]
        return None

    def cost(self, provider: str, model: str, usage: Usage) -> float | None:
        """What `usage` of a model costs, or None when no price applies to it."""
        prices = self.lookup(provider, model)
        if prices is None:
            return None
        return sum(price * float(getattr(usage, unit) or 0.0) for unit, price in prices.items())

    def estimate(self, request: Request, provider: str, model: str) -> float:
        """A lower bound of what a request will cost, from what it asks for (0 when unknown).

        Counts images, megapixels, seconds and meshes the request names; device and provider seconds
        are only known afterwards, so they count as 0 here.
        """
        prices = self.lookup(provider, model)
        if not prices:
            return 0.0
        n = request.n
        width = getattr(request, "width", None)
        height = getattr(request, "height", None)
        expected = Usage()
        if request.modality == "image":
            expected.images = n
            if width and height:
                expected.megapixels = n * width * height / 1e6
        elif request.modality == "video":
            frames = getattr(request, "frames", None)
            fps = getattr(request, "fps", None)
            seconds = getattr(request, "duration_s", None) or (frames / fps if frames and fps else 0.0)
            expected.video_s = n * seconds
            if width and height and frames:
                expected.megapixels = n * frames * width * height / 1e6
        elif request.modality == "audio":
            expected.audio_s = n * (getattr(request, "duration_s", None) or 0.0)
        else:
            expected.meshes = n
        return self.cost(provider, model, expected) or 0.0


@dataclass
class _Line:
    usage: Usage
    jobs: int = 0


class Reservation:
    """An estimate held against the budget while a job runs; `release()` when it ends."""

    def __init__(self, ledger: Ledger, amount: float) -> None:
        self._ledger = ledger
        self.amount = amount
        self._released = amount == 0.0

    def release(self) -> None:
        """Give the estimate back (the job's real cost, if any, was recorded). Safe to call twice."""
        if not self._released:
            self._released = True
            with self._ledger._lock:
                self._ledger._holds -= 1
                # Sums of floats drift; with nothing held the total is exactly zero again.
                self._ledger._reserved = self._ledger._reserved - self.amount if self._ledger._holds else 0.0


class Ledger:
    """Totals of usage and cost, overall, per provider and per model; and the budget cap.

    Args:
        prices: The price table (cost stays unknown without one).
        budget: Refuse new jobs once the recorded cost reaches this; None for no cap.

    Examples:
        >>> client.usage.total.images  # doctest: +SKIP
        4
        >>> client.usage.by_model["replicate:black-forest-labs/flux-schnell"].cost  # doctest: +SKIP
        0.012
    """

    def __init__(self, prices: PriceTable | None = None, budget: float | None = None) -> None:
        self.prices = prices or PriceTable()
        self.budget = budget
        self._lock = threading.Lock()
        self._lines: dict[tuple[str, str], _Line] = {}
        self._reserved = 0.0
        self._holds = 0
        self.cache_hits = 0
        """Results served from the result cache (they cost nothing and are not in the totals)."""

    # -- recording ------------------------------------------------------------------------------

    def price(self, provider: str, model: str, usage: Usage) -> None:
        """Set `usage.cost` from the price table, where a price applies (a backend's own cost stays otherwise)."""
        cost = self.prices.cost(provider, model, usage)
        if cost is not None:
            usage.cost = cost

    def record(self, provider: str, model: str, usage: Usage) -> None:
        """Add one finished job's usage to the totals."""
        with self._lock:
            line = self._lines.setdefault((provider, model), _Line(Usage()))
            line.usage = line.usage + usage
            line.jobs += 1

    def record_cache_hit(self) -> None:
        """Count a result served from the cache."""
        with self._lock:
            self.cache_hits += 1

    def reset(self) -> None:
        """Forget every total (a new billing period); reservations of running jobs stay."""
        with self._lock:
            self._lines.clear()
            self.cache_hits = 0

    # -- totals ---------------------------------------------------------------------------------

    @property
    def total(self) -> Usage:
        """Everything recorded, summed."""
        with self._lock:
            lines = list(self._lines.values())
        total = Usage()
        for line in lines:
            total = total + line.usage
        return total

    @property
    def jobs(self) -> int:
        """Jobs recorded (cache hits not included)."""
        with self._lock:
            return sum(line.jobs for line in self._lines.values())

    @property
    def by_provider(self) -> dict[str, Usage]:
        """Totals per provider."""
        out: dict[str, Usage] = {}
        with self._lock:
            for (provider, _model), line in self._lines.items():
                out[provider] = out.get(provider, Usage()) + line.usage
        return out

    @property
    def by_model(self) -> dict[str, Usage]:
        """Totals per `provider:model`."""
        with self._lock:
            return {f"{provider}:{model}": line.usage for (provider, model), line in self._lines.items()}

    @property
    def spent(self) -> float:
        """Recorded cost (0 where no price applied)."""
        return self.total.cost or 0.0

    @property
    def reserved(self) -> float:
        """Estimated cost of jobs still running."""
        with self._lock:
            return self._reserved

    def summary(self) -> dict[str, Any]:
        """Everything as plain JSON-ready data."""
        return {
            "total": self.total.model_dump(),
            "by_provider": {k: v.model_dump() for k, v in self.by_provider.items()},
            "by_model": {k: v.model_dump() for k, v in self.by_model.items()},
            "jobs": self.jobs,
            "cache_hits": self.cache_hits,
            "spent": self.spent,
            "budget": self.budget,
        }

    def __repr__(self) -> str:
        cap = f" of {self.budget:g}" if self.budget is not None else ""
        return f"<mediagen.Ledger {self.jobs} jobs, spent {self.spent:.4g}{cap}>"

    # -- the budget -----------------------------------------------------------------------------

    def reserve(self, estimate: float) -> Reservation:
        """Check the budget for a new job and hold its estimated cost until it ends.

        Args:
            estimate: What the job will cost at least (`PriceTable.estimate`; 0 when unknown).

        Raises:
            BudgetExceededError: The budget is already spent, or this job would pass it.
        """
        with self._lock:
            if self.budget is not None:
                spent = sum((line.usage.cost or 0.0) for line in self._lines.values())
                if spent >= self.budget or spent + self._reserved + estimate > self.budget:
                    running = f" (+{self._reserved:.4g} held for running jobs)" if self._reserved else ""
                    this = f"; this job would add at least {estimate:.4g}" if estimate else ""
                    raise BudgetExceededError(
                        f"budget exceeded: spent {spent:.4g}{running} of a {self.budget:g} cap{this}. "
                        "Raise Client(budget=...) or `budget` in mediagen.toml, or call client.usage.reset() "
                        "to start a new period"
                    )
            self._reserved += estimate
            if estimate:
                self._holds += 1
        return Reservation(self, estimate)
