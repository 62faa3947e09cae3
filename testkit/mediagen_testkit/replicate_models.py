"""The models, faults and counters of the test kit's Replicate simulation (served by `replicate_server`).

What a *simulation of Replicate* needs beyond `mediagen serve`'s own API lives here, as data:

- `FakeModel`s shaped like real Replicate models (`image_model` like flux-schnell, `sdxl_model`,
  `video_model`, `audio_model`, `tts_model`, `mesh_model`, `i2v_model`, `edit_model`): their Cog
  OpenAPI schemas, whether they run by name (official) or by version, their run time and progress
  lines, and an output function making tiny real media (PNG/WebP/JPEG, WAV, MP4, GLB)
  deterministically from the input;
- Replicate's input validation (`validate_input`, `invalid_fields` in its wording);
- `FaultPlan` (what to break) and `ServerStats` (what the server saw), used by the server's
  fault layer;
- small helpers: `version_for`, `parse_duration`, `tqdm_line` (and `sign_webhook`, the SDK's, re-exported).

The module imports only the standard library, numpy and Pillow (imageio when a video is made).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Final, Protocol

from mediagen.webhooks import sign_webhook  # re-exported: how Replicate signs, for tests

from . import media_fixtures as media

__all__ = [
    "SDXL_VERSION",
    "TERMINAL_STATUSES",
    "WEBHOOK_EVENTS",
    "DEFAULT_WEBHOOK_EVENTS",
    "OutputFn",
    "Publisher",
    "FakeModel",
    "FaultPlan",
    "ServerStats",
    "image_model",
    "sdxl_model",
    "video_model",
    "audio_model",
    "tts_model",
    "mesh_model",
    "i2v_model",
    "edit_model",
    "default_models",
    "version_for",
    "parse_duration",
    "sign_webhook",
    "tqdm_line",
    "validate_input",
]


class Publisher(Protocol):
    """Where a model's output function publishes a file; it answers with the file's URL (or a stand-in)."""

    def serve_bytes(self, data: bytes, filename: str, content_type: str | None = None) -> str: ...


OutputFn = Callable[[dict[str, Any], Publisher], Any]
"""A model's output function: ``(input with defaults applied, publisher) -> output JSON``."""

TERMINAL_STATUSES: Final = frozenset({"succeeded", "failed", "canceled", "aborted"})
WEBHOOK_EVENTS: Final = frozenset({"start", "output", "logs", "completed"})
DEFAULT_WEBHOOK_EVENTS: Final = frozenset({"output", "completed"})

_DURATION_RE: Final = re.compile(r"^(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?$")

# --------------------------------------------------------------------------------------------------
# Small public helpers
# --------------------------------------------------------------------------------------------------


def version_for(owner: str, name: str) -> str:
    """Derive a stable 64-hex version id from a model's owner and name.

    Args:
        owner: Model owner.
        name: Model name.

    Returns:
        ``sha256("owner/name")`` as 64 lowercase hex digits.
    """
    return hashlib.sha256(f"{owner}/{name}".encode()).hexdigest()


def parse_duration(value: str, *, minimum_s: float = 5.0) -> float:
    """Parse a ``Cancel-After`` duration: ``"5s"``, ``"1m30s"``, ``"1h"``, or bare seconds ``"90"``.

    Args:
        value: The header value.
        minimum_s: Smallest accepted duration (Replicate's minimum is 5 s).

    Returns:
        The duration in seconds.

    Raises:
        ValueError: When the value is malformed or shorter than ``minimum_s``.
    """
    text = value.strip()
    seconds: float
    try:
        seconds = float(text)
    except ValueError:
        match = _DURATION_RE.match(text)
        if not text or match is None:
            raise ValueError(f"invalid duration {value!r}") from None
        parts = match.groupdict()
        seconds = float(parts["h"] or 0) * 3600 + float(parts["m"] or 0) * 60 + float(parts["s"] or 0)
    if not math.isfinite(seconds) or seconds < minimum_s:
        raise ValueError(f"duration {value!r} is below the minimum of {minimum_s:g} s")
    return seconds


def tqdm_line(step: int, total: int, elapsed_s: float) -> str:
    """Format a progress line like tqdm's default, e.g. ``" 40%|████      | 2/5 [00:01<00:01,  1.57it/s]"``.

    Args:
        step: Steps done.
        total: Steps in all.
        elapsed_s: Seconds since the first step began.

    Returns:
        One line, without the newline; it matches the official client's progress regex.
    """
    frac = step / total if total else 1.0
    cells = frac * 10
    full = int(cells)
    partial = " ▏▎▍▌▋▊▉"[int((cells - full) * 8)] if full < 10 else ""
    bar = ("█" * full + partial.strip()).ljust(10)
    rate = step / elapsed_s if elapsed_s > 0 else 0.0
    remaining = (total - step) / rate if rate > 0 else 0.0

    def mmss(s: float) -> str:
        return f"{int(s) // 60:02d}:{int(s) % 60:02d}"

    timing = f"[{mmss(elapsed_s)}<{mmss(remaining)}, {rate:5.2f}it/s]"
    return f"{round(frac * 100):3d}%|{bar}| {step}/{total} {timing}"


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------


