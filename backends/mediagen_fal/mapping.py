"""Turning a typed request into a fal app's input, checked before anything is sent.

fal publishes no machine-readable schema through the queue API, so knowledge comes from a curated
table (`CURATED`, read from each app's API page on fal.ai) for well-known apps; every other app id
gets the generic mapping: the request's fields under fal's conventional input names (`prompt`,
`negative_prompt`, `seed`, `num_images`, `num_inference_steps`, `guidance_scale`, `image_url`,
`mask_url`, `image_urls`, `image_size` ...), set fields only, with no warnings (nothing is known to
warn about), and `options` passed through as raw inputs.

For a curated app, a request field the app has no input for becomes a warning (`ctx.warn`, an error
under `strict=True`); inputs are checked against the app's documented ranges and choices before
the job is submitted; media inputs the app needs are required up front.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mediagen.artifacts import Artifact
from mediagen.backend import Capabilities, RunContext
from mediagen.errors import InvalidRequestError, UnsupportedRequestError
from mediagen.requests import TASKS, ImageRequest, Request, Task, VideoRequest
from mediagen.results import GenerationWarning

from .errors import PROVIDER

__all__ = ["CURATED", "GENERIC_NAMES", "AppSpec", "MappedInputs", "build_inputs", "spec_for"]


@dataclass(frozen=True)
class AppSpec:
    """What mediagen knows about one fal app."""

    tasks: frozenset[Task]
    """Tasks the app serves."""
    inputs: Mapping[str, str | tuple[str, ...] | None] = field(default_factory=dict)
    """Request field → the input(s) it fills; None when the app has no such input."""
    notes: Mapping[str, str] = field(default_factory=dict)
    """Request field → why the app cannot honour it (shown in the warning)."""
    bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    """Input → its documented range, checked before sending."""
    choices: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    """Input → its documented choices, checked before sending."""
    size: str | None = None
    """How the app takes a size: `"image_size"` (presets or `{width, height}`), `"aspect_ratio"`, or None."""
    aspect_ratios: tuple[str, ...] = ()
    """The ratios an `"aspect_ratio"` app offers."""
    durations: tuple[int, ...] = ()
    """Video lengths (seconds) the app offers, sent as strings (Kling's `"5"` / `"10"`)."""
    max_outputs: int = 1
    """Most outputs one job makes (`num_images`)."""
    needs: tuple[str, ...] = ()
    """Request fields the app cannot run without (`image` for image-to-3D)."""
    outputs: tuple[str, ...] = ()
    """Output keys holding the media, the main one first."""
    fixed: Mapping[str, Any] = field(default_factory=dict)
    """Inputs always sent (options can still override them)."""

    def capabilities(self) -> Capabilities:
        """What the app can do, for the client's checks and its splitting of `n`."""
        # fal apps take one seed per call: output i comes from seed + i only as a call of its own.
        return Capabilities(tasks=self.tasks, max_outputs_per_call=self.max_outputs, max_seeded_outputs_per_call=1)


# Request field → fal's conventional input name (FLUX, SDXL, Kling, Stable Audio, TRELLIS pages).
GENERIC_NAMES: dict[str, str] = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "seed": "seed",
    "steps": "num_inference_steps",
    "guidance": "guidance_scale",
    "image": "image_url",
    "mask": "mask_url",
    "images": "image_urls",
    "strength": "strength",
    "control_image": "control_image_url",
    "control_scale": "controlnet_conditioning_scale",
    "output_format": "output_format",
    "frames": "num_frames",
    "fps": "fps",
    "duration_s": "duration",
    "voice": "voice",
    "sample_rate": "sample_rate",
    "format": "output_format",
    "loras": "loras",
}
_OUTPUTS_INPUT = "num_images"

