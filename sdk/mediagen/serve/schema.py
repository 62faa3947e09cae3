"""A served model as Replicate describes models: the model object and its version's OpenAPI schema.

The schema is generated from the request model of the model's modality (`ImageRequest` ...),
narrowed by what the backend says it can do (`Capabilities`): fields for tasks it lacks are left
out, sizes and counts get the backend's maxima. It is written the way Cog writes one
(`components.schemas.Input` with `x-order`, `Output` an array of URIs), so Replicate's clients and
mediagen's own `replicate:` backend map and validate inputs against it before they send them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from ..backend import Capabilities
from ..requests import Request, request_class
from ..results import Result
from .settings import EXPOSABLE_FIELDS, ServedModel

__all__ = ["ModelDescription", "describe_model", "MEDIA_FIELDS"]

MEDIA_FIELDS = ("image", "images", "mask", "control_image")
"""Request fields that carry media (`images` a list of them): sent as `data:` URLs or URLs of this
server's outputs."""

COG_VERSION = "mediagen-serve"


class _MediaAsUri(GenerateJsonSchema):
    # Artifact fields validate through plain isinstance checks, which JSON Schema cannot express;
    # over HTTP they are URLs.
    def is_instance_schema(self, schema: core_schema.IsInstanceSchema) -> JsonSchemaValue:
        return {"type": "string", "format": "uri"}


def _dropped_fields(served: ServedModel, modality: str, caps: Capabilities) -> set[str]:
    tasks = caps.tasks
    drop = set(EXPOSABLE_FIELDS - served.expose)
    if modality == "image":
        if not tasks & {"image-to-image", "inpaint", "controlnet"}:
            drop |= {"image", "images", "strength"}
        if "inpaint" not in tasks:
            drop.add("mask")
        if "controlnet" not in tasks:
            drop |= {"control_image", "control_scale", "control_model"}
    elif modality == "video" and "image-to-video" not in tasks:
        drop.add("image")
    elif modality == "mesh" and "image-to-3d" not in tasks:
        drop.add("image")
    return drop


def _flatten(spec: dict[str, Any]) -> dict[str, Any]:
    # `Optional[X]` becomes `anyOf: [X, null]`; Cog writes X and leaves the field out of `required`.
    options = spec.pop("anyOf", None)
    if options:
        for option in options:
            if option.get("type") != "null":
                spec = {**option, **spec}
                break
    if spec.get("default", 0) is None:
        del spec["default"]
    return spec


def input_schema(served: ServedModel, modality: str, caps: Capabilities, *, max_outputs: int) -> dict[str, Any]:
    """The `Input` schema of a served model.

    Args:
        served: The served model (its `expose` list).
        modality: What it makes.
        caps: What its backend says it can do.
        max_outputs: The server's cap on `n`.
    """
    cls = request_class(modality)
    raw = cls.model_json_schema(schema_generator=_MediaAsUri)
    drop = _dropped_fields(served, modality, caps)
    properties: dict[str, Any] = {}
    for order, (name, spec) in enumerate(raw["properties"].items()):
        if name in drop:
            continue
        spec = _flatten(dict(spec))
        spec["x-order"] = order
        properties[name] = spec
    caps_max = {
        "width": caps.max_width,
        "height": caps.max_height,
        "frames": caps.max_frames,
        "duration_s": caps.max_duration_s,
    }
    for name, maximum in caps_max.items():
        if maximum is not None and name in properties:
            properties[name]["maximum"] = min(properties[name].get("maximum", maximum), maximum)
    if "n" in properties:
        properties["n"]["maximum"] = max_outputs
    if modality == "audio" and "kind" in properties:
        kinds = [k for k in ("music", "sound", "speech") if f"text-to-{k}" in caps.tasks]
        if kinds and "text-to-audio" not in caps.tasks:
            properties["kind"]["enum"] = kinds
    required = ["prompt"] if modality in ("image", "audio") else []
    return {"type": "object", "title": "Input", "required": required, "properties": properties}


@dataclass(frozen=True)
class ModelDescription:
    """A served model, ready to be shown and run."""

    served: ServedModel
    modality: str
    caps: Capabilities
    openapi_schema: dict[str, Any]
    version: str
    """64 hex digits, from the model string and the schema: a change of either is a new version."""
    created_at: str

    def parse_input(self, given: Mapping[str, Any]) -> Request | None:
        """The request of an input, for a model with its own input shape; None: the request fields.

        The served models of `mediagen serve` take the request's own fields (checked against
        `openapi_schema` by the prediction service). A subclass describing a model of another
        shape (a test kit's imitation of a hosted model, say) turns its input into the request
        here, and raises `mediagen.serve.predictions.InputError` for a wrong one.
        """
        return None

    def output_layout(self, result: Result) -> Any:
        """How the outputs sit in the prediction's `output`; None: a list of URLs.

        Returns JSON whose `{"$output": i}` leaves stand for the URL of `result.artifacts[i]`
        (one URL, an object of URLs, a literal such as a `data:` URL ...).
        """
        return None

    @property
    def input_properties(self) -> dict[str, Any]:
        """Input name → its schema."""
        props: dict[str, Any] = self.openapi_schema["components"]["schemas"]["Input"]["properties"]
        return props

    def version_json(self) -> dict[str, Any]:
        """The version object (`latest_version`)."""
        return {
            "id": self.version,
            "created_at": self.created_at,
            "cog_version": COG_VERSION,
            "openapi_schema": self.openapi_schema,
        }

    def model_json(self, base: str, run_count: int) -> dict[str, Any]:
        """The model object replicate-python validates (`url`, `owner`, `name`, `run_count` ...)."""
        served = self.served
        return {
            "url": f"{base}/v1/models/{served.owner}/{served.name}",
            "owner": served.owner,
            "name": served.name,
            "description": served.description or f"{self.modality} model served by mediagen",
            "visibility": "private",
            "github_url": None,
            "paper_url": None,
            "license_url": None,
            "run_count": run_count,
            "cover_image_url": None,
            "default_example": None,
            # Official: run by name, `POST /v1/models/{owner}/{name}/predictions`, no version needed.
            "is_official": True,
            "latest_version": self.version_json(),
        }


def describe_model(
    served: ServedModel, modality: str, caps: Capabilities, *, max_outputs: int, created_at: str
) -> ModelDescription:
    """Build the description (schema and version id) of a served model."""
    document = {
        "openapi": "3.0.2",
        "info": {"title": f"{served.ref} (mediagen)", "version": "0.1.0"},
        "paths": {},
        "components": {
            "schemas": {
                "Input": input_schema(served, modality, caps, max_outputs=max_outputs),
                "Output": {"type": "array", "title": "Output", "items": {"type": "string", "format": "uri"}},
            }
        },
    }
    digest = hashlib.sha256(
        json.dumps({"model": served.chain, "modality": modality, "schema": document}, sort_keys=True).encode()
    ).hexdigest()
    return ModelDescription(served, modality, caps, document, digest, created_at)
