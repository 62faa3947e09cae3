"""Turning a typed request into a Replicate model's inputs, checked before anything is sent.

Request fields go to inputs named by the curated table (`curated.py`) or by convention (`prompt`,
`negative_prompt`, `width`, `height`, `aspect_ratio`, `seed`, `num_outputs`, `guidance_scale`,
`num_inference_steps`, `image`, `duration` ...), and every call's inputs are validated against the
model's schema (`schema.py`) before a prediction is created.

A request field that reaches no input becomes a warning (`ctx.warn`), an error under `strict=True`.
Raw inputs from `options` are checked against the same schema and sent as they are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mediagen.backend import RunContext
from mediagen.errors import UnsupportedRequestError
from mediagen.requests import ImageRequest, Request, VideoRequest
from mediagen.results import GenerationWarning

from .catalog import ModelInfo
from .curated import INPUT_NAMES, Curated
from .errors import PROVIDER
from .schema import InputSchema, is_number

__all__ = ["MappedInputs", "build_inputs", "inputs_per_call"]

_SIZE_FIELDS = ("width", "height", "aspect_ratio")
_MEDIA_FIELDS = ("image", "mask", "control_image", "images")
# Fields that are not settings of the model: handled by the client or by the task check.
_NOT_INPUTS = frozenset({"options", "n", "kind"})


@dataclass
class MappedInputs:
    """A request's inputs for one model, before per-call seeds and output counts are set."""

    inputs: dict[str, Any]
    """Input name → value; artifacts stand where media URLs will go."""
    sources: dict[str, str]
    """Input name → the request field it came from (for error messages)."""
    seed_inputs: dict[str, Any]
    """Inputs to set when a seed is given: the seed input's name → None (filled per call), plus extras."""
    outputs_input: str | None
    """The input that sets how many outputs one call makes (`num_outputs`), if any."""

    def for_call(self, *, seed: int | None, outputs: int) -> dict[str, Any]:
        """The inputs of one prediction: `outputs` outputs, the first with `seed`."""
        inputs = dict(self.inputs)
        if seed is not None:
            for name, value in self.seed_inputs.items():
                inputs.setdefault(name, seed if value is None else value)
        if self.outputs_input is not None and outputs > 1:
            inputs[self.outputs_input] = outputs
        return inputs


def build_inputs(
    request: Request, info: ModelInfo, ctx: RunContext, *, raw: Mapping[str, Any] | None = None
) -> MappedInputs:
    """Map a request onto a model's inputs; warn about each field no input takes.

    Args:
        request: The validated request.
        info: The model.
        ctx: Where warnings go (`strict=True` turns them into errors).
        raw: Raw inputs from `options`; they win over mapped values.

    Returns:
        The inputs (not yet validated: call `info.schema.check` on each call's inputs).

    Raises:
        UnsupportedRequestError: A field cannot be honoured and the job is strict.
    """
    schema, curated, model = info.schema, info.curated, str(info.ref)
    mapped = MappedInputs(inputs={}, sources={}, seed_inputs={}, outputs_input=None)

    def target(name: str) -> tuple[str, ...] | None:
        # The curated table first (it may say "none"), then the conventional names.
        if curated is not None and name in curated.inputs:
            chosen = curated.inputs[name]
            return None if chosen is None else (chosen,) if isinstance(chosen, str) else chosen
        found = schema.first(INPUT_NAMES.get(name, (name,)))
        return None if found is None else (found,)

    def unsupported(name: str) -> None:
        why = curated.notes.get(name) if curated else None
        inputs = ", ".join(schema.properties) if schema.known else "unknown"
        ctx.warn(
            name,
            why
            or f"{model} has no input for {name} (its inputs: {inputs}); "
            "pass a raw input with options={...} if it goes by another name",
        )

    def put(name: str, field_name: str, value: Any) -> None:
        mapped.inputs[name] = value
        mapped.sources[name] = field_name

    # Seeds and output counts are set per call; here only where they go.
    if request.seed is not None:
        seed_targets = target("seed")
        if seed_targets is None:
            unsupported("seed")
        else:
            mapped.seed_inputs = {seed_targets[0]: None, **(curated.seeded if curated else {})}
    outputs_targets = target("n")
    mapped.outputs_input = outputs_targets[0] if outputs_targets else None

    for name, value in _settings(request):
        if name in ("seed", *_SIZE_FIELDS):
            continue
        targets = target(name)
        if name == "images":
            targets = _reference_target(targets, schema, curated, model)
        if targets is None:
            if name in _MEDIA_FIELDS:
                # Media is content, not a setting: a model that cannot take it must not quietly make
                # something else from the prompt alone.
                raise _cannot_take(name, schema, curated, model)
            unsupported(name)
            continue
        for input_name in targets:
            converted = _convert(name, value, input_name, schema, ctx, model)
            if converted is _SKIP:
                continue
            if name == "images" and isinstance(mapped.inputs.get(input_name), list):
                # One array takes both (nano-banana's image_input): the image to edit comes first.
                converted = [*mapped.inputs[input_name], *converted]
                name = "image, images"
            put(input_name, name, converted)

    if isinstance(request, (ImageRequest, VideoRequest)):
        _map_size(request, schema, curated, put, unsupported, ctx, model)

    for name, value in (curated.fixed if curated else {}).items():
        mapped.inputs.setdefault(name, value)
    for name, value in (raw or {}).items():
        if value is not None:
            mapped.inputs[name] = value
            mapped.sources[name] = f"options[{name!r}]"
    return mapped