_FLUX_NO_NEGATIVE = "FLUX takes no negative prompt; say what you want in the prompt instead"
_FLUX_FORMATS = ("jpeg", "png")
_IMAGE_TASKS: frozenset[Task] = frozenset({"text-to-image"})
_KLING_RATIOS = ("16:9", "9:16", "1:1")
_KLING_FIXED = "Kling makes 5 s or 10 s clips at its own frame rate; set duration_s"
_ULTRA_RATIOS = ("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21")

_FLUX_COMMON: dict[str, str | tuple[str, ...] | None] = {
    "prompt": "prompt",
    "seed": "seed",
    "output_format": "output_format",
    "negative_prompt": None,
    "image": None,
    "mask": None,
    "images": None,
    "strength": None,
    "control_image": None,
    "loras": None,
}
_FLUX_NOTES = {
    "negative_prompt": _FLUX_NO_NEGATIVE,
    "loras": "use fal-ai/flux-lora for LoRAs",
    "image": "this endpoint is text-to-image; use fal-ai/flux/dev/image-to-image or fal-ai/flux-pro/kontext",
}

CURATED: dict[str, AppSpec] = {
    "fal-ai/flux/schnell": AppSpec(
        tasks=_IMAGE_TASKS,
        inputs={**_FLUX_COMMON, "steps": "num_inference_steps", "guidance": None},
        notes={**_FLUX_NOTES, "guidance": "FLUX schnell is guidance-distilled and takes no guidance scale"},
        bounds={"num_inference_steps": (1, 12), "num_images": (1, 4)},
        choices={"output_format": _FLUX_FORMATS},
        size="image_size",
        max_outputs=4,
        outputs=("images",),
    ),
    "fal-ai/flux/dev": AppSpec(
        tasks=_IMAGE_TASKS,
        inputs={**_FLUX_COMMON, "steps": "num_inference_steps", "guidance": "guidance_scale"},
        notes=_FLUX_NOTES,
        bounds={"num_inference_steps": (1, 50), "guidance_scale": (1, 20), "num_images": (1, 4)},
        choices={"output_format": _FLUX_FORMATS},
        size="image_size",
        max_outputs=4,
        outputs=("images",),
    ),
    "fal-ai/flux-pro/v1.1": AppSpec(
        tasks=_IMAGE_TASKS,
        inputs={**_FLUX_COMMON, "steps": None, "guidance": None},
        notes={
            **_FLUX_NOTES,
            "steps": "FLUX1.1 [pro] sets its own number of steps",
            "guidance": "FLUX1.1 [pro] sets its own guidance",
        },
        bounds={"num_images": (1, 4)},
        choices={"output_format": _FLUX_FORMATS, "safety_tolerance": ("1", "2", "3", "4", "5", "6")},
        size="image_size",
        max_outputs=4,
        outputs=("images",),
    ),
    "fal-ai/flux-pro/v1.1-ultra": AppSpec(
        tasks=frozenset({"text-to-image", "image-to-image"}),
        inputs={
            **_FLUX_COMMON,
            "steps": None,
            "guidance": None,
            "image": "image_url",
            "strength": "image_prompt_strength",
        },
        notes={
            **_FLUX_NOTES,
            "steps": "FLUX1.1 [pro] ultra sets its own number of steps",
            "guidance": "FLUX1.1 [pro] ultra sets its own guidance",
        },
        bounds={"image_prompt_strength": (0, 1), "num_images": (1, 1)},
        choices={"output_format": _FLUX_FORMATS, "aspect_ratio": _ULTRA_RATIOS},
        size="aspect_ratio",
        aspect_ratios=_ULTRA_RATIOS,
        outputs=("images",),
    ),
    "fal-ai/flux-pro/v1/fill": AppSpec(
        tasks=frozenset({"inpaint"}),
        inputs={**_FLUX_COMMON, "image": "image_url", "mask": "mask_url", "steps": None, "guidance": None},
        notes={
            **_FLUX_NOTES,
            "steps": "FLUX.1 Fill [pro] sets its own steps",
            "guidance": "FLUX.1 Fill [pro] sets its own guidance",
        },
        bounds={"num_images": (1, 4)},
        choices={"output_format": _FLUX_FORMATS},
        max_outputs=4,
        needs=("image", "mask"),
        outputs=("images",),
    ),
    "fal-ai/flux-pro/kontext": AppSpec(
        tasks=frozenset({"image-to-image"}),
        inputs={**_FLUX_COMMON, "image": "image_url", "steps": None, "guidance": "guidance_scale"},
        notes={
            **_FLUX_NOTES,
            "steps": "FLUX.1 Kontext [pro] sets its own steps",
            "images": "one image; for several use fal-ai/flux-pro/kontext/max/multi",
        },
        bounds={"guidance_scale": (1, 20), "num_images": (1, 4)},
        choices={"output_format": _FLUX_FORMATS, "aspect_ratio": _ULTRA_RATIOS},
        size="aspect_ratio",
        aspect_ratios=_ULTRA_RATIOS,
        max_outputs=4,
        needs=("image",),
        outputs=("images",),
    ),
    "fal-ai/kling-video/v2.1/master/text-to-video": AppSpec(
        tasks=frozenset({"text-to-video"}),
        inputs={
            "prompt": "prompt",
            "negative_prompt": "negative_prompt",
            "guidance": "cfg_scale",
            "duration_s": "duration",
            "seed": None,
            "steps": None,
            "frames": None,
            "fps": None,
            "image": None,
        },
        notes={
            "seed": "Kling takes no seed, so its videos cannot be reproduced",
            "frames": _KLING_FIXED,
            "fps": _KLING_FIXED,
            "image": "use fal-ai/kling-video/v2.1/master/image-to-video",
        },
        bounds={"cfg_scale": (0, 1)},
        choices={"duration": ("5", "10"), "aspect_ratio": _KLING_RATIOS},
        size="aspect_ratio",
        aspect_ratios=_KLING_RATIOS,
        durations=(5, 10),
        outputs=("video",),
    ),
    "fal-ai/kling-video/v2.1/master/image-to-video": AppSpec(
        tasks=frozenset({"image-to-video"}),
        inputs={
            "prompt": "prompt",
            "negative_prompt": "negative_prompt",
            "guidance": "cfg_scale",
            "duration_s": "duration",
            "image": "image_url",
            "seed": None,
            "steps": None,
            "frames": None,
            "fps": None,
            "width": None,
            "height": None,
        },
        notes={
            "seed": "Kling takes no seed, so its videos cannot be reproduced",
            "frames": _KLING_FIXED,
            "fps": _KLING_FIXED,
            "width": "Kling image-to-video takes its shape from the image",
            "height": "Kling image-to-video takes its shape from the image",
        },
        bounds={"cfg_scale": (0, 1)},
        choices={"duration": ("5", "10")},
        durations=(5, 10),
        needs=("image", "prompt"),
        outputs=("video",),
    ),
    "fal-ai/stable-audio": AppSpec(
        tasks=frozenset({"text-to-audio", "text-to-music", "text-to-sound"}),
        inputs={
            "prompt": "prompt",
            "duration_s": "seconds_total",
            "steps": "steps",
            "seed": None,
            "negative_prompt": None,
            "guidance": None,
            "sample_rate": None,
        },
        notes={
            "seed": "fal's Stable Audio Open takes no seed, so its clips cannot be reproduced",
            "sample_rate": "Stable Audio makes 44.1 kHz audio; call .resample() on the result",
        },
        bounds={"seconds_total": (0, 47), "seconds_start": (0, 47), "steps": (2, 1000)},
        outputs=("audio_file",),
    ),
    "fal-ai/trellis": AppSpec(
        tasks=frozenset({"image-to-3d"}),
        inputs={
            "image": "image_url",
            "seed": "seed",
            "steps": ("ss_sampling_steps", "slat_sampling_steps"),
            "guidance": "ss_guidance_strength",
            "prompt": None,
            "negative_prompt": None,
        },
        notes={"prompt": "TRELLIS reconstructs the object from the image; it reads no prompt"},
        bounds={
            "ss_sampling_steps": (1, 50),
            "slat_sampling_steps": (1, 50),
            "ss_guidance_strength": (0, 10),
            "slat_guidance_strength": (0, 10),
            "mesh_simplify": (0.9, 0.98),
        },
        choices={"texture_size": (512, 1024, 2048)},
        needs=("image",),
        outputs=("model_mesh",),
    ),
}
"""Well-known apps by their full id; any other app id is mapped generically."""