@dataclass
class FakeModel:
    """A model the fake server can run.

    Attributes:
        owner: Model owner, e.g. ``"black-forest-labs"``.
        name: Model name, e.g. ``"flux-schnell"``.
        output: ``(input, server) -> output JSON``. It gets the input with schema defaults applied (and a
            random ``seed`` filled in when the model has a seed input the caller left out) and usually
            returns URLs made with the publisher's ``serve_bytes``. An exception fails the prediction
            with its message as ``error``.
        version: 64-hex version id; derived from owner/name by :func:`version_for` when empty.
        official: Official models can be run by name (``POST /v1/models/{owner}/{name}/predictions`` or
            ``version: "owner/name"``); their predictions report ``version: "hidden"``.
        input_schema: The Cog ``components.schemas.Input`` object (properties, types, ``minimum``,
            ``maximum``, ``enum`` (inline or through ``allOf: [{"$ref": ...}]``), ``default``, ``x-order``,
            ``required``). Inputs are validated against it before a prediction is created.
        output_schema: The Cog ``components.schemas.Output`` object.
        extra_schemas: Other ``components.schemas`` entries that ``$ref``s in ``input_schema`` point at.
        run_seconds: Time from ``processing`` to the end, in model time (divided by the server's
            ``time_scale`` in real time).
        log_steps: Number of tqdm-like progress lines written to ``logs`` while processing.
        fail_with: When set, every prediction ends ``failed`` with this ``error``.
        seed_input: Name of the seed input that the server fills in when missing (``None``: none).
        description: Shown in the model object.
    """

    owner: str
    name: str
    _: KW_ONLY
    output: OutputFn
    version: str = ""
    official: bool = False
    input_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    output_schema: dict[str, Any] = field(default_factory=lambda: {"title": "Output"})
    extra_schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    run_seconds: float = 1.0
    log_steps: int = 0
    fail_with: str | None = None
    seed_input: str | None = "seed"
    description: str = ""

    def __post_init__(self) -> None:
        if not self.version:
            self.version = version_for(self.owner, self.name)
        if not re.fullmatch(r"[0-9a-f]{64}", self.version):
            raise ValueError(f"version must be 64 lowercase hex digits, got {self.version!r}")

    @property
    def ref(self) -> str:
        """``"owner/name"``."""
        return f"{self.owner}/{self.name}"

    def openapi_schema(self) -> dict[str, Any]:
        """Build the Cog-style OpenAPI document served with the version.

        Returns:
            A dict with ``components.schemas.Input`` and ``components.schemas.Output``.
        """
        return {
            "openapi": "3.0.2",
            "info": {"title": "Cog", "version": "0.1.0"},
            "paths": {},
            "components": {
                "schemas": {
                    **self.extra_schemas,
                    "Input": self.input_schema,
                    "Output": self.output_schema,
                }
            },
        }

    def version_json(self) -> dict[str, Any]:
        """Build the version object (``GET /v1/models/{o}/{n}/versions/{id}``).

        Returns:
            ``{"id", "created_at", "cog_version", "openapi_schema"}``.
        """
        return {
            "id": self.version,
            "created_at": "2024-01-01T00:00:00.000000Z",
            "cog_version": "0.9.4",
            "openapi_schema": self.openapi_schema(),
        }

    def properties(self) -> dict[str, dict[str, Any]]:
        """Input properties with ``allOf``/``$ref`` resolved (so each carries its enum and type).

        Returns:
            Property name → merged schema.
        """
        props = self.input_schema.get("properties", {})
        return {name: _resolve_schema(spec, self.extra_schemas) for name, spec in props.items()}

    def apply_defaults(self, given: dict[str, Any]) -> dict[str, Any]:
        """Return ``given`` completed with the schema's defaults.

        Args:
            given: The caller's input.

        Returns:
            A new dict.
        """
        merged = {n: s["default"] for n, s in self.properties().items() if "default" in s}
        merged.update(given)
        return merged


def _resolve_schema(spec: dict[str, Any], components: dict[str, dict[str, Any]]) -> dict[str, Any]:
    # Cog writes enums as `allOf: [{"$ref": "#/components/schemas/<name>"}]` next to default/x-order;
    # merging the referenced schema under the property's own keys gives one flat spec to validate.
    merged: dict[str, Any] = {}
    refs = list(spec.get("allOf", []))
    if "$ref" in spec:
        refs.append({"$ref": spec["$ref"]})
    for sub in refs:
        if "$ref" in sub:
            merged.update(components.get(str(sub["$ref"]).rsplit("/", 1)[-1], {}))
        else:
            merged.update(sub)
    merged.update({k: v for k, v in spec.items() if k not in ("allOf", "$ref")})
    return merged


# -- input validation (gojsonschema-flavoured messages; the real wording is undocumented) -----------

_JSON_TYPE_NAMES: Final = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
    type(None): "null",
}


def _type_ok(expected: str, value: Any) -> bool:
    if expected == "string":
        return isinstance(value, str)
    if expected == "boolean":
        return isinstance(value, bool)
    if expected == "integer":
        # JSON has one number type: 3.0 is an integer to a JSON-schema validator.
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if expected == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected == "array":
        return isinstance(value, list)
    if expected == "object":
        return isinstance(value, dict)
    return True