_SKIP = object()


def _reference_target(
    targets: tuple[str, ...] | None, schema: InputSchema, curated: Curated | None, model: str
) -> tuple[str, ...] | None:
    """Where reference images go: an array input only (one image input cannot hold several)."""
    if targets is None:
        return None
    if not schema.known:
        if curated is not None and "images" in curated.inputs:
            return targets  # the table says so
        # Without a schema there is no telling whether the model takes several images.
        return None
    return targets if all(schema.spec(t).get("type") == "array" for t in targets) else None


def _cannot_take(name: str, schema: InputSchema, curated: Curated | None, model: str) -> UnsupportedRequestError:
    why = curated.notes.get(name) if curated else None
    if why is None:
        media = [
            n for n in schema.properties if any(n in names for names in (INPUT_NAMES["image"], INPUT_NAMES["images"]))
        ]
        why = (
            f"its image inputs are {', '.join(media)}"
            if media
            else ("it takes no image" if schema.known else "its inputs are unknown")
        )
    hint = (
        " (reference images need a model with an array input, such as google/nano-banana)" if name == "images" else ""
    )
    return UnsupportedRequestError(
        f"{PROVIDER}:{model} cannot take {name}: {why}{hint}; nothing was sent",
        feature=name,
        provider=PROVIDER,
        model=model,
    )


def _settings(request: Request) -> Iterable[tuple[str, Any]]:
    """The request's fields that ask for something: set, and not at their default."""
    fields = type(request).model_fields
    for name, info in fields.items():
        if name in _NOT_INPUTS:
            continue
        value = getattr(request, name)
        if value is None or (not info.is_required() and value == info.get_default(call_default_factory=True)):
            continue
        yield name, value


def _convert(name: str, value: Any, input_name: str, schema: InputSchema, ctx: RunContext, model: str) -> Any:
    """A request value in the form the input takes (rounded, renamed, wrapped), or `_SKIP`."""
    spec = schema.spec(input_name)
    kind = spec.get("type")
    if name == "images":
        return list(value)
    if name in _MEDIA_FIELDS:
        return [value] if kind == "array" else value
    if name == "loras":
        if len(value) > 1:
            ctx.warn(
                GenerationWarning.compatibility("loras", f"{model} takes one LoRA; only {value[0].path!r} was applied")
            )
        lora = value[0]
        if lora.scale != 1.0 and schema.has("lora_scale"):
            ctx.warn(GenerationWarning.other(f"set the LoRA scale with options={{'lora_scale': {lora.scale}}}"))
        return lora.path
    if name in ("output_format", "format") and "enum" in spec:
        choices = list(spec["enum"])
        for candidate in (value, {"jpeg": "jpg", "jpg": "jpeg"}.get(value, value)):
            if candidate in choices:
                return candidate
        ctx.warn(
            GenerationWarning.compatibility(
                name,
                f"{model} makes {', '.join(map(str, choices))}, not {value}; saving with a .{{value}} suffix converts",
            )
        )
        return _SKIP
    if name == "format":
        # A mesh model without a format input returns its own format (GLB, usually).
        ctx.warn(
            GenerationWarning.compatibility(
                "format", f"{model} chooses its own mesh format; Mesh.save('model.{value}') converts"
            )
        )
        return _SKIP
    if kind == "integer" and is_number(value) and not float(value).is_integer():
        rounded = round(value)
        ctx.warn(
            GenerationWarning.compatibility(
                name, f"{model} takes whole numbers for {input_name}; {value} was rounded to {rounded}"
            )
        )
        return rounded
    if kind == "integer" and is_number(value):
        return int(value)
    return value