GENERIC = AppSpec(tasks=frozenset(TASKS), max_outputs=1)
"""Any other app: every task allowed (fal decides), one output per job unless `n` says otherwise."""

# Presets of fal's `image_size` (the FLUX family's), by the ratio they make.
_SIZE_PRESETS = {
    (1, 1): "square_hd",
    (4, 3): "landscape_4_3",
    (3, 4): "portrait_4_3",
    (16, 9): "landscape_16_9",
    (9, 16): "portrait_16_9",
}
_MEDIA_FIELDS = ("image", "mask", "control_image", "images")
_NOT_INPUTS = frozenset({"options", "n", "kind", "width", "height", "aspect_ratio", "seed"})


def spec_for(app: str) -> tuple[AppSpec, bool]:
    """The spec of an app id, and whether it is curated."""
    spec = CURATED.get(app)
    return (spec, True) if spec is not None else (GENERIC, False)


@dataclass
class MappedInputs:
    """A request's input for one app, before per-job seeds and output counts are set."""

    inputs: dict[str, Any]
    """Input name → value; artifacts stand where media URLs will go."""
    sources: dict[str, str]
    """Input name → the request field it came from (for error messages)."""
    seed_input: str | None
    """Where a seed goes, when the request has one and the app takes one."""
    outputs_input: str | None
    """The input that sets how many outputs one job makes (`num_images`), if any."""

    def for_job(self, *, seed: int | None, outputs: int) -> dict[str, Any]:
        """The input of one job: `outputs` outputs, the first with `seed`."""
        inputs = dict(self.inputs)
        if seed is not None and self.seed_input is not None:
            inputs.setdefault(self.seed_input, seed)
        if self.outputs_input is not None and outputs > 1:
            inputs.setdefault(self.outputs_input, outputs)
        return inputs