def _check_value(path: str, value: Any, spec: dict[str, Any], components: dict[str, Any]) -> list[dict[str, str]]:
    spec = _resolve_schema(spec, components)
    errors: list[dict[str, str]] = []
    expected = spec.get("type")
    if isinstance(expected, str) and not _type_ok(expected, value):
        given = _JSON_TYPE_NAMES.get(type(value), type(value).__name__)
        return [
            {
                "type": "invalid_type",
                "field": path,
                "description": f"Invalid type. Expected: {expected}, given: {given}",
            }
        ]
    if "enum" in spec and value not in spec["enum"]:
        choices = ", ".join(json.dumps(c) for c in spec["enum"])
        errors.append({"type": "enum", "field": path, "description": f"{path} must be one of the following: {choices}"})
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in spec and value < spec["minimum"]:
            errors.append(
                {
                    "type": "number_gte",
                    "field": path,
                    "description": f"Must be greater than or equal to {spec['minimum']}",
                }
            )
        if "maximum" in spec and value > spec["maximum"]:
            errors.append(
                {
                    "type": "number_lte",
                    "field": path,
                    "description": f"Must be less than or equal to {spec['maximum']}",
                }
            )
    if spec.get("format") == "uri" and isinstance(value, str):
        if not value.startswith(("http://", "https://", "data:")):
            errors.append({"type": "format", "field": path, "description": "Does not match format 'uri'"})
    if isinstance(value, list):
        if "minItems" in spec and len(value) < spec["minItems"]:
            errors.append(
                {
                    "type": "array_min_items",
                    "field": path,
                    "description": f"Array must have at least {spec['minItems']} items",
                }
            )
        if "maxItems" in spec and len(value) > spec["maxItems"]:
            errors.append(
                {
                    "type": "array_max_items",
                    "field": path,
                    "description": f"Array must have at most {spec['maxItems']} items",
                }
            )
        items = spec.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                errors.extend(_check_value(f"{path}.{i}", item, items, components))
    return errors


def validate_input(model: FakeModel, given: dict[str, Any]) -> list[dict[str, str]]:
    """Validate a prediction input against the model's schema.

    Args:
        model: The model.
        given: The caller's ``input`` object.

    Returns:
        ``invalid_fields`` entries (``type``, ``field``, ``description``); empty when valid.
    """
    schema = model.input_schema
    props: dict[str, Any] = schema.get("properties", {})
    errors: list[dict[str, str]] = []
    for name in schema.get("required", []):
        if name not in given:
            errors.append({"type": "required", "field": "input", "description": f"{name} is required"})
    for name, value in given.items():
        if name not in props:
            errors.append(
                {
                    "type": "additional_property_not_allowed",
                    "field": "input",
                    "description": f"Additional property {name} is not allowed",
                }
            )
            continue
        errors.extend(_check_value(f"input.{name}", value, props[name], model.extra_schemas))
    return errors


# -- media, cached: many predictions with the same settings share one encoded file ----------------------


@functools.lru_cache(maxsize=512)
def _image(width: int, height: int, seed: int, fmt: str, quality: int) -> bytes:
    return media.image_bytes(width, height, seed=seed, fmt=fmt, quality=quality)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=64)
def _video(width: int, height: int, frames: int, fps: int, seed: int) -> tuple[bytes, str, str]:
    return media.video_bytes(width, height, frames=frames, fps=fps, seed=seed)


@functools.lru_cache(maxsize=128)
def _wav(duration_s: float, frequency: float, channels: int, sample_rate: int) -> bytes:
    return media.wav_bytes(duration_s, frequency=frequency, channels=channels, sample_rate=sample_rate)


@functools.lru_cache(maxsize=64)
def _glb(seed: int) -> bytes:
    return media.glb_bytes(seed=seed)


def _text_seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def _aspect_size(aspect_ratio: str, long_side: int = 64) -> tuple[int, int]:
    try:
        w, h = (float(x) for x in aspect_ratio.split(":"))
    except ValueError:
        w, h = 1.0, 1.0
    if w >= h:
        return long_side, max(8, round(long_side * h / w))
    return max(8, round(long_side * w / h)), long_side


def _scaled_size(width: int, height: int, long_side: int = 64) -> tuple[int, int]:
    scale = long_side / max(width, height, 1)
    return max(8, round(width * scale)), max(8, round(height * scale))


_URI_ARRAY: Final = {"type": "array", "items": {"type": "string", "format": "uri"}, "title": "Output"}
_URI: Final = {"type": "string", "format": "uri", "title": "Output"}


def _p(order: int, type_: str | None = None, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"x-order": order}
    if type_:
        spec["type"] = type_
    spec.update(extra)
    return spec


