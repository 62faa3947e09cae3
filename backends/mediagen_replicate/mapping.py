"""Turning a typed request into a Replicate model's inputs, checked before anything is sent.

Knowledge comes from two places:

1. **The model version's OpenAPI schema** (Cog's `components.schemas.Input`), fetched once per model
   and cached. Request fields go to inputs with conventional names (`prompt`, `negative_prompt`,
   `width`, `height`, `aspect_ratio`, `seed`, `num_outputs`, `guidance_scale`,
   `num_inference_steps`, `image`, `duration` ...), and the inputs are validated against the
   schema's types, bounds and enums **before** a prediction is created.
2. **A curated table** (`CURATED`) for well-known models, which says what the schema cannot: the
   tasks a model serves, inputs under unconventional names (`first_frame_image`, `images`), inputs
   a model lacks and why, and inputs to always send (TRELLIS's `generate_model`).

A request field that reaches no input becomes a warning (`ctx.warn`), an error under `strict=True`.
Raw inputs from `options` are checked against the same schema and sent as they are.
"""

from __future__ import annotations

import asyncio
import difflib
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from mediagen.artifacts import Artifact
from mediagen.backend import Capabilities, RunContext
from mediagen.errors import InvalidRequestError, ModelNotFoundError, UnsupportedRequestError
from mediagen.requests import TASKS, ImageRequest, Request, Task, VideoRequest
from mediagen.results import GenerationWarning

from .errors import PROVIDER

__all__ = [
    "CURATED",
    "Curated",
    "InputSchema",
    "MappedInputs",
    "ModelCatalog",
    "ModelInfo",
    "ModelRef",
    "build_inputs",
    "inputs_per_call",
]


# -- model references ---------------------------------------------------------------------------

_REF = re.compile(r"^(?P<owner>[A-Za-z0-9][\w.-]*)/(?P<name>[A-Za-z0-9][\w.-]*)(?::(?P<version>[0-9a-f]{64}))?$")


@dataclass(frozen=True)
class ModelRef:
    """`owner/name`, with a version when the model string pins one (`owner/name:<64 hex>`)."""

    owner: str
    name: str
    version: str | None = None

    @classmethod
    def parse(cls, model: str) -> ModelRef:
        """Read a model reference.

        Raises:
            ModelNotFoundError: `model` is not of the form `owner/name` or `owner/name:<version>`.

        Examples:
            >>> ModelRef.parse("stability-ai/sdxl:" + "3" * 64).version == "3" * 64
            True
        """
        match = _REF.match(model.strip())
        if match is None:
            raise ModelNotFoundError(
                f"{model!r} is not a Replicate model reference: use 'owner/name' or "
                "'owner/name:<64-hex version id>', e.g. 'replicate:black-forest-labs/flux-schnell'",
                provider=PROVIDER,
                model=model,
            )
        return cls(match["owner"], match["name"], match["version"])

    @property
    def name_ref(self) -> str:
        """`owner/name`, without the version."""
        return f"{self.owner}/{self.name}"

    def __str__(self) -> str:
        return f"{self.name_ref}:{self.version}" if self.version else self.name_ref