def build_inputs(
    request: Request,
    app: str,
    ctx: RunContext,
    *,
    raw: Mapping[str, Any] | None = None,
) -> MappedInputs:
    """Map a request onto an app's input.

    Args:
        request: The validated request.
        app: The full app id.
        ctx: Where warnings go (`strict=True` turns them into errors).
        raw: Raw inputs from `options`; they win over mapped values.

    Returns:
        The mapped input (not yet checked: call `check_inputs` on each job's input).

    Raises:
        UnsupportedRequestError: A field cannot be honoured and the job is strict, or the app
            needs a media input the request lacks.
    """
    spec, curated = spec_for(app)
    mapped = MappedInputs(inputs={}, sources={}, seed_input=None, outputs_input=None)

    for needed in spec.needs:
        if getattr(request, needed, None) in (None, [], ""):
            raise UnsupportedRequestError(
                f"{PROVIDER}:{app} needs {needed} ({', '.join(sorted(spec.tasks))}); pass {needed}=...",
                feature=needed,
                provider=PROVIDER,
                model=app,
            )

    def target(name: str) -> tuple[str, ...] | None:
        if curated:
            if name not in spec.inputs:
                return None
            chosen = spec.inputs[name]
            return None if chosen is None else (chosen,) if isinstance(chosen, str) else chosen
        generic = GENERIC_NAMES.get(name)
        return (generic,) if generic else None

    def unsupported(name: str) -> None:
        if not curated:
            return  # nothing is known about the app: no warning (fal will say if it minds)
        ctx.warn(
            name,
            spec.notes.get(name)
            or f"{app} has no input for {name}; pass a raw input with options={{...}} if it goes by another name",
        )

    def put(name: str, source: str, value: Any) -> None:
        mapped.inputs[name] = value
        mapped.sources[name] = source

    if request.seed is not None:
        seed_target = target("seed")
        if seed_target is None:
            unsupported("seed")
        else:
            mapped.seed_input = seed_target[0]
    if spec.max_outputs > 1 or not curated:
        mapped.outputs_input = _OUTPUTS_INPUT

    for name, value in _settings(request):
        targets = target(name)
        if targets is None:
            # Media fields are content, not settings: an app that cannot take one must not quietly
            # make something else from the prompt alone.
            if curated and name in _MEDIA_FIELDS:
                raise UnsupportedRequestError(
                    f"{PROVIDER}:{app} cannot take {name}: {spec.notes.get(name) or 'it has no such input'}",
                    feature=name,
                    provider=PROVIDER,
                    model=app,
                )
            unsupported(name)
            continue
        for input_name in targets:
            converted = _convert(name, value, input_name, spec, ctx, app, curated)
            if converted is not _SKIP:
                put(input_name, name, converted)

    if isinstance(request, (ImageRequest, VideoRequest)):
        _map_size(request, spec, curated, put, unsupported, ctx, app)

    for name, value in spec.fixed.items():
        mapped.inputs.setdefault(name, value)
    for name, value in (raw or {}).items():
        if value is not None:
            put(name, f"options[{name!r}]", value)
    return mapped