def image_model(
    *,
    owner: str = "black-forest-labs",
    name: str = "flux-schnell",
    official: bool = True,
    run_seconds: float = 1.0,
    log_steps: int = 4,
    fail_with: str | None = None,
) -> FakeModel:
    """A text-to-image model shaped like ``black-forest-labs/flux-schnell`` (official, run by name).

    Outputs a list of image URLs (``num_outputs`` of them) in ``output_format``; each image is 64 px on its
    long side with the shape of ``aspect_ratio`` and a colour derived from ``seed + index``.

    Args:
        owner: Model owner.
        name: Model name.
        official: Whether it can be run by name.
        run_seconds: Model latency in model time.
        log_steps: Progress lines to write.
        fail_with: Make every prediction fail with this error.

    Returns:
        The model.
    """
    ratios = ["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"]
    schema = {
        "type": "object",
        "title": "Input",
        "required": ["prompt"],
        "properties": {
            "prompt": _p(0, "string", title="Prompt", description="Prompt for generated image"),
            "aspect_ratio": _p(1, "string", enum=ratios, default="1:1", title="aspect_ratio"),
            "num_outputs": _p(2, "integer", minimum=1, maximum=4, default=1, title="Num Outputs"),
            "seed": _p(3, "integer", title="Seed", description="Random seed. Set for reproducible generation"),
            "output_format": _p(4, "string", enum=["webp", "jpg", "png"], default="webp", title="output_format"),
            "output_quality": _p(5, "integer", minimum=0, maximum=100, default=80, title="Output Quality"),
            "num_inference_steps": _p(6, "integer", minimum=1, maximum=4, default=4, title="Num Inference Steps"),
            "go_fast": _p(7, "boolean", default=True, title="Go Fast"),
            "megapixels": _p(8, "string", enum=["1", "0.25"], default="1", title="megapixels"),
            "disable_safety_checker": _p(9, "boolean", default=False, title="Disable Safety Checker"),
        },
    }

    def output(inp: dict[str, Any], server: Publisher) -> list[str]:
        w, h = _aspect_size(str(inp["aspect_ratio"]))
        fmt = str(inp["output_format"])
        return [
            server.serve_bytes(_image(w, h, int(inp["seed"]) + i, fmt, int(inp["output_quality"])), f"out-{i}.{fmt}")
            for i in range(int(inp["num_outputs"]))
        ]

    return FakeModel(
        owner,
        name,
        output=output,
        official=official,
        input_schema=schema,
        output_schema=dict(_URI_ARRAY),
        run_seconds=run_seconds,
        log_steps=log_steps,
        fail_with=fail_with,
        description="Fake fast text-to-image model (flux-schnell-like).",
    )


SDXL_VERSION: Final = "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"


def sdxl_model(
    *,
    owner: str = "stability-ai",
    name: str = "sdxl",
    version: str = SDXL_VERSION,
    run_seconds: float = 4.0,
    log_steps: int = 5,
    fail_with: str | None = None,
) -> FakeModel:
    """A version-addressed text-to-image model shaped like ``stability-ai/sdxl`` (not official).

    Uses SDXL's real version id by default; the scheduler and refine enums are ``$ref``s, as Cog writes them.
    Outputs a list of PNG URLs scaled down to 64 px on the long side of ``width x height``.

    Args:
        owner: Model owner.
        name: Model name.
        version: 64-hex version id.
        run_seconds: Model latency in model time.
        log_steps: Progress lines to write.
        fail_with: Make every prediction fail with this error.

    Returns:
        The model.
    """
    schedulers = [
        "DDIM",
        "DPMSolverMultistep",
        "HeunDiscrete",
        "KarrasDPM",
        "K_EULER_ANCESTRAL",
        "K_EULER",
        "PNDM",
    ]
    schema = {
        "type": "object",
        "title": "Input",
        "properties": {
            "prompt": _p(0, "string", default="An astronaut riding a rainbow unicorn", title="Prompt"),
            "negative_prompt": _p(1, "string", default="", title="Negative Prompt"),
            "image": _p(2, "string", format="uri", title="Image", description="Input image for img2img"),
            "mask": _p(3, "string", format="uri", title="Mask", description="Inpainting mask"),
            "width": _p(4, "integer", default=1024, minimum=128, maximum=2048, title="Width"),
            "height": _p(5, "integer", default=1024, minimum=128, maximum=2048, title="Height"),
            "num_outputs": _p(6, "integer", default=1, minimum=1, maximum=4, title="Num Outputs"),
            "scheduler": _p(7, allOf=[{"$ref": "#/components/schemas/scheduler"}], default="K_EULER"),
            "num_inference_steps": _p(8, "integer", default=50, minimum=1, maximum=500, title="Steps"),
            "guidance_scale": _p(9, "number", default=7.5, minimum=1, maximum=50, title="Guidance Scale"),
            "prompt_strength": _p(10, "number", default=0.8, minimum=0, maximum=1, title="Prompt Strength"),
            "seed": _p(11, "integer", title="Seed", description="Random seed. Leave blank to randomize"),
            "refine": _p(12, allOf=[{"$ref": "#/components/schemas/refine"}], default="no_refiner"),
            "lora_scale": _p(13, "number", default=0.6, minimum=0, maximum=1, title="Lora Scale"),
            "apply_watermark": _p(14, "boolean", default=True, title="Apply Watermark"),
            "disable_safety_checker": _p(15, "boolean", default=False, title="Disable Safety Checker"),
        },
    }
    extra = {
        "scheduler": {
            "enum": schedulers,
            "type": "string",
            "title": "scheduler",
            "description": "An enumeration.",
        },
        "refine": {
            "enum": ["no_refiner", "expert_ensemble_refiner", "base_image_refiner"],
            "type": "string",
            "title": "refine",
            "description": "An enumeration.",
        },
    }

    def output(inp: dict[str, Any], server: Publisher) -> list[str]:
        w, h = _scaled_size(int(inp["width"]), int(inp["height"]))
        return [
            server.serve_bytes(_image(w, h, int(inp["seed"]) + i, "png", 100), f"out-{i}.png")
            for i in range(int(inp["num_outputs"]))
        ]

    return FakeModel(
        owner,
        name,
        output=output,
        version=version,
        official=False,
        input_schema=schema,
        output_schema=dict(_URI_ARRAY),
        extra_schemas=extra,
        run_seconds=run_seconds,
        log_steps=log_steps,
        fail_with=fail_with,
        description="Fake SDXL (version-addressed).",
    )