# -- the input schema -----------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSchema:
    """A model version's inputs, from Cog's OpenAPI document, with `allOf`/`$ref` enums resolved.

    An unknown schema (`known=False`: the API showed none) validates nothing and maps request
    fields to their conventional names blindly.
    """

    properties: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Input name → its schema (type, default, minimum, maximum, enum, items ...)."""
    required: frozenset[str] = frozenset()
    """Inputs the model cannot run without."""
    output: Mapping[str, Any] = field(default_factory=dict)
    """The Output schema, as given."""
    known: bool = True
    """False when there was no schema to read."""

    @classmethod
    def from_openapi(cls, document: Mapping[str, Any] | None) -> InputSchema:
        """Read `components.schemas.Input` (and `Output`) from a Cog OpenAPI document."""
        schemas = ((document or {}).get("components") or {}).get("schemas") or {}
        raw = schemas.get("Input")
        if not isinstance(raw, Mapping):
            return cls(known=False, output=schemas.get("Output") or {})
        props = {str(name): _resolve(spec, schemas) for name, spec in (raw.get("properties") or {}).items()}
        return cls(props, frozenset(raw.get("required") or ()), schemas.get("Output") or {})

    def has(self, name: str) -> bool:
        """Whether the model takes input `name` (always True for an unknown schema)."""
        return not self.known or name in self.properties

    def first(self, names: Iterable[str]) -> str | None:
        """The first of `names` that the model takes (for an unknown schema, the first given)."""
        for name in names:
            if self.has(name):
                return name
        return None

    def spec(self, name: str) -> Mapping[str, Any]:
        """The schema of input `name` (empty when unknown)."""
        return self.properties.get(name, {})

    def needs(self, name: str) -> bool:
        """Whether input `name` is required and has no default."""
        return name in self.required and "default" not in self.spec(name)

    def describe(self, name: str) -> str:
        """What input `name` accepts, in words: `integer 1..4`, `one of 'webp', 'png'`."""
        return _describe(self.spec(name))

    def check(self, inputs: Mapping[str, Any], *, model: str, sources: Mapping[str, str] | None = None) -> None:
        """Validate inputs against the schema, all problems at once.

        Args:
            inputs: Input name → value (artifacts stand for the URLs they will become).
            model: The model reference, for the message.
            sources: Input name → the request field it came from, for the message.

        Raises:
            InvalidRequestError: An input is unknown, missing, of the wrong type, out of range or
                not one of the allowed values; the message names each and what is allowed.
        """
        sources = sources or {}
        problems: list[tuple[str, str, str]] = []
        if self.known:
            for name in inputs:
                if name not in self.properties:
                    close = difflib.get_close_matches(name, list(self.properties), n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    problems.append(
                        (
                            name,
                            f"is not an input of this model{hint} (inputs: {', '.join(self.properties)})",
                            "unknown_input",
                        )
                    )
            for name in sorted(self.required):
                if name not in inputs and self.needs(name):
                    problems.append((name, f"is required ({self.describe(name)})", "required"))
        for name, value in inputs.items():
            if name in self.properties:
                problems.extend((name, msg, kind) for msg, kind in _check_value(value, self.properties[name]))
        if not problems:
            return
        lines = []
        for name, msg, _ in problems:
            origin = f" (from {sources[name]})" if name in sources else ""
            shown = f"{name}={_short(inputs[name])}" if name in inputs else name
            lines.append(f"  {shown}{origin}: {msg}")
        raise InvalidRequestError(
            f"{PROVIDER}:{model} would refuse these inputs, so nothing was sent:\n" + "\n".join(lines),
            errors=[{"loc": ("input", name), "msg": msg, "type": kind} for name, msg, kind in problems],
            provider=PROVIDER,
            model=model,
        )


def _resolve(spec: Any, components: Mapping[str, Any]) -> dict[str, Any]:
    # Cog writes enums as `allOf: [{"$ref": "#/components/schemas/<name>"}]` beside default and
    # x-order; merging the referenced schema under the property's own keys gives one flat spec.
    if not isinstance(spec, Mapping):
        return {}
    merged: dict[str, Any] = {}
    parts = list(spec.get("allOf") or []) + list(spec.get("anyOf") or [])
    if "$ref" in spec:
        parts.append({"$ref": spec["$ref"]})
    for part in parts:
        if isinstance(part, Mapping) and "$ref" in part:
            merged.update(components.get(str(part["$ref"]).rsplit("/", 1)[-1]) or {})
        elif isinstance(part, Mapping):
            merged.update(part)
    merged.update({k: v for k, v in spec.items() if k not in ("allOf", "anyOf", "$ref")})
    return merged


def _check_value(value: Any, spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    expected = spec.get("type")
    if value is None:
        return (
            []
            if spec.get("nullable") or expected is None
            else [(f"must not be null ({_describe(spec)})", "invalid_type")]
        )
    if isinstance(expected, str) and not _type_ok(expected, value):
        return [(f"must be {_a(expected)}, not {_json_type(value)} ({_describe(spec)})", "invalid_type")]
    problems: list[tuple[str, str]] = []
    if "enum" in spec and value not in spec["enum"]:
        problems.append((f"must be {_describe_enum(spec['enum'])}", "enum"))
    if _is_number(value):
        low, high = spec.get("minimum"), spec.get("maximum")
        if (low is not None and value < low) or (high is not None and value > high):
            problems.append((f"must be {_range(low, high)}", "range"))
        if spec.get("exclusiveMinimum") is not None and value <= spec["exclusiveMinimum"]:
            problems.append((f"must be greater than {spec['exclusiveMinimum']}", "range"))
        if spec.get("exclusiveMaximum") is not None and value >= spec["exclusiveMaximum"]:
            problems.append((f"must be less than {spec['exclusiveMaximum']}", "range"))
        if spec.get("multipleOf") and not math.isclose(value / spec["multipleOf"], round(value / spec["multipleOf"])):
            problems.append((f"must be a multiple of {spec['multipleOf']}", "multiple_of"))
    if isinstance(value, str):
        if spec.get("format") == "uri" and not value.startswith(("http://", "https://", "data:")):
            problems.append(("must be a URL (http(s):// or data:)", "format"))
        if spec.get("minLength") is not None and len(value) < spec["minLength"]:
            problems.append((f"must be at least {spec['minLength']} characters", "length"))
        if spec.get("maxLength") is not None and len(value) > spec["maxLength"]:
            problems.append((f"must be at most {spec['maxLength']} characters", "length"))
    if isinstance(value, (list, tuple)):
        if spec.get("minItems") is not None and len(value) < spec["minItems"]:
            problems.append((f"needs at least {spec['minItems']} item(s)", "items"))
        if spec.get("maxItems") is not None and len(value) > spec["maxItems"]:
            problems.append((f"takes at most {spec['maxItems']} item(s)", "items"))
        items = spec.get("items")
        if isinstance(items, Mapping):
            for i, item in enumerate(value):
                problems.extend((f"item {i} {msg}", kind) for msg, kind in _check_value(item, items))
    return problems


def _type_ok(expected: str, value: Any) -> bool:
    if isinstance(value, Artifact):
        # An artifact becomes a URL string before it is sent.
        return expected == "string"
    if expected == "string":
        return isinstance(value, str)
    if expected == "boolean":
        return isinstance(value, bool)
    if expected == "integer":
        return _is_number(value) and float(value).is_integer()
    if expected == "number":
        return _is_number(value)
    if expected == "array":
        return isinstance(value, (list, tuple))
    if expected == "object":
        return isinstance(value, Mapping)
    return True


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if _is_number(value):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"


def _a(type_name: str) -> str:
    return f"an {type_name}" if type_name[0] in "aeiou" else f"a {type_name}"


def _range(low: Any, high: Any) -> str:
    if low is not None and high is not None:
        return f"between {low} and {high}"
    return f"at least {low}" if low is not None else f"at most {high}"


def _describe_enum(values: Sequence[Any]) -> str:
    return "one of " + ", ".join(repr(v) for v in values)


def _describe(spec: Mapping[str, Any]) -> str:
    if "enum" in spec:
        return _describe_enum(spec["enum"])
    kind = str(spec.get("type") or "any value")
    if spec.get("format") == "uri":
        kind = "URL"
    if kind == "array" and isinstance(spec.get("items"), Mapping):
        kind = f"array of {_describe(spec['items'])}"
    low, high = spec.get("minimum"), spec.get("maximum")
    if low is not None or high is not None:
        kind += f" {low if low is not None else ''}..{high if high is not None else ''}"
    return kind


def _short(value: Any) -> str:
    if isinstance(value, Artifact):
        return f"<{type(value).__name__}>"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- the curated table ----------------------------------------------------------------------------

_IMAGE_TASKS: frozenset[Task] = frozenset({"text-to-image", "image-to-image"})


@dataclass(frozen=True)
class Curated:
    """What mediagen knows about a well-known model beyond its schema."""

    tasks: frozenset[Task]
    """The tasks the model serves."""
    official: bool = False
    """Official models run by name (`POST /v1/models/{owner}/{name}/predictions`)."""
    inputs: Mapping[str, str | tuple[str, ...] | None] = field(default_factory=dict)
    """Request field → the input(s) it fills; None when the model has no such input."""
    notes: Mapping[str, str] = field(default_factory=dict)
    """Request field → why the model cannot honour it (shown in the warning)."""
    fixed: Mapping[str, Any] = field(default_factory=dict)
    """Inputs always sent (options can still override them)."""
    seeded: Mapping[str, Any] = field(default_factory=dict)
    """Inputs sent along with a seed (TRELLIS randomises its seed unless told not to)."""
    outputs: tuple[str, ...] = ()
    """Keys of an object output, in the order their artifacts are returned (the main one first)."""


_FLUX_NO_NEGATIVE = "FLUX models take no negative prompt; say what you want in the prompt instead"
_VIDEO01_FIXED = "minimax/video-01 always makes a 6 s, 25 fps, 1280x720 video"

CURATED: dict[str, Curated] = {
    "black-forest-labs/flux-schnell": Curated(
        tasks=frozenset({"text-to-image"}),
        official=True,
        inputs={"negative_prompt": None, "guidance": None},
        notes={
            "negative_prompt": _FLUX_NO_NEGATIVE,
            "guidance": "FLUX schnell is guidance-distilled and takes no guidance scale",
        },
    ),
    "black-forest-labs/flux-dev": Curated(
        tasks=_IMAGE_TASKS,
        official=True,
        inputs={"negative_prompt": None, "guidance": "guidance", "strength": "prompt_strength"},
        notes={"negative_prompt": _FLUX_NO_NEGATIVE},
    ),
    "black-forest-labs/flux-1.1-pro": Curated(
        tasks=frozenset({"text-to-image"}),
        official=True,
        inputs={"negative_prompt": None, "guidance": None, "steps": None},
        notes={
            "negative_prompt": _FLUX_NO_NEGATIVE,
            "guidance": "FLUX 1.1 pro sets its own guidance",
            "steps": "FLUX 1.1 pro sets its own number of steps",
        },
    ),
    # Editing: an image to edit (and a mask), or reference images.
    "black-forest-labs/flux-kontext-pro": Curated(
        tasks=frozenset({"text-to-image", "image-to-image"}),
        official=True,
        inputs={"image": "input_image", "images": None, "mask": None, "negative_prompt": None, "steps": None},
        notes={
            "images": "FLUX Kontext [pro] edits one input_image; pass the picture as image=",
            "mask": "FLUX Kontext edits from the prompt alone; use black-forest-labs/flux-fill-pro to paint in a mask",
            "negative_prompt": _FLUX_NO_NEGATIVE,
            "steps": "FLUX Kontext [pro] sets its own number of steps",
        },
    ),
    "black-forest-labs/flux-fill-pro": Curated(
        tasks=frozenset({"inpaint"}),
        official=True,
        inputs={"image": "image", "mask": "mask", "images": None, "negative_prompt": None},
        notes={
            "images": "FLUX Fill [pro] paints into one image; it takes no reference images",
            "negative_prompt": _FLUX_NO_NEGATIVE,
        },
    ),
    "google/nano-banana": Curated(
        tasks=frozenset({"text-to-image", "image-to-image"}),
        official=True,
        # One array holds them all: the image to edit first, then the references.
        inputs={
            "image": "image_input",
            "images": "image_input",
            "mask": None,
            "seed": None,
            "negative_prompt": None,
            "steps": None,
            "guidance": None,
        },
        notes={
            "mask": "nano-banana edits from the prompt; describe the region to change instead of masking it",
            "seed": "nano-banana takes no seed",
        },
    ),
    "stability-ai/sdxl": Curated(tasks=frozenset({"text-to-image", "image-to-image", "inpaint"})),
    "minimax/video-01": Curated(
        tasks=frozenset({"text-to-video", "image-to-video"}),
        official=True,
        inputs={
            "image": "first_frame_image",
            "seed": None,
            "negative_prompt": None,
            "width": None,
            "height": None,
            "frames": None,
            "fps": None,
            "duration_s": None,
            "steps": None,
            "guidance": None,
        },
        notes={
            "seed": "minimax/video-01 takes no seed, so its videos cannot be reproduced",
            "width": _VIDEO01_FIXED,
            "height": _VIDEO01_FIXED,
            "frames": _VIDEO01_FIXED,
            "fps": _VIDEO01_FIXED,
            "duration_s": _VIDEO01_FIXED,
        },
    ),
    "wavespeedai/wan-2.1-i2v-480p": Curated(
        tasks=frozenset({"image-to-video"}),
        official=True,
        inputs={
            "frames": "num_frames",
            "fps": "frames_per_second",
            "steps": "sample_steps",
            "guidance": "sample_guide_scale",
            "width": None,
            "height": None,
        },
        notes={
            "width": "wan-2.1-i2v-480p makes 480p video shaped like the input image",
            "height": "wan-2.1-i2v-480p makes 480p video shaped like the input image",
        },
    ),
    "meta/musicgen": Curated(
        tasks=frozenset({"text-to-music", "text-to-audio"}),
        inputs={"guidance": "classifier_free_guidance", "sample_rate": None, "steps": None},
        notes={"sample_rate": "musicgen makes 32 kHz audio; call .resample() on the result"},
    ),
    "jaaari/kokoro-82m": Curated(
        tasks=frozenset({"text-to-speech", "text-to-audio"}),
        inputs={"prompt": "text", "duration_s": None, "seed": None, "sample_rate": None},
        notes={
            "duration_s": "speech lasts as long as the text takes; speed it up with options={'speed': 1.5}",
            "sample_rate": "kokoro makes 24 kHz audio; call .resample() on the result",
        },
    ),
    "firtoz/trellis": Curated(
        tasks=frozenset({"image-to-3d"}),
        inputs={
            "image": "images",
            "prompt": None,
            "negative_prompt": None,
            "steps": ("ss_sampling_steps", "slat_sampling_steps"),
            "guidance": "ss_guidance_strength",
        },
        notes={"prompt": "TRELLIS reconstructs the object from the image; it reads no prompt"},
        # Without generate_model TRELLIS returns only preview videos.
        fixed={"generate_model": True},
        seeded={"randomize_seed": False},
        outputs=("model_file", "combined_video", "color_video", "normal_video", "gaussian_ply", "no_background_images"),
    ),
}
"""Well-known models by `owner/name`; any other model is mapped from its schema alone."""


# -- conventional input names -------------------------------------------------------------------

# Request field → input names models commonly use for it, most common first.
_NAMES: dict[str, tuple[str, ...]] = {
    "prompt": ("prompt", "text", "input_text", "caption"),
    "negative_prompt": ("negative_prompt", "negative"),
    "seed": ("seed",),
    "n": ("num_outputs", "num_images", "number_of_images", "batch_size"),
    "steps": ("num_inference_steps", "steps", "num_steps", "sample_steps", "sampling_steps"),
    "guidance": ("guidance_scale", "guidance", "cfg_scale", "cfg", "sample_guide_scale"),
    "image": (
        "image",
        "input_image",
        "init_image",
        "start_image",
        "first_frame_image",
        "image_url",
        "images",
        "image_input",
    ),
    # Reference images (edit and multi-reference models): an array input, in order.
    "images": ("image_input", "input_images", "reference_images", "images", "image_urls"),
    "mask": ("mask", "mask_image", "inpaint_mask"),
    "strength": ("prompt_strength", "strength", "denoising_strength", "image_strength"),
    "control_image": ("control_image", "controlnet_image", "conditioning_image"),
    "control_scale": ("controlnet_conditioning_scale", "control_strength", "conditioning_scale"),
    "control_model": ("control_model", "controlnet_model", "controlnet"),
    "output_format": ("output_format",),
    "frames": ("num_frames", "frames", "video_length", "frame_num"),
    "duration_s": ("duration", "duration_seconds", "seconds", "length"),
    "fps": ("fps", "frames_per_second"),
    "voice": ("voice", "speaker", "voice_id"),
    "sample_rate": ("sample_rate",),
    "format": ("output_format", "format", "file_format", "mesh_format"),
    "loras": ("lora_weights", "hf_lora", "lora"),
}
_SIZE_FIELDS = ("width", "height", "aspect_ratio")
_MEDIA_FIELDS = ("image", "mask", "control_image", "images")
# Fields that are not settings of the model: handled by the client or by the task check.
_NOT_INPUTS = frozenset({"options", "n", "kind"})


# -- what we know about one model ---------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """A resolved model: where its predictions are created, and its inputs."""

    ref: ModelRef
    """The reference as given."""
    version: str | None
    """The version predictions run on; None for an official model run by name."""
    schema: InputSchema
    """Its inputs."""
    curated: Curated | None = None
    """The curated entry, for well-known models."""

    @property
    def takes_seed(self) -> bool:
        """Whether the model has a seed input (an unknown schema is assumed to)."""
        if self.curated is not None and "seed" in self.curated.inputs:
            return self.curated.inputs["seed"] is not None
        return self.schema.first(_NAMES["seed"]) is not None

    def capabilities(self) -> Capabilities:
        """What the model can do: tasks from the table or the schema, limits from the schema."""
        schema = self.schema
        outputs = schema.first(_NAMES["n"]) if schema.known else None
        per_call = 1
        if outputs is not None:
            maximum = schema.spec(outputs).get("maximum")
            per_call = int(maximum) if maximum is not None else 64
        frames = schema.first(_NAMES["frames"]) if schema.known else None
        duration = schema.first(_NAMES["duration_s"]) if schema.known else None
        return Capabilities(
            tasks=self.curated.tasks if self.curated else _infer_tasks(schema),
            max_outputs_per_call=max(1, per_call),
            # One seed input for a whole batch cannot make output i with seed + i: one call per output.
            max_seeded_outputs_per_call=1 if self.takes_seed else None,
            max_width=_int_or_none(schema.spec("width").get("maximum")) if schema.known else None,
            max_height=_int_or_none(schema.spec("height").get("maximum")) if schema.known else None,
            max_frames=_int_or_none(schema.spec(frames).get("maximum")) if frames else None,
            max_duration_s=_float_or_none(schema.spec(duration).get("maximum")) if duration else None,
        )


def _infer_tasks(schema: InputSchema) -> frozenset[Task]:
    if not schema.known:
        return frozenset(TASKS)
    text = schema.first(_NAMES["prompt"])
    image = schema.first(_NAMES["image"])
    tasks: set[Task] = set()
    if text is not None and not (image is not None and schema.needs(image)):
        tasks |= {t for t in TASKS if t.startswith("text-to-")}
    if image is not None:
        tasks |= {"image-to-image", "image-to-video", "image-to-3d"}
        if schema.first(_NAMES["mask"]):
            tasks.add("inpaint")
        if schema.first(_NAMES["control_image"]):
            tasks.add("controlnet")
    return frozenset(tasks) or frozenset(TASKS)


def _int_or_none(value: Any) -> int | None:
    return int(value) if _is_number(value) else None


def _float_or_none(value: Any) -> float | None:
    return float(value) if _is_number(value) else None


# -- request → inputs ---------------------------------------------------------------------------


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
        found = schema.first(_NAMES.get(name, (name,)))
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
        media = [n for n in schema.properties if any(n in names for names in (_NAMES["image"], _NAMES["images"]))]
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
    if kind == "integer" and _is_number(value) and not float(value).is_integer():
        rounded = round(value)
        ctx.warn(
            GenerationWarning.compatibility(
                name, f"{model} takes whole numbers for {input_name}; {value} was rounded to {rounded}"
            )
        )
        return rounded
    if kind == "integer" and _is_number(value):
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
        side = int(default) if _is_number(default) else 1024
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


# -- the catalogue: schemas fetched once --------------------------------------------------------

FetchModel = Callable[[str, str], Awaitable[Mapping[str, Any]]]
FetchVersion = Callable[[str, str, str], Awaitable[Mapping[str, Any]]]


class ModelCatalog:
    """Resolves model strings to `ModelInfo`, fetching each model's schema once.

    Concurrent first requests for one model share one fetch; a failed fetch is not cached.

    Args:
        fetch_model: `(owner, name)` → the model object (`GET /v1/models/{owner}/{name}`).
        fetch_version: `(owner, name, version)` → the version object.
    """

    def __init__(self, fetch_model: FetchModel, fetch_version: FetchVersion) -> None:
        self._fetch_model = fetch_model
        self._fetch_version = fetch_version
        self._known: dict[str, ModelInfo] = {}
        self._loading: dict[str, asyncio.Task[ModelInfo]] = {}

    @property
    def cached(self) -> list[str]:
        """References resolved so far."""
        return sorted(self._known)

    async def resolve(self, model: str) -> ModelInfo:
        """The model behind a reference (`owner/name` or `owner/name:<version>`).

        Raises:
            ModelNotFoundError: Bad reference, or Replicate does not know the model or version.
        """
        ref = ModelRef.parse(model)
        key = str(ref)
        if key in self._known:
            return self._known[key]
        task = self._loading.get(key)
        if task is None:
            task = asyncio.ensure_future(self._load(ref))
            self._loading[key] = task
            task.add_done_callback(lambda _: self._loading.pop(key, None))
        # Shielded: one caller giving up must not cancel the fetch the others wait for.
        info = await asyncio.shield(task)
        self._known[key] = info
        return info

    async def _load(self, ref: ModelRef) -> ModelInfo:
        curated = CURATED.get(ref.name_ref)
        try:
            if ref.version is not None:
                version = await self._fetch_version(ref.owner, ref.name, ref.version)
                return ModelInfo(ref, ref.version, InputSchema.from_openapi(version.get("openapi_schema")), curated)
            found = await self._fetch_model(ref.owner, ref.name)
        except ModelNotFoundError as exc:
            close = difflib.get_close_matches(ref.name_ref, list(CURATED), n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]!r}?" if close and close[0] != ref.name_ref else ""
            raise ModelNotFoundError(
                f"Replicate has no model {str(ref)!r} visible to this token.{hint}",
                provider=PROVIDER,
                model=str(ref),
                status=exc.status,
                detail=exc.detail,
            ) from exc
        latest = found.get("latest_version") or {}
        official = found.get("is_official")
        if official is None:
            official = curated.official if curated else not latest
        if not official and not latest.get("id"):
            raise ModelNotFoundError(
                f"{ref.name_ref} has no version to run; pin one as 'owner/name:<version>'",
                provider=PROVIDER,
                model=str(ref),
            )
        schema = InputSchema.from_openapi(latest.get("openapi_schema"))
        return ModelInfo(ref, None if official else str(latest["id"]), schema, curated)


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
