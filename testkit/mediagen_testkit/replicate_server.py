"""A loopback fake of Replicate's HTTP API (v1), for offline tests.

:class:`ReplicateServer` runs a small threaded HTTP server on ``127.0.0.1`` that answers the endpoints the
official ``replicate`` client and mediagen's Replicate backend use: predictions (create by version, by
official model or by deployment; get, list, cancel), models and versions (with Cog OpenAPI schemas), file
uploads, the account and the webhook signing secret. Predictions move ``starting → processing →
succeeded | failed | canceled | aborted`` on the server's own clock, which ``time_scale`` speeds up, and
their outputs are real (tiny) PNG/WebP/JPEG, WAV, MP4 and GLB files served by the same server.

Faults (429 on creates, 5xx on reads, dropped connections, 402, latency) are injected by a
:class:`FaultPlan`; every request is counted in :class:`ServerStats` so tests can assert, for example,
that a retrying client never created a prediction twice.

Example:
    ```python
    from mediagen_testkit.replicate_server import ReplicateServer

    with ReplicateServer(time_scale=0.01) as server:
        client = replicate.Client(api_token=server.token, base_url=server.url)
        urls = client.run("black-forest-labs/flux-schnell", input={"prompt": "a fox", "seed": 1})
        assert server.stats.predictions_created == 1
    ```

The module imports only the standard library, numpy and Pillow; imageio is imported when a video is first
made. Only loopback addresses are ever contacted (webhooks to other hosts are refused).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import heapq
import hmac
import http.client
import ipaddress
import itertools
import json
import math
import queue
import random
import re
import secrets
import socket
import string
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import TYPE_CHECKING, Any, Final

from . import media_fixtures as media

if TYPE_CHECKING:
    from email.message import Message

__all__ = [
    "SDXL_VERSION",
    "TERMINAL_STATUSES",
    "WEBHOOK_EVENTS",
    "DEFAULT_WEBHOOK_EVENTS",
    "OutputFn",
    "FakeModel",
    "FaultPlan",
    "ServerStats",
    "PredictionRecord",
    "ReplicateServer",
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

OutputFn = Callable[[dict[str, Any], "ReplicateServer"], Any]
"""A model's output function: ``(input with defaults applied, server) -> output JSON``."""

TERMINAL_STATUSES: Final = frozenset({"succeeded", "failed", "canceled", "aborted"})
WEBHOOK_EVENTS: Final = frozenset({"start", "output", "logs", "completed"})
DEFAULT_WEBHOOK_EVENTS: Final = frozenset({"output", "completed"})

_ID_ALPHABET: Final = string.ascii_lowercase + string.digits
_CREATE_KEYS: Final = frozenset({"input", "webhook", "webhook_events_filter", "webhook_completed", "stream"})
_PREFER_RE: Final = re.compile(r"^wait(?:=([1-9]|[1-9][0-9]|60))?$")
_DURATION_RE: Final = re.compile(r"^(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?$")
_MAX_UPLOAD: Final = 100 * 1024 * 1024

_NOT_FOUND: Final = {"detail": "The requested resource could not be found.", "status": 404}
_INVALID_VERSION: Final = {
    "title": "Invalid version or not permitted",
    "detail": "The specified version does not exist (or perhaps you don't have permission to use it?)",
    "status": 422,
}
_BILLING: Final = {
    "title": "Billing required",
    "detail": "You need to set up billing to run this model. Go to https://replicate.com/account/billing"
    "#billing to set it up. If you have recently set up billing, please wait a few minutes before trying "
    "again.",
    "status": 402,
}


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


def sign_webhook(secret: str, webhook_id: str, timestamp: int | str, body: bytes | str) -> str:
    """Compute the ``webhook-signature`` header value the way Replicate does.

    Args:
        secret: The signing secret, ``"whsec_<base64 key>"``.
        webhook_id: The ``webhook-id`` header value.
        timestamp: The ``webhook-timestamp`` header value (unix seconds).
        body: The exact request body.

    Returns:
        ``"v1,<base64 HMAC-SHA256>"``.
    """
    key = base64.b64decode(secret.split("_", 1)[1] if secret.startswith("whsec_") else secret)
    text = body.decode() if isinstance(body, bytes) else body
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.{text}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


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


def _new_id(n: int = 26) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(n))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _is_loopback_url(url: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


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
            returns URLs made with :meth:`ReplicateServer.serve_bytes`. An exception fails the prediction
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
        queue_seconds: Time spent ``starting`` before ``processing`` (cold boot / queue), in model time.
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
    queue_seconds: float = 0.0
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
    queue_seconds: float = 0.0,
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
        queue_seconds: Time spent ``starting``.
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

    def output(inp: dict[str, Any], server: ReplicateServer) -> list[str]:
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
        queue_seconds=queue_seconds,
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
    queue_seconds: float = 0.0,
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
        queue_seconds: Time spent ``starting``.
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

    def output(inp: dict[str, Any], server: ReplicateServer) -> list[str]:
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
        queue_seconds=queue_seconds,
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
    queue_seconds: float = 0.0,
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
        queue_seconds: Time spent ``starting``.
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

    def output(inp: dict[str, Any], server: ReplicateServer) -> str:
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
        queue_seconds=queue_seconds,
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
    queue_seconds: float = 0.0,
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
        queue_seconds: Time spent ``starting``.
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

    def output(inp: dict[str, Any], server: ReplicateServer) -> str:
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
        queue_seconds=queue_seconds,
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
    queue_seconds: float = 0.0,
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
        queue_seconds: Time spent ``starting``.
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

    def output(inp: dict[str, Any], server: ReplicateServer) -> str:
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
        queue_seconds=queue_seconds,
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
    queue_seconds: float = 0.0,
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
        queue_seconds: Time spent ``starting``.
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

    def output(inp: dict[str, Any], server: ReplicateServer) -> dict[str, Any]:
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
        queue_seconds=queue_seconds,
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
    queue_seconds: float = 0.0,
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
        queue_seconds: Time spent ``starting``.
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

    def output(inp: dict[str, Any], server: ReplicateServer) -> str:
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
        queue_seconds=queue_seconds,
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

    def output(inp: dict[str, Any], server: ReplicateServer) -> str:
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


# --------------------------------------------------------------------------------------------------
# Predictions
# --------------------------------------------------------------------------------------------------


class _Timer:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class PredictionRecord:
    """Server-side facts about a prediction that are not part of its JSON.

    Attributes:
        id: Prediction id.
        model: The model that runs it.
        effective_input: The input the model sees (defaults applied, seed filled in).
        endpoint: Route template of the create request.
        cancel_after_s: Parsed ``Cancel-After`` header (model seconds), or None.
        prefer_wait_s: Parsed ``Prefer: wait`` (seconds, before scaling), or None.
        idempotency_key: The create request's ``Idempotency-Key`` header, or None.
        deployment: ``"owner/name"`` when created through a deployment.
        webhooks: ``(url, events)`` pairs to notify.
        request_headers: The create request's headers (lower-cased names).
        created_model_t: Creation time on the server's model clock (seconds since server start).
        started_model_t: When processing began (model clock), or None.
    """

    id: str
    model: FakeModel
    effective_input: dict[str, Any]
    endpoint: str
    cancel_after_s: float | None = None
    prefer_wait_s: float | None = None
    idempotency_key: str | None = None
    deployment: str | None = None
    webhooks: list[tuple[str, frozenset[str]]] = field(default_factory=list)
    request_headers: dict[str, str] = field(default_factory=dict)
    created_model_t: float = 0.0
    started_model_t: float | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)
    timers: list[_Timer] = field(default_factory=list, repr=False)