def video_model(
    *,
    owner: str = "minimax",
    name: str = "video-01",
    official: bool = True,
    run_seconds: float = 30.0,
    log_steps: int = 5,
    fail_with: str | None = None,
) -> FakeModel:
    """A text/image-to-video model shaped like ``minimax/video-01`` (official).

    Outputs one URL: an 8-frame 64x48 MP4 (or an animated GIF when imageio-ffmpeg is missing) whose colour
    comes from the prompt.

    Args:
        owner: Model owner.
        name: Model name.
        official: Whether it can be run by name.
        run_seconds: Model latency in model time.
        log_steps: Progress lines to write.
        fail_with: Make every prediction fail with this error.

    Returns:
        The model.
    """
    schema = {
        "type": "object",
        "title": "Input",
        "required": ["prompt"],
        "properties": {
            "prompt": _p(0, "string", title="Prompt", description="Text prompt for generation"),
            "prompt_optimizer": _p(1, "boolean", default=True, title="Prompt Optimizer"),
            "first_frame_image": _p(2, "string", format="uri", title="First Frame Image"),
            "subject_reference": _p(3, "string", format="uri", title="Subject Reference"),
        },
    }

    def output(inp: dict[str, Any], server: Publisher) -> str:
        data, ext, ctype = _video(64, 48, 8, 8, _text_seed(str(inp["prompt"])))
        return server.serve_bytes(data, f"output.{ext}", ctype)

    return FakeModel(
        owner,
        name,
        output=output,
        official=official,
        input_schema=schema,
        output_schema=dict(_URI),
        run_seconds=run_seconds,
        log_steps=log_steps,
        fail_with=fail_with,
        seed_input=None,
        description="Fake text-to-video model (video-01-like).",
    )


def audio_model(
    *,
    owner: str = "meta",
    name: str = "musicgen",
    official: bool = False,
    run_seconds: float = 8.0,
    log_steps: int = 4,
    fail_with: str | None = None,
) -> FakeModel:
    """A text-to-music model shaped like ``meta/musicgen`` (version-addressed).

    Outputs one WAV URL: a sine tone of ``duration`` seconds at 8 kHz, stereo for the ``stereo-*`` model
    versions, its pitch derived from the seed. ``output_format="mp3"`` still gives WAV bytes (the standard
    library cannot encode MP3); a log line says so.

    Args:
        owner: Model owner.
        name: Model name.
        official: Whether it can be run by name.
        run_seconds: Model latency in model time.
        log_steps: Progress lines to write.
        fail_with: Make every prediction fail with this error.

    Returns:
        The model.
    """
    versions = ["stereo-melody-large", "stereo-large", "melody-large", "large"]
    schema = {
        "type": "object",
        "title": "Input",
        "properties": {
            "prompt": _p(0, "string", title="Prompt", description="A description of the music you want"),
            "input_audio": _p(1, "string", format="uri", title="Input Audio"),
            "duration": _p(2, "integer", default=8, minimum=1, maximum=30, title="Duration"),
            "model_version": _p(3, "string", enum=versions, default="stereo-melody-large", title="model_version"),
            "continuation": _p(4, "boolean", default=False, title="Continuation"),
            "output_format": _p(5, "string", enum=["wav", "mp3"], default="wav", title="output_format"),
            "normalization_strategy": _p(
                6, "string", enum=["loudness", "clip", "peak", "rms"], default="loudness", title="norm"
            ),
            "top_k": _p(7, "integer", default=250, title="Top K"),
            "top_p": _p(8, "number", default=0, title="Top P"),
            "temperature": _p(9, "number", default=1, title="Temperature"),
            "classifier_free_guidance": _p(10, "integer", default=3, title="Classifier Free Guidance"),
            "seed": _p(11, "integer", title="Seed"),
        },
    }

    def output(inp: dict[str, Any], server: Publisher) -> str:
        channels = 2 if str(inp["model_version"]).startswith("stereo") else 1
        freq = 220.0 + (int(inp["seed"]) % 440)
        return server.serve_bytes(_wav(float(inp["duration"]), freq, channels, 8000), "out.wav", "audio/wav")

    return FakeModel(
        owner,
        name,
        output=output,
        official=official,
        input_schema=schema,
        output_schema=dict(_URI),
        run_seconds=run_seconds,
        log_steps=log_steps,
        fail_with=fail_with,
        description="Fake text-to-music model (musicgen-like).",
    )