def check_inputs(inputs: Mapping[str, Any], app: str, *, sources: Mapping[str, str]) -> None:
    """Check one job's input against the app's documented ranges and choices, all problems at once.

    Raises:
        InvalidRequestError: An input is out of range or not one of the choices; nothing was sent.
    """
    spec, _ = spec_for(app)
    problems: list[tuple[str, str, str]] = []
    for name, value in inputs.items():
        if name in spec.bounds and _is_number(value):
            low, high = spec.bounds[name]
            if not low <= value <= high:
                problems.append((name, f"must be between {low:g} and {high:g}", "range"))
        if name in spec.choices and value not in spec.choices[name]:
            problems.append((name, "must be one of " + ", ".join(repr(c) for c in spec.choices[name]), "enum"))
    if not problems:
        return
    lines = [
        f"  {name}={_short(inputs[name])}{f' (from {sources[name]})' if name in sources else ''}: {msg}"
        for name, msg, _ in problems
    ]
    raise InvalidRequestError(
        f"{PROVIDER}:{app} would refuse these inputs, so nothing was sent:\n" + "\n".join(lines),
        errors=[{"loc": ("input", name), "msg": msg, "type": kind} for name, msg, kind in problems],
        provider=PROVIDER,
        model=app,
    )


_SKIP = object()


def _settings(request: Request) -> list[tuple[str, Any]]:
    """The request's fields that ask for something: set, and not at their default."""
    found = []
    for name, info in type(request).model_fields.items():
        if name in _NOT_INPUTS:
            continue
        value = getattr(request, name)
        if value is None or (not info.is_required() and value == info.get_default(call_default_factory=True)):
            continue
        found.append((name, value))
    return found


