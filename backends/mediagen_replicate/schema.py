"""A model version's inputs, read from Cog's OpenAPI schema, and the check of inputs against it.

Inputs are validated against the schema's types, bounds and enums before any prediction is
created, all problems at once, each named with what is allowed.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from mediagen.artifacts import Artifact
from mediagen.errors import InvalidRequestError

from .errors import PROVIDER

__all__ = ["InputSchema", "is_number"]


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
    if is_number(value):
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
        return is_number(value) and float(value).is_integer()
    if expected == "number":
        return is_number(value)
    if expected == "array":
        return isinstance(value, (list, tuple))
    if expected == "object":
        return isinstance(value, Mapping)
    return True


def is_number(value: Any) -> TypeGuard[int | float]:
    """Whether `value` is a JSON number (a bool is not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if is_number(value):
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