def tts_model(
    *,
    owner: str = "jaaari",
    name: str = "kokoro-82m",
    official: bool = False,
    run_seconds: float = 2.0,
    log_steps: int = 0,
    fail_with: str | None = None,
) -> FakeModel:
    """A text-to-speech model shaped like ``jaaari/kokoro-82m`` (version-addressed).

    Outputs one WAV URL whose length grows with the text (about 60 ms a character, 0.5..10 s) and whose
    pitch depends on the voice.

    Args:
        owner: Model owner.
        name: Model name.
        official: Whether it can be run by name.
        run_seconds: Model latency in model time.
        log_steps: Progress lines to write.
        fail_with: Make every prediction fail with this error.

    Returns:
        The model.
    """
    voices = ["af_bella", "af_nicole", "af_sarah", "am_adam", "am_michael", "bf_emma", "bm_george"]
    schema = {
        "type": "object",
        "title": "Input",
        "required": ["text"],
        "properties": {
            "text": _p(0, "string", title="Text", description="Text input (long text is chunked)"),
            "voice": _p(1, "string", enum=voices, default="af_bella", title="voice"),
            "speed": _p(2, "number", default=1, minimum=0.1, maximum=5, title="Speed"),
        },
    }

    def output(inp: dict[str, Any], server: Publisher) -> str:
        duration = min(10.0, max(0.5, 0.06 * len(str(inp["text"])) / float(inp["speed"])))
        freq = 180.0 + 20 * voices.index(str(inp["voice"]))
        return server.serve_bytes(_wav(round(duration, 2), freq, 1, 8000), "output.wav", "audio/wav")

    return FakeModel(
        owner,
        name,
        output=output,
        official=official,
        input_schema=schema,
        output_schema=dict(_URI),
        run_seconds=run_seconds,
        log_steps=log_steps,
        fail_with=fail_with,
        seed_input=None,
        description="Fake text-to-speech model (kokoro-like).",
    )


def mesh_model(
    *,
    owner: str = "firtoz",
    name: str = "trellis",
    official: bool = False,
    run_seconds: float = 20.0,
    log_steps: int = 4,
    fail_with: str | None = None,
) -> FakeModel:
    """An image-to-3D model shaped like ``firtoz/trellis`` (version-addressed).

    Outputs ``{"model_file": <GLB url or None>, "combined_video": <MP4 url or None>, ...}``; like the real
    model, ``generate_model`` defaults to False (no GLB unless asked) and ``generate_video`` to True.

    Args:
        owner: Model owner.
        name: Model name.
        official: Whether it can be run by name.
        run_seconds: Model latency in model time.
        log_steps: Progress lines to write.
        fail_with: Make every prediction fail with this error.

    Returns:
        The model.
    """
    uri_or_null = {"type": "string", "format": "uri", "nullable": True}
    schema = {
        "type": "object",
        "title": "Input",
        "required": ["images"],
        "properties": {
            "images": _p(0, "array", items={"type": "string", "format": "uri"}, minItems=1, title="Images"),
            "seed": _p(1, "integer", default=0, title="Seed"),
            "randomize_seed": _p(2, "boolean", default=True, title="Randomize Seed"),
            "generate_model": _p(3, "boolean", default=False, title="Generate Model"),
            "generate_video": _p(4, "boolean", default=True, title="Generate Video"),
            "generate_color": _p(5, "boolean", default=False, title="Generate Color"),
            "texture_size": _p(6, "integer", default=1024, minimum=512, maximum=2048, title="Texture Size"),
            "mesh_simplify": _p(7, "number", default=0.95, minimum=0.9, maximum=0.98, title="Mesh Simplify"),
            "ss_sampling_steps": _p(8, "integer", default=12, minimum=1, maximum=50, title="SS Steps"),
            "ss_guidance_strength": _p(9, "number", default=7.5, minimum=0, maximum=10, title="SS Guidance"),
            "slat_sampling_steps": _p(10, "integer", default=12, minimum=1, maximum=50, title="SLAT Steps"),
            "slat_guidance_strength": _p(11, "number", default=3, minimum=0, maximum=10, title="SLAT Guidance"),
            "return_no_background": _p(12, "boolean", default=False, title="Return No Background"),
        },
    }
    out_schema = {
        "type": "object",
        "title": "Output",
        "properties": {
            "model_file": uri_or_null,
            "color_video": uri_or_null,
            "combined_video": uri_or_null,
            "no_background_images": {"type": "array", "items": {"type": "string", "format": "uri"}},
        },
    }

    def output(inp: dict[str, Any], server: Publisher) -> dict[str, Any]:
        seed = int(inp["seed"])
        result: dict[str, Any] = {
            "model_file": None,
            "color_video": None,
            "combined_video": None,
            "no_background_images": [],
        }
        if inp["generate_model"]:
            result["model_file"] = server.serve_bytes(_glb(seed), "output.glb", "model/gltf-binary")
        if inp["generate_video"]:
            data, ext, ctype = _video(64, 64, 8, 8, seed)
            result["combined_video"] = server.serve_bytes(data, f"combined.{ext}", ctype)
        if inp["generate_color"]:
            data, ext, ctype = _video(64, 64, 8, 8, seed + 1)
            result["color_video"] = server.serve_bytes(data, f"color.{ext}", ctype)
        return result

    return FakeModel(
        owner,
        name,
        output=output,
        official=official,
        input_schema=schema,
        output_schema=out_schema,
        run_seconds=run_seconds,
        log_steps=log_steps,
        fail_with=fail_with,
        description="Fake image-to-3D model (trellis-like).",
    )


