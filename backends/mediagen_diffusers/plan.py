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

from mediagen import InvalidRequestError, LoRA

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
        self.handled: set[str] = set()
        """Named options a method here has applied itself (`options` leaves them out)."""

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

    def guidance(
        self,
        guidance: float | None,
        negative_prompt: str | None,
        opts: DiffusersOptions,
        *,
        scale_name: str = "guidance_scale",
    ) -> None:
        """`guidance` and `negative_prompt`, for whichever classifier-free guidance the pipeline runs.

        Most pipelines guide with `guidance_scale` (`scale_name`) and the negative prompt. Those that
        also take `true_cfg_scale` come in two kinds, told apart by that argument's default:

        - above 1 (Qwen-Image and its edit pipelines): real CFG is their guidance, and it runs only
          with a negative prompt (their `guidance_scale` serves guidance-distilled checkpoints and is
          ignored otherwise). `guidance` sets `true_cfg_scale`, with an empty negative prompt when
          none is given: diffusers' documented way to switch it on.
        - 1 (FLUX, HunyuanVideo): `guidance_scale` is the distilled guidance; the negative prompt acts
          only with `options.true_cfg_scale` > 1.

        A negative prompt that would not act is not passed (with a warning), and a pipeline that
        would run no CFG is called with `true_cfg_scale=1`: the same computation as its default,
        without the pipeline's own log line about it.

        Raises:
            InvalidRequestError: Both `guidance` and `options.true_cfg_scale` given where they are
                the same setting.
        """
        if not self.accepts("true_cfg_scale"):
            self.each("negative_prompt", negative_prompt, "negative_prompt")
            self.shared(scale_name, guidance, "guidance")
            return
        name = self.view.class_name
        default = self.view.defaults.get("true_cfg_scale")
        cfg_by_default = isinstance(default, int | float) and default > 1
        chosen = opts.true_cfg_scale
        if cfg_by_default and guidance is not None:
            if chosen is not None:
                raise InvalidRequestError(
                    f"{name} guides with true_cfg_scale, which `guidance` sets: give guidance or "
                    "options.true_cfg_scale, not both"
                )
            chosen = guidance
            if negative_prompt is None and guidance > 1:
                negative_prompt = " "
        elif not cfg_by_default:
            self.shared(scale_name, guidance, "guidance")
        scale = chosen if chosen is not None else default if isinstance(default, int | float) else 1.0
        if negative_prompt is not None and scale <= 1:
            self.unsupported(
                "negative_prompt",
                f"{name} uses a negative prompt only with true_cfg_scale > 1 (options.true_cfg_scale; "
                f"here {scale:g}); it was not used",
            )
            negative_prompt = None
        if negative_prompt is None and scale > 1:
            if chosen is not None:
                self.unsupported(
                    "options.true_cfg_scale",
                    f"{name} runs true_cfg_scale only with a negative prompt; without one it was not used",
                )
            scale = 1.0
        self.each("negative_prompt", negative_prompt, "negative_prompt")
        self.call["true_cfg_scale"] = scale
        self.handled.add("true_cfg_scale")

    def unsupported(self, field_name: str, details: str) -> None:
        self.ctx.warn(field_name, details)

    def options(self, opts: DiffusersOptions, *, skip: frozenset[str] = frozenset()) -> None:
        """Pass the options that are pipeline arguments: our named ones, then the pipeline's own.

        Args:
            opts: The parsed options.
            skip: Options the caller applies itself (not passed to the pipeline).
        """
        for name in DiffusersOptions.model_fields:
            if name not in SELECTORS and name not in skip and name not in self.handled:
                self.shared(name, getattr(opts, name), f"options.{name}")
        # The pipeline's own arguments, checked against its signature.
        self.call.update(pipeline_kwargs(opts, self.view))