class _Scheduler:
    """One thread running callbacks at monotonic deadlines (cheaper than a Timer thread per event)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Timer, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="replicate-fake-clock", daemon=True)
        self._thread.start()

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> _Timer:
        timer = _Timer()
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + max(0.0, delay_s), next(self._seq), timer, fn))
            self._cond.notify()
        return timer

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                _, _, timer, fn = heapq.heappop(self._heap)
            if not timer.cancelled:
                try:
                    fn()
                except Exception:  # a bad callback must not stop the clock
                    pass


# --------------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------------


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return None if value is None else str(value)

    def json(self) -> Any:
        return json.loads(self.body.decode() or "null")


@dataclass
class _Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


_DROP: Final = _Response(0)


def _json_response(status: int, obj: Any, headers: dict[str, str] | None = None) -> _Response:
    return _Response(status, json.dumps(obj).encode(), "application/json", headers or {})


def _problem(status: int, obj: dict[str, Any], headers: dict[str, str] | None = None) -> _Response:
    return _Response(status, json.dumps(obj).encode(), "application/problem+json", headers or {})


def _validation_problem(errors: list[dict[str, str]], title: str = "Input validation failed") -> _Response:
    detail = "".join(f"- {e['field'] or 'body'}: {e['description']}\n" for e in errors)
    return _problem(422, {"title": title, "detail": detail, "status": 422, "invalid_fields": errors})


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: ReplicateServer) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall offline.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "replicate-fake/1.0"
    sys_version = ""
    # Headers and body go out in separate writes; Nagle + delayed ACK would add ~40 ms per response.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.open_connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.open_connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # silence per-request stderr lines
        pass

    def _dispatch(self) -> None:
        self.server.app._handle(self)

    do_GET = do_POST = do_DELETE = do_HEAD = do_PUT = do_PATCH = do_OPTIONS = _dispatch


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if (handler.headers.get("Transfer-Encoding") or "").lower() == "chunked":
        chunks: list[bytes] = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length > 0 else b""


def _parse_multipart(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise ValueError("multipart body without a boundary")
    delimiter = b"--" + match.group(1).encode()
    parts: list[tuple[dict[str, str], bytes]] = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.removeprefix(b"\r\n")
        head, _, data = chunk.partition(b"\r\n\r\n")
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        parts.append((headers, data.removesuffix(b"\r\n")))
    return parts


def _disposition_param(disposition: str, key: str) -> str | None:
    match = re.search(rf'(?:^|;)\s*{key}="([^"]*)"', disposition) or re.search(
        rf"(?:^|;)\s*{key}=([^;\s]+)", disposition
    )
    return match.group(1) if match else None


_RouteFn = Callable[["ReplicateServer", _Request, dict[str, str], bool], _Response]


def _route_table() -> list[tuple[re.Pattern[str], str, dict[str, str]]]:
    """(path regex with named groups, route template, {method: handler name})."""
    rows = [
        ("/v1/predictions", {"POST": "_create_by_version", "GET": "_list_predictions"}),
        ("/v1/predictions/{id}", {"GET": "_get_prediction"}),
        ("/v1/predictions/{id}/cancel", {"POST": "_cancel_prediction"}),
        ("/v1/models/{owner}/{name}/predictions", {"POST": "_create_by_model"}),
        ("/v1/deployments/{owner}/{name}/predictions", {"POST": "_create_by_deployment"}),
        ("/v1/deployments/{owner}/{name}", {"GET": "_get_deployment"}),
        ("/v1/models", {"GET": "_list_models"}),
        ("/v1/models/{owner}/{name}", {"GET": "_get_model"}),
        ("/v1/models/{owner}/{name}/versions", {"GET": "_list_versions"}),
        ("/v1/models/{owner}/{name}/versions/{id}", {"GET": "_get_version"}),
        ("/v1/files", {"POST": "_upload_file", "GET": "_list_files"}),
        ("/v1/files/{id}", {"GET": "_get_file", "DELETE": "_delete_file"}),
        ("/v1/files/{id}/download", {"GET": "_download_file", "HEAD": "_download_file"}),
        ("/v1/account", {"GET": "_get_account"}),
        ("/v1/webhooks/default/secret", {"GET": "_get_webhook_secret"}),
        ("/delivery/{path}", {"GET": "_serve_delivery", "HEAD": "_serve_delivery"}),
    ]
    table = []
    for template, methods in rows:
        regex = re.sub(
            r"\{(\w+)\}", lambda m: f"(?P<{m.group(1)}>{'.+' if m.group(1) == 'path' else '[^/]+'})", template
        )
        table.append((re.compile(regex + "$"), template, methods))
    return table


_ROUTES: Final = _route_table()
_CREATE_ROUTES: Final = frozenset(
    {"/v1/predictions", "/v1/models/{owner}/{name}/predictions", "/v1/deployments/{owner}/{name}/predictions"}
)
_PUBLIC_ROUTES: Final = frozenset({"/delivery/{path}", "/v1/files/{id}/download"})


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------


class ReplicateServer:
    """A loopback HTTP server that speaks Replicate's HTTP API v1.

    Args:
        token: The API token clients must send (``Authorization: Bearer <token>`` or ``Token <token>``).
        models: Models to serve; ``None`` serves :func:`default_models`, ``[]`` none.
        faults: Faults to inject (see :class:`FaultPlan`); can be replaced later through :attr:`faults`.
        time_scale: Real seconds per model second: ``0.01`` runs a 60 s model in 0.6 s. Applies to model
            run/queue times, ``Prefer: wait`` windows and ``Cancel-After`` deadlines.
        host: Address to bind; keep it loopback.
        port: Port to bind; 0 picks a free one.
        webhook_secret: Signing secret (``"whsec_<base64>"``); a random one when None.
        report_starting_after_wait: When a ``Prefer: wait`` window passes before the prediction ends, report
            it as ``starting`` without output (what the API does, and what the official client relies on
            to decide to poll). False reports its real current state.
        page_size: Predictions per page in ``GET /v1/predictions``.
        echo_effective_input: Echo each prediction's ``input`` the way a server that stores it may: the
            model's defaults filled in (and a random seed when none was sent), every number written
            back as a float (a store that keeps JSON numbers as doubles: ``7`` comes back ``7.0``), and
            an inline ``data:`` URL replaced by the URL of a copy on this server. The API does not
            promise that the echo equals the body sent; False echoes it as sent.
        echo_token_in_errors: Quote the token a rejected request carried in the 401 body (a careless
            server), to test that clients keep it out of their errors.

    Attributes:
        stats: Counters (see :class:`ServerStats`).
        predictions: Stored prediction objects (the JSON the API returns) by id.
        records: Server-side facts about each prediction by id (see :class:`PredictionRecord`).
        files: Uploaded file objects by id.
        webhook_secret: The signing secret served at ``GET /v1/webhooks/default/secret``.
    """

    def __init__(
        self,
        *,
        token: str = "r8_test",
        models: list[FakeModel] | None = None,
        faults: FaultPlan | None = None,
        time_scale: float = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
        webhook_secret: str | None = None,
        report_starting_after_wait: bool = True,
        page_size: int = 100,
        echo_effective_input: bool = False,
        echo_token_in_errors: bool = False,
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.token = token
        self.time_scale = float(time_scale)
        self.host = host
        self.report_starting_after_wait = report_starting_after_wait
        self.page_size = page_size
        self.echo_effective_input = echo_effective_input
        self.echo_token_in_errors = echo_token_in_errors
        self.webhook_secret = webhook_secret or "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        self.stats = ServerStats()
        self.predictions: dict[str, dict[str, Any]] = {}
        self.records: dict[str, PredictionRecord] = {}
        self.files: dict[str, dict[str, Any]] = {}
        self._port = port
        self._lock = threading.RLock()
        self._models: dict[str, FakeModel] = {}
        self._deployments: dict[str, FakeModel] = {}
        self._blobs: dict[str, tuple[bytes, str, str]] = {}  # path -> (data, content type, etag)
        self._file_bytes: dict[str, bytes] = {}
        self._order: list[str] = []  # prediction ids, oldest first
        self._fault_lock = threading.Lock()
        self._faults = faults or FaultPlan()
        self._counters: Counter[str] = Counter()
        self._httpd: _HTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._scheduler: _Scheduler | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._webhook_queue: queue.Queue[tuple[str, bytes, str] | None] = queue.Queue()
        self._webhook_thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._t0_mono = time.monotonic()
        self._t0_wall = time.time()
        for model in default_models() if models is None else models:
            self.add_model(model)

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> ReplicateServer:
        """Bind the port and start serving in daemon threads.

        Returns:
            ``self``, so ``server = ReplicateServer().start()`` works.
        """
        if self._httpd is not None:
            return self
        self._stopped.clear()
        self._t0_mono, self._t0_wall = time.monotonic(), time.time()
        self._scheduler = _Scheduler()
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="replicate-fake-model")
        self._webhook_thread = threading.Thread(
            target=self._webhook_worker, name="replicate-fake-webhooks", daemon=True
        )
        self._webhook_thread.start()
        self._httpd = _HTTPServer((self.host, self._port), self)
        self._port = int(self._httpd.server_address[1])
        self._serve_thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="replicate-fake-http",
            daemon=True,
        )
        self._serve_thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and stop the clock and webhook threads."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopped.set()
        httpd.shutdown()
        httpd.server_close()
        with httpd.connections_lock:
            # Keep-alive connections would otherwise go on being served by their handler threads.
            for conn in list(httpd.open_connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        with self._lock:
            for rec in self.records.values():
                rec.done.set()  # release handlers blocked in Prefer: wait
        if self._scheduler:
            self._scheduler.stop()
        if self._executor:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._webhook_queue.put(None)
        if self._webhook_thread:
            self._webhook_thread.join(timeout=2)

    def __enter__(self) -> ReplicateServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ----------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        return self._port

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT`` (no path)."""
        if self._httpd is None and not self._port:
            raise RuntimeError("server not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    @property
    def url(self) -> str:
        """The API base URL, ``http://127.0.0.1:PORT/v1``.

        Both this and :attr:`origin` work as the official client's ``base_url``: that client appends
        ``/v1/...`` itself, and the server folds the doubled ``/v1/v1/`` prefix back into one.
        """
        return self.origin + "/v1"

    # -- models -------------------------------------------------------------------------------------

    def add_model(self, model: FakeModel) -> None:
        """Serve a model (replacing one with the same owner/name).

        Args:
            model: The model.
        """
        with self._lock:
            self._models[model.ref] = model

    def add_deployment(self, owner: str, name: str, model: FakeModel | str) -> None:
        """Expose a model through ``POST /v1/deployments/{owner}/{name}/predictions``.

        Args:
            owner: Deployment owner.
            name: Deployment name.
            model: The model, or the ``"owner/name"`` of one already added.
        """
        with self._lock:
            target = self._models[model] if isinstance(model, str) else model
            self._models.setdefault(target.ref, target)
            self._deployments[f"{owner}/{name}"] = target

    @property
    def models(self) -> list[FakeModel]:
        """The served models."""
        with self._lock:
            return list(self._models.values())

    def get_model(self, ref: str) -> FakeModel:
        """Look a model up by ``"owner/name"``.

        Args:
            ref: ``"owner/name"``.

        Returns:
            The model.

        Raises:
            KeyError: When it is not served.
        """
        with self._lock:
            return self._models[ref]

    # -- faults -------------------------------------------------------------------------------------

    @property
    def faults(self) -> FaultPlan:
        """The fault plan; assigning a new one also restarts its counters."""
        return self._faults

    @faults.setter
    def faults(self, plan: FaultPlan) -> None:
        with self._fault_lock:
            self._faults = plan
            self._counters.clear()

    def _nth(self, counter: str, every: int | None) -> bool:
        """Advance ``counter`` and tell whether this is one of every ``every``th."""
        with self._fault_lock:
            self._counters[counter] += 1
            return bool(every) and self._counters[counter] % int(every or 1) == 0

    # -- clock --------------------------------------------------------------------------------------

    def model_now(self) -> float:
        """Seconds of model time since the server started.

        Returns:
            Real elapsed seconds divided by ``time_scale``.
        """
        return (time.monotonic() - self._t0_mono) / self.time_scale

    def _stamp(self, model_t: float) -> str:
        # Timestamps live on the model clock so that created/started/completed gaps match run_seconds.
        return _iso(self._t0_wall + model_t)

    def _later(self, rec: PredictionRecord, model_delay: float, fn: Callable[[], None]) -> None:
        assert self._scheduler is not None
        rec.timers.append(self._scheduler.call_later(model_delay * self.time_scale, fn))

    # -- files served by this server ----------------------------------------------------------------

    def serve_bytes(self, data: bytes, filename: str, content_type: str | None = None) -> str:
        """Publish bytes at a fresh URL on this server, like an output on ``replicate.delivery``.

        Args:
            data: File contents.
            filename: Last path segment, e.g. ``"out-0.png"``; its suffix guesses the content type.
            content_type: Overrides the guess.

        Returns:
            ``http://127.0.0.1:PORT/delivery/xezq/<random>/<filename>``; GET needs no token.
        """
        import mimetypes

        ctype = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        path = f"/delivery/xezq/{_new_id(20)}/{urllib.parse.quote(filename)}"
        with self._lock:
            self._blobs[path] = (data, ctype, hashlib.md5(data).hexdigest())  # an etag
        return self.origin + path

    # -- waiting helpers for tests ------------------------------------------------------------------

    def wait_for(self, prediction_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """Block until a prediction is terminal (or ``timeout`` real seconds pass).

        Args:
            prediction_id: The id.
            timeout: Real seconds.

        Returns:
            A copy of the prediction object.
        """
        rec = self.records[prediction_id]
        rec.done.wait(timeout)
        return self.snapshot(prediction_id)

    def snapshot(self, prediction_id: str) -> dict[str, Any]:
        """A deep copy of a stored prediction object.

        Args:
            prediction_id: The id.

        Returns:
            The copy.
        """
        with self._lock:
            result: dict[str, Any] = json.loads(json.dumps(self.predictions[prediction_id]))
            return result

    # -- request handling ---------------------------------------------------------------------------

    def _handle(self, handler: _Handler) -> None:
        if self._stopped.is_set():
            handler.close_connection = True
            return
        self.stats.enter()
        try:
            self._handle_request(handler)
        finally:
            self.stats.leave()

    def _handle_request(self, handler: _Handler) -> None:
        try:
            body = _read_body(handler)
        except (ValueError, OSError):
            self._send(handler, _problem(400, {"detail": "Malformed request body.", "status": 400}))
            handler.close_connection = True
            return
        split = urllib.parse.urlsplit(handler.path)
        path = split.path
        while path.startswith("/v1/v1/"):
            path = path[3:]  # base_url ".../v1" + the official client's own "/v1/..." prefix
        if path != "/" and path.endswith("/"):
            path = path[:-1]
        req = _Request(handler.command, path, urllib.parse.parse_qs(split.query), handler.headers, body)
        route, params, method_fn = self._match(req)
        self.stats.record_request(req.method, route)

        faults = self._faults
        if faults.latency_s > 0:
            time.sleep(faults.latency_s)
        drop_after_create = False
        if self._nth("requests", faults.drop_every):
            if route in _CREATE_ROUTES and req.method == "POST" and faults.drop_after_create:
                drop_after_create = True
            else:
                self._drop(handler)
                return

        response = self._respond(req, route, params, method_fn, drop_after_create)
        if response is _DROP or drop_after_create:
            # A create picked for dropping never gets an answer, whether or not it created anything.
            self._drop(handler)
            return
        self._send(handler, response)

    def _match(self, req: _Request) -> tuple[str, dict[str, str], str | None]:
        for pattern, template, methods in _ROUTES:
            match = pattern.match(req.path)
            if match:
                params = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
                method = "GET" if req.method == "HEAD" and "HEAD" not in methods else req.method
                return template, params, methods.get(method, "_method_not_allowed")
        return "(unknown)", {}, None

    def _respond(
        self, req: _Request, route: str, params: dict[str, str], fn_name: str | None, drop_after_create: bool
    ) -> _Response:
        if route not in _PUBLIC_ROUTES:
            denied = self._check_auth(req)
            if denied is not None:
                return denied
        if fn_name is None:
            return _problem(404, dict(_NOT_FOUND))
        if fn_name == "_method_not_allowed":
            return _problem(405, {"detail": f'Method "{req.method}" not allowed.', "status": 405})
        if req.method == "GET" and route not in _PUBLIC_ROUTES:
            if self._nth("gets_503", self._faults.get_503_every):
                self.stats.incr("faults_injected")
                return _problem(503, {"detail": "Service temporarily unavailable (injected).", "status": 503})
            if self._nth("gets_500", self._faults.get_500_every):
                self.stats.incr("faults_injected")
                return _problem(500, {"detail": "Internal server error (injected).", "status": 500})
        try:
            fn: _RouteFn = getattr(type(self), fn_name)
            return fn(self, req, params, drop_after_create)
        except Exception as exc:  # a bug in the fake should read as a 500, not hang a test
            return _problem(500, {"detail": f"fake server error: {exc!r}", "status": 500})

    def _check_auth(self, req: _Request) -> _Response | None:
        value = (req.header("Authorization") or "").strip()
        if not value:
            detail = "You did not pass an authentication token"
        else:
            scheme, _, token = value.partition(" ")
            if scheme.lower() in ("bearer", "token") and token.strip() == self.token:
                return None
            detail = "You did not pass a valid authentication token"
            if self.echo_token_in_errors:
                detail += f" (got {token.strip()!r})"
        return _problem(401, {"title": "Unauthenticated", "detail": detail, "status": 401})

    def _send(self, handler: _Handler, response: _Response) -> None:
        try:
            handler.send_response(response.status)
            handler.send_header("Content-Type", response.content_type)
            handler.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers.items():
                handler.send_header(name, value)
            if handler.close_connection:
                handler.send_header("Connection", "close")
            handler.end_headers()
            if handler.command != "HEAD" and response.body:
                handler.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError, OSError):
            handler.close_connection = True

    def _drop(self, handler: _Handler) -> None:
        self.stats.incr("dropped")
        self.stats.incr("faults_injected")
        handler.close_connection = True

    # -- predictions: create ------------------------------------------------------------------------

    def _create_by_version(self, req: _Request, params: dict[str, str], drop: bool) -> _Response:
        return self._create(req, "/v1/predictions", None, drop)

    def _create_by_model(self, req: _Request, params: dict[str, str], drop: bool) -> _Response:
        return self._create(req, "/v1/models/{owner}/{name}/predictions", params, drop)

    def _create_by_deployment(self, req: _Request, params: dict[str, str], drop: bool) -> _Response:
        return self._create(req, "/v1/deployments/{owner}/{name}/predictions", params, drop)

    def _resolve_version(self, ref: Any) -> tuple[FakeModel, bool] | None:
        """Map a body ``version`` to (model, by_name); None when unknown or not permitted."""
        if not isinstance(ref, str):
            return None
        with self._lock:
            if re.fullmatch(r"[0-9a-f]{64}", ref):
                return next(((m, False) for m in self._models.values() if m.version == ref), None)
            name, sep, version = ref.partition(":")
            model = self._models.get(name)
            if model is None:
                return None
            if sep:
                return (model, False) if version == model.version else None
            return (model, True) if model.official else None

    def _create(self, req: _Request, route: str, params: dict[str, str] | None, drop: bool) -> _Response:
        faults = self._faults
        if self._nth("creates", faults.create_429_every):
            self.stats.incr("faults_injected")
            headers = {"Retry-After": faults.retry_after} if faults.retry_after is not None else {}
            throttled = {"detail": "Request was throttled. Expected available in 1 second.", "status": 429}
            return _problem(429, throttled, headers)
        if faults.status_402:
            self.stats.incr("faults_injected")
            return _problem(402, dict(_BILLING))

        try:
            body: Any = req.json()
        except (ValueError, UnicodeDecodeError):
            return _problem(400, {"detail": "JSON parse error - the request body is not valid JSON", "status": 400})
        if not isinstance(body, dict):
            return _validation_problem(
                [{"type": "invalid_type", "field": "", "description": "Invalid type. Expected: object"}],
                "Invalid request",
            )
        allowed = _CREATE_KEYS | ({"version"} if route == "/v1/predictions" else set())
        errors = [
            {
                "type": "additional_property_not_allowed",
                "field": "",
                "description": f"Additional property {k} is not allowed",
            }
            for k in body
            if k not in allowed
        ]
        if "input" not in body:
            errors.append({"type": "required", "field": "", "description": "input is required"})
        elif not isinstance(body["input"], dict):
            errors.append({"type": "invalid_type", "field": "input", "description": "Invalid type. Expected: object"})
        if route == "/v1/predictions" and "version" not in body:
            errors.append({"type": "required", "field": "", "description": "version is required"})
        if errors:
            return _validation_problem(errors, "Invalid request")

        # Which model?
        deployment: str | None = None
        if route == "/v1/predictions":
            resolved = self._resolve_version(body["version"])
            if resolved is None:
                return _problem(422, dict(_INVALID_VERSION))
            model, by_name = resolved
        elif route.startswith("/v1/models/"):
            assert params is not None
            with self._lock:
                found = self._models.get(f"{params['owner']}/{params['name']}")
            if found is None or not found.official:
                return _problem(404, dict(_NOT_FOUND))
            model, by_name = found, True
        else:
            assert params is not None
            deployment = f"{params['owner']}/{params['name']}"
            with self._lock:
                found = self._deployments.get(deployment)
            if found is None:
                return _problem(404, dict(_NOT_FOUND))
            model, by_name = found, False

        # Webhooks (loopback only: tests must never reach a public address).
        webhooks: list[tuple[str, frozenset[str]]] = []
        events = body.get("webhook_events_filter")
        if events is not None and (not isinstance(events, list) or any(e not in WEBHOOK_EVENTS for e in events)):
            return _validation_problem(
                [
                    {
                        "type": "enum",
                        "field": "webhook_events_filter",
                        "description": "webhook_events_filter items must be one of: start, output, logs, completed",
                    }
                ],
                "Invalid request",
            )
        for key, filt in (
            ("webhook", frozenset(events) if events is not None else DEFAULT_WEBHOOK_EVENTS),
            ("webhook_completed", frozenset({"completed"})),
        ):
            url = body.get(key)
            if url is None:
                continue
            if not isinstance(url, str) or not _is_loopback_url(url):
                return _validation_problem(
                    [
                        {
                            "type": "format",
                            "field": key,
                            "description": "The fake Replicate server only delivers webhooks to loopback http(s) URLs",
                        }
                    ],
                    "Invalid webhook URL",
                )
            webhooks.append((url, filt))

        cancel_after: float | None = None
        raw_cancel_after = req.header("Cancel-After")
        if raw_cancel_after is not None:
            try:
                cancel_after = parse_duration(raw_cancel_after)
            except ValueError as exc:
                return _problem(
                    422,
                    {"title": "Invalid Cancel-After header", "detail": str(exc).capitalize(), "status": 422},
                )

        given: dict[str, Any] = body["input"]
        invalid = validate_input(model, given)
        if invalid:
            return _validation_problem(invalid)

        prefer_applied, wait_s = _parse_prefer(req.header("Prefer"))
        rec = self._new_prediction(
            model,
            given,
            route=route,
            by_name=by_name,
            deployment=deployment,
            webhooks=webhooks,
            cancel_after=cancel_after,
            wait_s=wait_s,
            headers={k.lower(): str(v) for k, v in req.headers.items()},
        )
        if drop:
            return _DROP

        headers = {"Location": self.predictions[rec.id]["urls"]["get"]}
        if prefer_applied is not None and wait_s is not None:
            headers["Preference-Applied"] = prefer_applied
            finished = rec.done.wait(wait_s * self.time_scale)
            with self._lock:
                snapshot: dict[str, Any] = json.loads(json.dumps(self.predictions[rec.id]))
            if not finished and self.report_starting_after_wait:
                snapshot.update(status="starting", output=None)
                snapshot.pop("started_at", None)
            return _json_response(201, snapshot, headers)
        return _json_response(201, self.snapshot(rec.id), headers)

    def _new_prediction(
        self,
        model: FakeModel,
        given: dict[str, Any],
        *,
        route: str,
        by_name: bool,
        deployment: str | None,
        webhooks: list[tuple[str, frozenset[str]]],
        cancel_after: float | None,
        wait_s: float | None,
        headers: dict[str, str],
    ) -> PredictionRecord:
        pid = _new_id()
        effective = model.apply_defaults(given)
        if model.seed_input and effective.get(model.seed_input) is None:
            effective[model.seed_input] = random.randint(0, 2**31 - 1)
        now = self.model_now()
        rec = PredictionRecord(
            id=pid,
            model=model,
            effective_input=effective,
            endpoint=route,
            cancel_after_s=cancel_after,
            prefer_wait_s=wait_s,
            idempotency_key=headers.get("idempotency-key"),
            deployment=deployment,
            webhooks=webhooks,
            request_headers=headers,
            created_model_t=now,
        )
        base = self.url
        pred: dict[str, Any] = {
            "id": pid,
            "model": model.ref,
            "version": "hidden" if by_name else model.version,
            "input": self._echoed_input(given, effective) if self.echo_effective_input else given,
            "logs": "",
            "output": None,
            "data_removed": False,
            "error": None,
            "source": "api",
            "status": "starting",
            "created_at": self._stamp(now),
            "urls": {
                "cancel": f"{base}/predictions/{pid}/cancel",
                "get": f"{base}/predictions/{pid}",
                "web": f"https://replicate.com/p/{pid}",
            },
        }
        if deployment:
            pred["deployment"] = deployment
        if cancel_after is not None:
            pred["deadline"] = self._stamp(now + cancel_after)
        with self._lock:
            self.predictions[pid] = pred
            self.records[pid] = rec
            self._order.append(pid)
        self.stats.record_create(rec.idempotency_key)
        self._later(rec, model.queue_seconds, lambda: self._start(rec))
        if cancel_after is not None:
            self._later(rec, cancel_after, lambda: self._deadline(rec))
        return rec

    def _echoed_input(self, given: dict[str, Any], effective: dict[str, Any]) -> dict[str, Any]:
        """The input as a storing server echoes it (see ``echo_effective_input``)."""

        def stored(value: Any) -> Any:
            if isinstance(value, bool) or value is None:
                return value
            if isinstance(value, int | float):
                return float(value)
            if isinstance(value, str) and value.startswith("data:") and value in given.values():
                header, _, payload = value.partition(",")
                try:
                    data = base64.b64decode(payload) if header.endswith(";base64") else payload.encode()
                except ValueError:
                    return value
                return self.serve_bytes(data, "input", header[5:].split(";")[0] or None)
            if isinstance(value, list):
                return [stored(item) for item in value]
            if isinstance(value, dict):
                return {k: stored(v) for k, v in value.items()}
            return value

        return {key: stored(value) for key, value in effective.items()}

    # -- predictions: lifecycle ---------------------------------------------------------------------

    def _start(self, rec: PredictionRecord) -> None:
        with self._lock:
            pred = self.predictions[rec.id]
            if pred["status"] != "starting":
                return
            now = self.model_now()
            rec.started_model_t = now
            pred["status"] = "processing"
            pred["started_at"] = self._stamp(now)
            seed = rec.effective_input.get(rec.model.seed_input or "")
            if seed is not None:
                pred["logs"] += f"Using seed: {seed}\n"
            self._emit(rec, "start")
        steps = rec.model.log_steps
        run = max(0.0, rec.model.run_seconds)
        for i in range(1, steps + 1):
            self._later(rec, run * i / steps, functools.partial(self._log_step, rec, i))
        self._later(rec, run, lambda: self._finish(rec))

    def _log_step(self, rec: PredictionRecord, step: int) -> None:
        with self._lock:
            pred = self.predictions[rec.id]
            if pred["status"] != "processing":
                return
            elapsed = self.model_now() - (rec.started_model_t or 0.0)
            pred["logs"] += tqdm_line(step, rec.model.log_steps, elapsed) + "\n"
            self._emit(rec, "logs")

    def _finish(self, rec: PredictionRecord) -> None:
        if self._executor is None:
            return
        try:
            # Off the clock thread: encoding a video takes long enough to delay everyone else's timers.
            self._executor.submit(self._complete, rec)
        except RuntimeError:  # executor already shut down
            pass

    def _complete(self, rec: PredictionRecord) -> None:
        error = rec.model.fail_with
        output: Any = None
        if error is None:
            try:
                output = rec.model.output(dict(rec.effective_input), self)
            except Exception as exc:  # the model's failure becomes the prediction's
                error = str(exc) or type(exc).__name__
        with self._lock:
            pred = self.predictions[rec.id]
            if pred["status"] != "processing":
                return
            if error is not None:
                pred["status"] = "failed"
                pred["error"] = error
                pred["logs"] += f"Traceback (most recent call last):\n  ...\nError: {error}\n"
            else:
                pred["status"] = "succeeded"
                pred["output"] = output
            self._terminate(rec, pred)

    def _terminate(self, rec: PredictionRecord, pred: dict[str, Any]) -> None:
        """Stamp a terminal prediction, stop its timers, wake waiters, send webhooks (lock held)."""
        now = self.model_now()
        pred["completed_at"] = self._stamp(now)
        metrics: dict[str, Any] = {"total_time": round(now - rec.created_model_t, 6)}
        if rec.started_model_t is not None:
            metrics["predict_time"] = round(now - rec.started_model_t, 6)
        pred["metrics"] = metrics
        for timer in rec.timers:
            timer.cancel()
        rec.done.set()
        self._emit(rec, "completed")

    def _deadline(self, rec: PredictionRecord) -> None:
        with self._lock:
            pred = self.predictions[rec.id]
            if pred["status"] in TERMINAL_STATUSES:
                return
            # Replicate: deadline before the model started -> aborted; while running -> canceled.
            pred["status"] = "aborted" if pred["status"] == "starting" else "canceled"
            pred["output"] = None
            self._terminate(rec, pred)

    def cancel(self, prediction_id: str) -> bool:
        """Cancel a prediction as ``POST /v1/predictions/{id}/cancel`` would (without counting a request).

        Args:
            prediction_id: The id.

        Returns:
            True when it was running and is now ``canceled``; False when it had already ended.
        """
        with self._lock:
            rec = self.records[prediction_id]
            pred = self.predictions[prediction_id]
            if pred["status"] in TERMINAL_STATUSES:
                return False
            pred["status"] = "canceled"
            pred["output"] = None
            self._terminate(rec, pred)
            return True

    # -- webhooks -----------------------------------------------------------------------------------

    def _emit(self, rec: PredictionRecord, event: str) -> None:
        """Queue webhook deliveries for an event (lock held, so the payload is a consistent snapshot)."""
        if not rec.webhooks:
            return
        pred = self.predictions[rec.id]
        payload: bytes | None = None
        for url, events in rec.webhooks:
            # `output` and `completed` coincide here (outputs appear when the prediction ends): one POST.
            wanted = event in events or (event == "completed" and "output" in events and pred["output"] is not None)
            if wanted:
                payload = payload or json.dumps(pred).encode()
                self._webhook_queue.put((url, payload, "msg_" + secrets.token_urlsafe(18).replace("-", "x")))

    def _webhook_worker(self) -> None:
        while True:
            item = self._webhook_queue.get()
            if item is None:
                return
            url, body, webhook_id = item
            for attempt in range(3):
                if self._stopped.is_set():
                    return
                if self._deliver(url, body, webhook_id):
                    self.stats.incr("webhooks_sent")
                    break
                time.sleep(0.05 * 2**attempt)
            else:
                self.stats.incr("webhooks_failed")

    def _deliver(self, url: str, body: bytes, webhook_id: str) -> bool:
        parts = urllib.parse.urlsplit(url)
        if not _is_loopback_url(url):  # checked at create time too; never leave the machine
            return False
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Replicate-Webhooks/1.0 (fake)",
            "webhook-id": webhook_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": sign_webhook(self.webhook_secret, webhook_id, timestamp, body),
        }
        conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(parts.hostname or "127.0.0.1", parts.port, timeout=5)
        try:
            target = parts.path or "/"
            if parts.query:
                target += "?" + parts.query
            conn.request("POST", target, body=body, headers=headers)
            status = conn.getresponse().status
            return 200 <= status < 300
        except OSError:
            return False
        finally:
            conn.close()

    # -- predictions: read, list, cancel --------------------------------------------------------------

    def _get_prediction(self, req: _Request, params: dict[str, str], drop: bool) -> _Response:
        with self._lock:
            if params["id"] not in self.predictions:
                return _problem(404, dict(_NOT_FOUND))
            return _Response(200, json.dumps(self.predictions[params["id"]]).encode())

    def _cancel_prediction(self, req: _Request, params: dict[str, str], drop: bool) -> _Response:
        with self._lock:
            if params["id"] not in self.predictions:
                return _problem(404, dict(_NOT_FOUND))
            self.stats.incr("cancels")
            self.cancel(params["id"])
            return _Response(200, json.dumps(self.predictions[params["id"]]).encode())

    def _list_predictions(self, req: _Request, params: dict[str, str], drop: bool) -> _Response:
        try:
            offset = max(0, int(req.query.get("cursor", ["0"])[0]))
        except ValueError:
            return _problem(400, {"detail": "Invalid cursor.", "status": 400})
        with self._lock:
            ids = list(reversed(self._order))
            page = [self.predictions[i] for i in ids[offset : offset + self.page_size]]
            body = {
                "next": f"{self.url}/predictions?cursor={offset + self.page_size}"
                if offset + self.page_size < len(ids)
                else None,
                "previous": f"{self.url}/predictions?cursor={max(0, offset - self.page_size)}" if offset else None,
                "results": page,
            }
            return _Response(200, json.dumps(body).encode())

    # -- models, versions, deployments --------------------------------------------------------------

    def _model_json(self, model: FakeModel) -> dict[str, Any]:
        with self._lock:
            runs = sum(1 for r in self.records.values() if r.model is model)
        return {
            "url": f"https://replicate.com/{model.ref}",
            "owner": model.owner,
            "name": model.name,
            "description": model.description,
            "visibility": "public",
            "github_url": None,
            "paper_url": None,
            "license_url": None,
            "run_count": runs,
            "cover_image_url": None,
            "default_example": None,
            "latest_version": model.version_json(),
            "is_official": model.official,
        }

    def _find_model(self, params: dict[str, str]) -> FakeModel | None:
        with self._lock:
            return self._models.get(f"{params['owner']}/{params['name']}")

    def _get_model(self, req: _Request, params: dict[str, str], drop: bool) -> _Response:
        model = self._find_model(params)
        return _problem(404, dict(_NOT_FOUND)) if model is None else _json_response(200, self._model_json(model))

    def _list_models(self, req: _Request, params: dict[str, str], drop: bool) -> _Response:
        return _json_response(
            200, {"next": None, "previous": None, "results": [self._model_json(m) for m in self.models]}
        )

    def _list_versions(self, req: _Request, params: dict[str, str], drop: bool) -> _Response:
        model = self._find_model(params)
        if model is None:
            return _problem(404, dict(_NOT_FOUND))
        return _json_response(200, {"next": None, "previous": None, "results": [model.version_json()]})

    def _get_version(self, req: _Request, params: dict[str, str], drop: bool) -> _Response:
        model = self._find_model(params)
        if model is None or params["id"] != model.version:
            return _problem(404, {"detail": "Not found.", "status": 404})
        return _json_response(200, model.version_json())

    def _get_deployment(self, req: _Request, params: dict[str, str], drop: bool) -> _Response:
        ref = f"{params['owner']}/{params['name']}"
        with self._lock:
            model = self._deployments.get(ref)
        if model is None:
            return _problem(404, dict(_NOT_FOUND))
        return _json_response(
            200,
            {
                "owner": params["owner"],
                "name": params["name"],
                "current_release": {
                    "number": 1,
                    "model": model.ref,
                    "version": model.version,
                    "created_at": "2024-01-01T00:00:00.000Z",
                    "created_by": {
                        "type": "user",
                        "username": "test",
                        "name": "Test User",
                        "github_url": None,
                    },
                    "configuration": {"hardware": "gpu-t4", "min_instances": 0, "max_instances": 1},
                },
            },
        )

    # -- files --------------------------------------------------------------------------------------

    def _upload_file(self, req: _Request, params: dict[str, str], drop: bool) -> _Response:
        if len(req.body) > _MAX_UPLOAD:
            return _problem(413, {"detail": "Files must be less than 100MB in size", "status": 413})
        ctype = req.header("Content-Type") or ""
        if not ctype.startswith("multipart/form-data"):
            return _problem(400, {"detail": "Expected multipart/form-data with a 'content' field.", "status": 400})
        try:
            parts = _parse_multipart(req.body, ctype)
        except ValueError as exc:
            return _problem(400, {"detail": str(exc), "status": 400})
        content: tuple[dict[str, str], bytes] | None = None
        metadata: Any = {}
        for headers, data in parts:
            disposition = headers.get("content-disposition", "")
            field_name = _disposition_param(disposition, "name")
            if field_name == "content":
                content = (headers, data)
            elif field_name == "metadata":
                try:
                    metadata = json.loads(data.decode() or "{}")
                except ValueError:
                    return _problem(400, {"detail": "metadata must be JSON.", "status": 400})
        if content is None:
            return _validation_problem(
                [{"type": "required", "field": "content", "description": "content is required"}],
                "Invalid request",
            )
        headers, data = content
        name = _disposition_param(headers.get("content-disposition", ""), "filename") or "file"
        fid = _new_id()
        created = time.time()
        md5 = hashlib.md5(data).hexdigest()  # the API's etag is an md5
        obj = {
            "id": fid,
            "name": name,
            "content_type": headers.get("content-type", "application/octet-stream"),
            "size": len(data),
            "etag": md5,
            "checksums": {"sha256": hashlib.sha256(data).hexdigest(), "md5": md5},
            "metadata": metadata,
            "created_at": _iso(created),
            "expires_at": _iso(created + 24 * 3600),
            "urls": {"get": f"{self.url}/files/{fid}"},
        }
        with self._lock:
            self.files[fid] = obj
            self._file_bytes[fid] = data
        self.stats.incr("files_uploaded")
        return _json_response(201, obj)

    def _list_files(self, req: _Request, params: dict[str, str], drop: bool) -> _Response:
        with self._lock:
            results = list(reversed(self.files.values()))
        return _json_response(200, {"next": None, "previous": None, "results": results})

    def _get_file(self, req: _Request, params: dict[str, str], drop: bool) -> _Response:
        with self._lock:
            obj = self.files.get(params["id"])
        return _problem(404, dict(_NOT_FOUND)) if obj is None else _json_response(200, obj)

    def _delete_file(self, req: _Request, params: dict[str, str], drop: bool) -> _Response:
        with self._lock:
            if self.files.pop(params["id"], None) is None:
                return _problem(404, dict(_NOT_FOUND))
            self._file_bytes.pop(params["id"], None)
        return _Response(204)

    def file_bytes(self, file_id: str) -> bytes:
        """The bytes of an uploaded file.

        Args:
            file_id: The file id.

        Returns:
            The contents.
        """
        with self._lock:
            return self._file_bytes[file_id]

    def resolve_uri(self, uri: str) -> bytes | None:
        """Fetch the bytes behind a URI that this server can answer itself (for models reading inputs).

        Args:
            uri: A ``data:`` URL, an uploaded file's ``urls.get``, or a ``/delivery/`` URL of this server.

        Returns:
            The bytes, or None when the URI points elsewhere.
        """
        if uri.startswith("data:"):
            header, _, payload = uri.partition(",")
            if header.endswith(";base64"):
                return base64.b64decode(payload)
            return urllib.parse.unquote_to_bytes(payload)
        if not uri.startswith(self.origin):
            return None
        path = urllib.parse.urlsplit(uri).path
        with self._lock:
            match = re.fullmatch(r"/v1/files/([^/]+)(?:/download)?", path)
            if match:
                return self._file_bytes.get(match.group(1))
            blob = self._blobs.get(path)
            return blob[0] if blob else None

    def _download_file(self, req: _Request, params: dict[str, str], drop: bool) -> _Response:
        with self._lock:
            obj = self.files.get(params["id"])
            data = self._file_bytes.get(params["id"])
        if obj is None or data is None:
            return _problem(404, dict(_NOT_FOUND))
        return _bytes_response(req, data, str(obj["content_type"]), str(obj["etag"]))

    def _serve_delivery(self, req: _Request, params: dict[str, str], drop: bool) -> _Response:
        with self._lock:
            blob = self._blobs.get(req.path)
        if blob is None:
            return _problem(404, dict(_NOT_FOUND))
        return _bytes_response(req, *blob)

    # -- account, secret ----------------------------------------------------------------------------

    def _get_account(self, req: _Request, params: dict[str, str], drop: bool) -> _Response:
        return _json_response(200, {"type": "user", "username": "test", "name": "Test User", "github_url": None})

    def _get_webhook_secret(self, req: _Request, params: dict[str, str], drop: bool) -> _Response:
        return _json_response(200, {"key": self.webhook_secret})


def _parse_prefer(value: str | None) -> tuple[str | None, float | None]:
    """Return (the preference to echo in ``Preference-Applied``, wait seconds) or (None, None)."""
    if not value:
        return None, None
    for token in (t.strip() for t in value.split(",")):
        match = _PREFER_RE.match(token.replace(" ", ""))
        if match:
            return token.replace(" ", ""), float(match.group(1) or 60)
    return None, None


def _bytes_response(req: _Request, data: bytes, content_type: str, etag: str) -> _Response:
    headers = {"Cache-Control": "public,max-age=3600", "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
    range_header = req.header("Range")
    if range_header:
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", range_header.strip())
        if match and (match.group(1) or match.group(2)):
            if match.group(1):
                start = int(match.group(1))
                end = int(match.group(2)) if match.group(2) else len(data) - 1
            else:
                start, end = max(0, len(data) - int(match.group(2))), len(data) - 1
            end = min(end, len(data) - 1)
            if start <= end:
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                return _Response(206, data[start : end + 1], content_type, headers)
        return _Response(416, b"", content_type, {"Content-Range": f"bytes */{len(data)}"})
    return _Response(200, data, content_type, headers)