def i2v_model(
    *,
    owner: str = "wavespeedai",
    name: str = "wan-2.1-i2v-480p",
    official: bool = True,
    run_seconds: float = 30.0,
    log_steps: int = 5,
    fail_with: str | None = None,
) -> FakeModel:
    """An image-to-video model shaped like ``wavespeedai/wan-2.1-i2v-480p`` (official).

    Outputs one MP4 URL (GIF without imageio-ffmpeg), ``num_frames`` capped at 16 so files stay tiny.

    Args:
        owner: Model owner.
        name: Model name.
        official: Whether it can be run by name.
        run_seconds: Model latency in model time.
        log_steps: Progress lines to write.
        fail_with: Make every prediction fail with this error.

    Returns:
        The model.
    """
    schema = {
        "type": "object",
        "title": "Input",
        "required": ["image", "prompt"],
        "properties": {
            "image": _p(0, "string", format="uri", title="Image", description="Image for use as the first frame"),
            "prompt": _p(1, "string", title="Prompt"),
            "num_frames": _p(2, "integer", default=81, minimum=81, maximum=100, title="Num Frames"),
            "frames_per_second": _p(3, "integer", default=16, minimum=5, maximum=24, title="FPS"),
            "sample_steps": _p(4, "integer", default=30, minimum=1, maximum=40, title="Sample Steps"),
            "sample_guide_scale": _p(5, "number", default=5, minimum=0, maximum=10, title="Guide Scale"),
            "seed": _p(6, "integer", title="Seed"),
        },
    }

    def output(inp: dict[str, Any], server: Publisher) -> str:
        seed = int(inp["seed"]) ^ _text_seed(str(inp["image"]))
        data, ext, ctype = _video(64, 48, 16, int(inp["frames_per_second"]), seed)
        return server.serve_bytes(data, f"output.{ext}", ctype)

    return FakeModel(
        owner,
        name,
        output=output,
        official=official,
        input_schema=schema,
        output_schema=dict(_URI),
        run_seconds=run_seconds,
        log_steps=log_steps,
        fail_with=fail_with,
        description="Fake image-to-video model (wan-i2v-like).",
    )


def edit_model(
    *,
    owner: str = "google",
    name: str = "nano-banana",
    style: str = "references",
    official: bool = True,
    run_seconds: float = 2.0,
) -> FakeModel:
    """An image-editing model, in one of three input shapes seen on Replicate.

    ``style="references"`` (``google/nano-banana``): ``image_input``, an array of image URLs.
    ``style="single"`` (``black-forest-labs/flux-kontext-pro``): ``input_image``, one URL.
    ``style="mask"`` (``black-forest-labs/flux-fill-pro``): ``image`` and ``mask``, both required.
    The output is one PNG whose colour comes from the prompt and every image URL it was given, so a
    test can tell which images reached the model.

    Args:
        owner: Model owner.
        name: Model name.
        style: Which input shape.
        official: Whether it can be run by name.
        run_seconds: Model latency in model time.

    Returns:
        The model.
    """
    uri = {"type": "string", "format": "uri"}
    props: dict[str, Any] = {"prompt": _p(0, "string", title="Prompt")}
    required = ["prompt"]
    if style == "references":
        props["image_input"] = _p(1, "array", items=uri, default=[], title="Image Input")
    elif style == "single":
        props["input_image"] = _p(1, "string", format="uri", title="Input Image")
    elif style == "mask":
        props["image"] = _p(1, "string", format="uri", title="Image")
        props["mask"] = _p(2, "string", format="uri", title="Mask")
        required += ["image", "mask"]
    else:
        raise ValueError(f"unknown edit model style {style!r}")
    props["output_format"] = _p(5, "string", enum=["jpg", "png"], default="png", title="output_format")
    schema = {"type": "object", "title": "Input", "required": required, "properties": props}

    def output(inp: dict[str, Any], server: Publisher) -> str:
        images = [str(v) for k in ("image_input", "input_image", "image", "mask") for v in _as_list(inp.get(k))]
        seed = _text_seed(str(inp["prompt"]) + "|".join(images))
        fmt = str(inp["output_format"])
        return server.serve_bytes(_image(48, 48, seed, fmt, 90), f"edited.{fmt}")

    return FakeModel(
        owner,
        name,
        output=output,
        official=official,
        input_schema=schema,
        output_schema=dict(_URI),
        run_seconds=run_seconds,
        description=f"Fake image-editing model ({style}).",
    )


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def default_models() -> list[FakeModel]:
    """All ready-made models, with their default settings.

    Returns:
        One of each ready-made model: image, sdxl, video, audio, tts, mesh, i2v.
    """
    return [image_model(), sdxl_model(), video_model(), audio_model(), tts_model(), mesh_model(), i2v_model()]


