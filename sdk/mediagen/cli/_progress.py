"""The progress display on a terminal: starting → loading <model> → steps with an ETA → saving.

Imported only when a generation runs on a terminal (it imports rich).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

from ._common import use_console

__all__ = ["Display", "short_model_name"]


def short_model_name(model: str) -> str:
    """The part of a model reference a person recognises: `sdxl-turbo`, not a long directory path.

    Examples:
        >>> short_model_name("/home/me/models/sd")
        'sd'
        >>> short_model_name("owner/name:0123abcd")
        'name'
    """
    name = model.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]
    return name.split(":", 1)[0] or model


class _StepsColumn(ProgressColumn):
    """`3/20 · eta 0:04` once the step count is known; nothing before (never `0/None`)."""

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text("")
        remaining = task.time_remaining
        eta = "" if remaining is None else f" · eta {int(remaining) // 60}:{int(remaining) % 60:02d}"
        return Text(f"{int(task.completed)}/{int(task.total)}{eta}")


class Display:
    """A transient progress line on stderr, fed by a job's events."""

    def __init__(self) -> None:
        import sys

        self.console = Console(file=sys.stderr, highlight=False, soft_wrap=True)
        self.bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            _StepsColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.task = self.bar.add_task("starting", total=None)
        self._route = use_console(self.console)

    def __enter__(self) -> Display:
        self.bar.start()
        self._route.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._route.__exit__(exc_type, exc, tb)
        self.bar.stop()

    def phase(self, description: str, *, total: int | None = None) -> None:
        """Show a new phase (and draw it now: a short phase would otherwise never be seen)."""
        # A fresh task: rich cannot set a known total back to "unknown", and each phase has its own clock.
        self.bar.remove_task(self.task)
        self.task = self.bar.add_task(description, total=total)
        self.bar.refresh()

    def follow(self, job: Any, on_event: Any = None) -> Any:
        """Update the line from the job's events until it ends; return its result (or raise its error).

        Args:
            job: The job to follow.
            on_event: Also called with every event (e.g. to save previews).
        """
        import mediagen as mg

        stepping = False
        for event in job.events():
            if on_event is not None:
                on_event(event)
            if isinstance(event, mg.Queued) and event.position is not None:
                self.phase(f"queued (position {event.position})")
            elif isinstance(event, mg.Started):
                self.phase(f"loading {short_model_name(event.model)}")
                stepping = False
            elif isinstance(event, mg.Progress):
                if not stepping:
                    self.phase("generating", total=event.total)
                    stepping = True
                self.bar.update(self.task, completed=event.step, total=event.total)
            elif isinstance(event, mg.Log):
                from rich.markup import escape

                self.console.print(f"[dim]{escape(event.message)}[/]", soft_wrap=True)
        return job.result()
