"""Events a job emits, the same whatever the backend.

`Queued → Started → (Progress | Preview | Log)* → Completed | Failed | Cancelled`. The last three
are terminal: exactly one ends every job. `Preview` events come only when the job asked for them
(`client.submit(..., previews=k)`) and the backend can make them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, Union

if TYPE_CHECKING:
    from .artifacts import Image
    from .results import Result

__all__ = [
    "Event",
    "Queued",
    "Started",
    "Progress",
    "Preview",
    "Log",
    "Completed",
    "Failed",
    "Cancelled",
    "EventSink",
    "NULL_SINK",
    "TERMINAL_EVENTS",
]


@dataclass(frozen=True)
class Queued:
    """The job is waiting (for a device, a slot under a rate limit, or the provider's queue)."""

    position: int | None = None
    """Place in the queue, when the backend knows it."""
    job_id: str = ""


@dataclass(frozen=True)
class Started:
    """The backend began working on the job."""

    provider: str = ""
    model: str = ""
    job_id: str = ""


@dataclass(frozen=True)
class Progress:
    """`step` of `total` done (denoising steps, tokens, or a provider's progress bar)."""

    step: int
    total: int
    job_id: str = ""

    @property
    def fraction(self) -> float:
        """Progress in [0, 1]."""
        return min(1.0, self.step / self.total) if self.total > 0 else 0.0


@dataclass(frozen=True)
class Preview:
    """A rough, small picture of output `index` after `step` of `total` steps (opt-in: `previews=k`).

    Local diffusers pipelines make it from the latents with a cheap linear map (no VAE decode), so
    it is blurry and low-resolution: meant for a progress display, not as a result.
    """

    image: Image
    step: int
    total: int
    index: int = 0
    """Which output of the request (0 .. n-1)."""
    job_id: str = ""


@dataclass(frozen=True)
class Log:
    """A line the backend or the provider logged."""

    message: str
    job_id: str = ""


@dataclass(frozen=True)
class Completed:
    """The job succeeded; `result` holds the artifacts."""

    result: Result
    job_id: str = ""


@dataclass(frozen=True)
class Failed:
    """The job failed; `error` is what `job.result()` raises."""

    error: BaseException
    job_id: str = ""


@dataclass(frozen=True)
class Cancelled:
    """The job was cancelled before it finished."""

    reason: str = field(default="cancelled")
    job_id: str = ""


Event = Union[Queued, Started, Progress, Preview, Log, Completed, Failed, Cancelled]
"""Any event."""
TERMINAL_EVENTS = (Completed, Failed, Cancelled)


class EventSink(Protocol):
    """Where a backend sends events: any callable taking one event."""

    def __call__(self, event: Event, /) -> None:  # noqa: D102
        ...


def _null_sink(event: Event, /) -> None:
    return None


NULL_SINK: EventSink = _null_sink
"""A sink that drops everything, so backends can emit without checking for a listener."""