# --------------------------------------------------------------------------------------------------
# Faults and statistics
# --------------------------------------------------------------------------------------------------


@dataclass
class FaultPlan:
    """Which faults the server injects. Counting is global across threads.

    Attributes:
        create_429_every: Every Nth create request (any of the three create endpoints, after auth) gets
            429 with ``{"detail": "Request was throttled. ..."}`` and creates nothing.
        retry_after: ``Retry-After`` header value sent with those 429s (seconds); ``None`` omits the header.
        get_503_every: Every Nth authenticated ``GET`` under ``/v1`` gets 503.
        get_500_every: Every Nth authenticated ``GET`` under ``/v1`` gets 500 (503 wins when both match).
        drop_every: Every Nth request of any kind (file downloads included) has its connection closed
            without any response.
        drop_after_create: When the dropped request is a create: False (default) drops it before anything
            happens, so nothing is created; True creates the prediction and then drops the connection, so
            the client cannot know it exists (the hard case for a client that retries creates).
        status_402: Every create gets 402 "Billing required".
        latency_s: Real seconds (not scaled by ``time_scale``) to sleep before answering each request.
    """

    create_429_every: int | None = None
    retry_after: str | None = "0"
    get_503_every: int | None = None
    get_500_every: int | None = None
    drop_every: int | None = None
    drop_after_create: bool = False
    status_402: bool = False
    latency_s: float = 0.0


class ServerStats:
    """Thread-safe counters of what the server saw and did.

    Attributes:
        requests: All requests received (dropped ones included).
        by_route: ``(method, route template)`` → count, e.g. ``("POST", "/v1/predictions")``.
        predictions_created: Predictions actually created (exact: 4xx/429/dropped-before creates excluded).
        cancels: Requests to the cancel endpoint for an existing prediction (whatever its state).
        dropped: Connections closed without a response.
        faults_injected: 429s, 402s, 5xxs and drops injected by the :class:`FaultPlan`.
        files_uploaded: Successful ``POST /v1/files``.
        webhooks_sent: Webhook deliveries answered with 2xx.
        webhooks_failed: Webhook deliveries given up after retries.
        creates_by_key: ``Idempotency-Key`` request header value → predictions created with it (the server
            does not deduplicate, like Replicate; this lets tests prove a client never double-creates).
        in_flight: Requests being handled right now (a ``Prefer: wait`` create counts while it waits).
        peak_in_flight: The most requests ever handled at once (proof that a client really ran concurrently).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.by_route: Counter[tuple[str, str]] = Counter()
        self.predictions_created = 0
        self.cancels = 0
        self.dropped = 0
        self.faults_injected = 0
        self.files_uploaded = 0
        self.webhooks_sent = 0
        self.webhooks_failed = 0
        self.creates_by_key: Counter[str] = Counter()
        self.in_flight = 0
        self.peak_in_flight = 0

    def enter(self) -> None:
        """Mark a request as started."""
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def leave(self) -> None:
        """Mark a request as finished."""
        with self._lock:
            self.in_flight -= 1

    def incr(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter attribute ``name``.

        Args:
            name: One of the integer attributes.
            n: Amount.
        """
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def record_request(self, method: str, route: str) -> None:
        """Count one request.

        Args:
            method: HTTP method.
            route: Route template.
        """
        with self._lock:
            self.requests += 1
            self.by_route[(method, route)] += 1

    def record_create(self, key: str | None) -> None:
        """Count one created prediction.

        Args:
            key: The request's ``Idempotency-Key`` header, if any.
        """
        with self._lock:
            self.predictions_created += 1
            if key:
                self.creates_by_key[key] += 1

    def count(self, method: str, route: str) -> int:
        """Requests seen for one route.

        Args:
            method: HTTP method.
            route: Route template, e.g. ``"/v1/predictions/{id}"``.

        Returns:
            The count.
        """
        with self._lock:
            return self.by_route[(method, route)]

    def snapshot(self) -> dict[str, Any]:
        """Copy all counters.

        Returns:
            A plain dict (``by_route`` keys joined as ``"METHOD route"``).
        """
        with self._lock:
            return {
                "requests": self.requests,
                "by_route": {f"{m} {r}": n for (m, r), n in self.by_route.items()},
                "predictions_created": self.predictions_created,
                "cancels": self.cancels,
                "dropped": self.dropped,
                "faults_injected": self.faults_injected,
                "files_uploaded": self.files_uploaded,
                "webhooks_sent": self.webhooks_sent,
                "webhooks_failed": self.webhooks_failed,
                "creates_by_key": dict(self.creates_by_key),
                "in_flight": self.in_flight,
                "peak_in_flight": self.peak_in_flight,
            }

    def reset(self) -> None:
        """Zero every counter."""
        with self._lock:
            self.requests = self.predictions_created = self.cancels = self.dropped = 0
            self.faults_injected = self.files_uploaded = self.webhooks_sent = self.webhooks_failed = 0
            self.by_route.clear()
            self.creates_by_key.clear()
            self.peak_in_flight = self.in_flight

    def __repr__(self) -> str:
        return f"ServerStats({self.snapshot()!r})"
