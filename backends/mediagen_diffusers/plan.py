"""A `Plan`: one request as the arguments of one pipeline call, ready to be batched.

A `Plan` splits the arguments in two: `call`, shared by every request batched into the same call
(size, steps, guidance, frames, strength ...: part of the batch key), and `inputs`, one entry per
output (prompt, negative prompt, input images), which a batch concatenates. A `Mapper` collects
them for one request, warning about every argument the pipeline lacks. The modalities' planners
(`mapping.py`, `audio.py`) fill them in.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mediagen import LoRA

from .options import SELECTORS, DiffusersOptions, pipeline_kwargs

if TYPE_CHECKING:
    from mediagen import RunContext

    from .audio import AudioOutput
    from .loading import ModelInfo, ViewInfo

__all__ = ["Mapper", "Output", "Plan", "freeze"]


@dataclass(frozen=True)
class Output:
    """What the call's outputs become."""

    kind: Literal["image", "video", "mesh", "audio"]
    format: str | None = None
    """Image encoding (`png`, `jpeg`, `webp`) or mesh file format (`glb`, `obj`, `ply`)."""
    fps: float | None = None
    """Frames per second of videos."""
    audio: AudioOutput | None = None
    """Sample rate, length and level of sounds."""


@dataclass
class Plan:
    """One request, ready to be batched and run."""

    view: str
    """Which of the model's pipelines runs it (a key of `ModelInfo.views`)."""
    class_name: str
    controlnet: str | None
    """The ControlNet model to load, for ControlNet views."""
    call: dict[str, Any]
    """Arguments shared by the whole batch."""
    inputs: dict[str, list[Any]]
    """Arguments with one value per output (concatenated across a batch)."""
    seeds: list[int]
    """One seed per output."""
    output: Output
    loras: tuple[LoRA, ...] = ()
    scheduler: str | None = None
    """Scheduler class to swap in for the call, when not the model's own."""
    callbacks: bool = True
    """Whether the pipeline reports steps through `callback_on_step_end`."""
    size: tuple[int, int] | None = None
    """Width and height of the outputs, when known before the call."""
    per_prompt: str | None = None
    """When set, the call takes one set of inputs and makes all outputs through this argument
    (`num_images_per_prompt` ...): for pipelines that cannot take one input image per output."""
    group: Hashable = None
    """What else must match for requests to share a call (the inputs themselves, with `per_prompt`)."""
    one_at_a_time: bool = False
    """Make each output in a call of its own (pipelines that cannot make several of one input)."""

    @property
    def n(self) -> int:
        """Outputs this request makes."""
        return len(self.seeds)

    @property
    def steps(self) -> int | None:
        """Denoising steps (for progress totals)."""
        steps = self.call.get("num_inference_steps")
        return int(steps) if steps is not None else None

    def key(self) -> Hashable:
        """Requests with equal keys can run in one call: everything but the per-output inputs matches."""
        return (
            self.view,
            self.controlnet,
            tuple(sorted((name, freeze(value)) for name, value in self.call.items())),
            tuple(sorted(self.inputs)),
            tuple((lora.path, lora.scale, lora.weight_name) for lora in self.loras),
            self.scheduler,
            self.size,
            self.output.kind,
            self.per_prompt,
            self.group,
        )


def freeze(value: Any) -> Hashable:
    """A hashable stand-in for a call argument (JSON for lists and dicts)."""
    try:
        hash(value)
    except TypeError:
        return json.dumps(value, sort_keys=True, default=repr)
    return value  # type: ignore[no-any-return]


class Mapper:
    """Collects one request's arguments, warning about what the pipeline cannot take."""

    def __init__(self, info: ModelInfo, view: ViewInfo, ctx: RunContext, n: int) -> None:
        self.info = info
        self.view = view
        self.ctx = ctx
        self.n = n
        self.call: dict[str, Any] = {}
        self.inputs: dict[str, list[Any]] = {}

    def accepts(self, name: str) -> bool:
        return name in self.view.params

    def shared(self, name: str, value: Any, field_name: str) -> None:
        if value is None:
            return
        if self.accepts(name):
            self.call[name] = value
        else:
            self.unsupported(field_name, f"{self.view.class_name} has no {name} argument; it was ignored")

    def each(self, name: str, value: Any, field_name: str) -> None:
        if value is None:
            return
        if self.accepts(name):
            self.inputs[name] = [value] * self.n
        else:
            self.unsupported(field_name, f"{self.view.class_name} has no {name} argument; it was ignored")

    def unsupported(self, field_name: str, details: str) -> None:
        self.ctx.warn(field_name, details)

    def options(self, opts: DiffusersOptions, *, skip: frozenset[str] = frozenset()) -> None:
        """Pass the options that are pipeline arguments: our named ones, then the pipeline's own.

        Args:
            opts: The parsed options.
            skip: Options the caller applies itself (not passed to the pipeline).
        """
        for name in DiffusersOptions.model_fields:
            if name not in SELECTORS and name not in skip:
                self.shared(name, getattr(opts, name), f"options.{name}")
        # The pipeline's own arguments, checked against its signature.
        self.call.update(pipeline_kwargs(opts, self.view))