def _convert(name: str, value: Any, input_name: str, spec: AppSpec, ctx: RunContext, app: str, curated: bool) -> Any:
    """A request value in the form the input takes, or `_SKIP`."""
    if name in _MEDIA_FIELDS:
        return list(value) if name == "images" else value
    if name == "loras":
        # fal's LoRA apps take `loras: [{path, scale}]`.
        return [{"path": lora.path, "scale": lora.scale} for lora in value]
    if name == "duration_s" and spec.durations:
        chosen = min(spec.durations, key=lambda d: abs(d - value))
        if not math.isclose(chosen, value):
            ctx.warn(GenerationWarning.compatibility("duration_s", f"{app} makes {chosen} s clips, not {value:g} s"))
        return str(chosen)
    if name == "duration_s" and input_name == "seconds_total":
        rounded = max(1, round(value))
        if not math.isclose(rounded, value):
            ctx.warn(
                GenerationWarning.compatibility("duration_s", f"{app} takes whole seconds; {value:g} became {rounded}")
            )
        return rounded
    if name in ("output_format", "format") and input_name in spec.choices:
        choices = spec.choices[input_name]
        for candidate in (value, {"jpg": "jpeg"}.get(value, value)):
            if candidate in choices:
                return candidate
        ctx.warn(
            GenerationWarning.compatibility(
                name, f"{app} makes {', '.join(map(str, choices))}, not {value}; saving with a .{value} suffix converts"
            )
        )
        return _SKIP
    if name == "format" and curated:
        ctx.warn(GenerationWarning.compatibility("format", f"{app} makes GLB; Mesh.save('model.{value}') converts"))
        return _SKIP
    return value


def _map_size(
    request: ImageRequest | VideoRequest,
    spec: AppSpec,
    curated: bool,
    put: Any,
    unsupported: Any,
    ctx: RunContext,
    app: str,
) -> None:
    """Width, height and aspect ratio, as the app takes a size."""
    ratio = request.aspect_ratio if isinstance(request, ImageRequest) else None
    width, height = request.width, request.height
    if width is None and height is None and ratio is None:
        return
    given = [n for n, v in (("width", width), ("height", height), ("aspect_ratio", ratio)) if v is not None]
    if curated and any(spec.inputs.get(n, "") is None for n in given):
        for name in given:
            unsupported(name)
        return
    mode = spec.size if curated else ("image_size" if isinstance(request, ImageRequest) else "aspect_ratio")
    if mode == "image_size":
        if width is None and height is None and ratio is not None:
            w, h = (int(x) for x in ratio.split(":"))
            divisor = math.gcd(w, h)
            preset = _SIZE_PRESETS.get((w // divisor, h // divisor))
            if preset is not None:
                put("image_size", "aspect_ratio", preset)
                return
        assert isinstance(request, ImageRequest)
        w, h = request.size(default=1024, multiple=8)
        put("image_size", "width" if width is not None else "aspect_ratio", {"width": w, "height": h})
        return
    if mode == "aspect_ratio":
        target = _ratio(ratio) if ratio else (width or height or 1) / (height or width or 1)
        choices = spec.aspect_ratios
        chosen = _nearest(target, choices) if choices else (ratio or _ratio_text(width or 1, height or 1))
        put("aspect_ratio", "aspect_ratio" if ratio else "width", chosen)
        if not curated:
            return  # nothing is known about the app: no warning
        if width is not None or height is not None:
            ctx.warn(
                GenerationWarning.compatibility(
                    "width", f"{app} takes an aspect ratio, not a size: made at {chosen} in its own resolution"
                )
            )
        elif ratio != chosen:
            ctx.warn(
                GenerationWarning.compatibility("aspect_ratio", f"{app} has no {ratio}; made at {chosen}, the nearest")
            )
        return
    for name in given:
        unsupported(name)


def _ratio(text: str) -> float:
    w, h = (float(x) for x in text.split(":"))
    return w / h


def _ratio_text(width: int, height: int) -> str:
    divisor = math.gcd(width, height)
    return f"{width // divisor}:{height // divisor}"


def _nearest(target: float, choices: Sequence[str]) -> str:
    return min(choices, key=lambda c: abs(math.log(_ratio(c) / target)))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _short(value: Any) -> str:
    if isinstance(value, Artifact):
        return f"<{type(value).__name__}>"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