def _map_size(
    request: ImageRequest | VideoRequest,
    schema: InputSchema,
    curated: Curated | None,
    put: Callable[[str, str, Any], None],
    unsupported: Callable[[str], None],
    ctx: RunContext,
    model: str,
) -> None:
    """Width, height and aspect ratio: sent as given, or as the model's nearest aspect ratio."""
    width, height = request.width, request.height
    ratio = request.aspect_ratio if isinstance(request, ImageRequest) else None
    if width is None and height is None and ratio is None:
        return
    given = [n for n, v in (("width", width), ("height", height), ("aspect_ratio", ratio)) if v is not None]
    blocked = curated is not None and any(curated.inputs.get(n, "") is None for n in given)
    has_size = not blocked and schema.has("width") and schema.has("height")
    ratio_spec = schema.spec("aspect_ratio")
    has_ratio = not blocked and schema.known and "aspect_ratio" in schema.properties
    if width is not None or height is not None:
        if has_size:
            if has_ratio and "custom" in ratio_spec.get("enum", ()):
                # FLUX 1.1 pro style: explicit pixels only count with aspect_ratio="custom".
                put("aspect_ratio", "width", "custom")
            put("width", "width", width or height)
            put("height", "height", height or width)
            return
        if has_ratio and width and height:
            choices = ratio_spec.get("enum")
            chosen = _nearest_ratio(width / height, choices) if choices else _ratio_text(width, height)
            if chosen is not None:
                put("aspect_ratio", "width", chosen)
                ctx.warn(
                    GenerationWarning.compatibility(
                        "width",
                        f"{model} takes an aspect ratio, not a size: asked {width}x{height}, "
                        f"made at {chosen} in the model's own resolution",
                    )
                )
                return
        for name in given:
            unsupported(name)
        return
    assert ratio is not None
    if has_ratio:
        choices = ratio_spec.get("enum")
        w, h = (int(x) for x in ratio.split(":"))
        chosen = ratio if not choices or ratio in choices else _nearest_ratio(w / h, choices)
        if chosen is not None:
            put("aspect_ratio", "aspect_ratio", chosen)
            if chosen != ratio:
                ctx.warn(
                    GenerationWarning.compatibility(
                        "aspect_ratio", f"{model} has no {ratio}; made at {chosen}, the nearest"
                    )
                )
            return
    if has_size:
        default = schema.spec("width").get("default")
        side = int(default) if is_number(default) else 1024
        w, h = request.size(default=side) if isinstance(request, ImageRequest) else (side, side)
        put("width", "aspect_ratio", w)
        put("height", "aspect_ratio", h)
        return
    unsupported("aspect_ratio")


def _ratio_text(width: int, height: int) -> str:
    divisor = math.gcd(width, height)
    return f"{width // divisor}:{height // divisor}"


def _nearest_ratio(target: float, choices: Sequence[Any] | None) -> str | None:
    best: tuple[float, str] | None = None
    for choice in choices or ():
        try:
            w, h = (float(x) for x in str(choice).split(":"))
        except ValueError:
            continue  # "custom", "match_input_image" ...
        distance = abs(math.log((w / h) / target))
        if best is None or distance < best[0]:
            best = (distance, str(choice))
    return best[1] if best else None


def inputs_per_call(
    info: ModelInfo, mapped: MappedInputs, calls: Sequence[tuple[int | None, int]]
) -> list[dict[str, Any]]:
    """Each prediction's inputs, all validated against the schema before any is sent.

    Args:
        info: The model.
        mapped: The mapped inputs.
        calls: `(seed, outputs)` of each prediction to make.

    Returns:
        The inputs of each call, in order.

    Raises:
        InvalidRequestError: Some call's inputs break the schema.
    """
    per_call = [mapped.for_call(seed=seed, outputs=outputs) for seed, outputs in calls]
    for inputs in per_call:
        info.schema.check(inputs, model=str(info.ref), sources=mapped.sources)
    return per_call
