"""What `mediagen serve` serves, and how: models, tokens, limits, storage.

Settings come from the `[serve]` table of `mediagen.toml`, from the command line (which wins), or
from code (`ServeSettings(...)` handed to `create_app`)::

    [serve]
    db = "/var/lib/mediagen/predictions.db"
    requests_per_minute = 120       # per token
    max_concurrency = 8             # predictions in flight per token
    retention_days = 7

    [serve.models]
    "acme/sdxl" = "diffusers:/models/sdxl"
    "acme/robust" = ["replicate:black-forest-labs/flux-schnell", "diffusers:/models/sdxl"]
    "acme/voice" = { model = "transformers:/models/vits", modality = "audio" }

Tokens come from `MEDIAGEN_SERVE_TOKEN` (one token, named `default`) or a token file (TOML), one
table per named token, each holding the token itself or only its SHA-256::

    [tokens.alice]
    token = "a-long-random-string"
    requests_per_minute = 60
    budget = 25.0                   # in the currency of [prices]

    [tokens.ci]
    sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    max_concurrency = 2
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .._remote import is_loopback_host
from ..requests import Modality, Task

__all__ = [
    "ENV_TOKEN",
    "ServedModel",
    "ServeSettings",
    "TokenSpec",
    "is_loopback_host",
    "load_token_file",
    "modalities_of",
    "parse_model_spec",
]

ENV_TOKEN = "MEDIAGEN_SERVE_TOKEN"
"""The environment variable holding the one bearer token of a simple deployment."""

_MODALITY_OF_TASK: dict[str, Modality] = {
    "text-to-image": "image",
    "image-to-image": "image",
    "inpaint": "image",
    "controlnet": "image",
    "text-to-video": "video",
    "image-to-video": "video",
    "text-to-audio": "audio",
    "text-to-music": "audio",
    "text-to-sound": "audio",
    "text-to-speech": "audio",
    "text-to-3d": "mesh",
    "image-to-3d": "mesh",
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

EXPOSABLE_FIELDS = frozenset({"loras", "control_model", "options"})
"""Request fields that make the server load files or pass raw settings on: refused from HTTP
callers unless a served model lists them in `expose`."""


def modalities_of(tasks: Sequence[Task] | frozenset[Task]) -> list[Modality]:
    """The modalities a set of tasks produces, in a stable order."""
    found = {_MODALITY_OF_TASK[t] for t in tasks if t in _MODALITY_OF_TASK}
    return [m for m in ("image", "video", "audio", "mesh") if m in found]


class ServedModel(BaseModel):
    """One model the server exposes as `owner/name`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    owner: str
    """The owner part of the public name."""
    name: str
    """The name part of the public name."""
    model: str | tuple[str, ...]
    """What runs it: a model string, an alias, or a fallback list of them."""
    modality: Modality | None = None
    """What it makes; None infers it from the backend's capabilities (it must be unambiguous)."""
    description: str | None = None
    """Shown in the model object."""
    expose: frozenset[str] = frozenset()
    """Request fields HTTP callers may set although they reach the server's files or raw backend
    settings (`loras`, `control_model`, `options`); none by default."""

    @field_validator("owner", "name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r} is not a valid owner or name (letters, digits, '.', '_', '-')")
        return value

    @field_validator("model", mode="before")
    @classmethod
    def _model(cls, value: Any) -> Any:
        if isinstance(value, list):
            value = tuple(value)
        if isinstance(value, tuple) and not value:
            raise ValueError("an empty fallback list; name at least one model")
        return value

    @field_validator("expose")
    @classmethod
    def _expose(cls, value: frozenset[str]) -> frozenset[str]:
        unknown = value - EXPOSABLE_FIELDS
        if unknown:
            raise ValueError(f"expose takes {', '.join(sorted(EXPOSABLE_FIELDS))}; not {', '.join(sorted(unknown))}")
        return value

    @property
    def ref(self) -> str:
        """`owner/name`."""
        return f"{self.owner}/{self.name}"

    @property
    def chain(self) -> str | list[str]:
        """The model argument handed to `Client.submit`."""
        return self.model if isinstance(self.model, str) else list(self.model)


def parse_model_spec(spec: str) -> ServedModel:
    """Read a `--model` argument: `[MODALITY:]OWNER/NAME=MODEL[,FALLBACK...]`.

    Examples:
        >>> parse_model_spec("acme/sd=diffusers:/models/sd").chain
        'diffusers:/models/sd'
        >>> parse_model_spec("audio:acme/tts=test:fake").modality
        'audio'

    Raises:
        ValueError: The argument is not of that form.
    """
    public, sep, target = spec.partition("=")
    if not sep or not target.strip():
        raise ValueError(f"--model takes OWNER/NAME=MODEL (e.g. acme/sd=diffusers:/models/sd), got {spec!r}")
    modality: str | None = None
    if ":" in public:
        modality, _, public = public.partition(":")
    owner, slash, name = public.strip().partition("/")
    if not slash:
        raise ValueError(f"the public name must be OWNER/NAME, got {public!r} in {spec!r}")
    models = [m.strip() for m in target.split(",") if m.strip()]
    return ServedModel(
        owner=owner,
        name=name,
        model=models[0] if len(models) == 1 else tuple(models),
        modality=modality,
    )


class TokenSpec(BaseModel):
    """One bearer token: who it is, and the limits it runs under."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    """Shown in logs and metrics instead of the token; predictions are visible only to their token."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """SHA-256 (hex) of the token: the token itself is never kept."""
    requests_per_minute: float | None = Field(None, gt=0)
    """Predictions this token may create a minute (None: the server's default)."""
    max_concurrency: int | None = Field(None, ge=1)
    """Predictions of this token running at once (None: the server's default)."""
    budget: float | None = Field(None, ge=0)
    """Cost this token may spend (priced by the config's `[prices]`) while the server runs; None: no cap."""

    @classmethod
    def from_token(cls, name: str, token: str, **limits: Any) -> TokenSpec:
        """A spec from the token itself (hashed at once).

        Raises:
            ValueError: The token is shorter than 16 characters.
        """
        if len(token) < 16:
            raise ValueError(f"the token of {name!r} is too short: use at least 16 random characters")
        return cls(name=name, sha256=hashlib.sha256(token.encode()).hexdigest(), **limits)


def load_token_file(path: str | os.PathLike[str]) -> list[TokenSpec]:
    """Read a token file (TOML, one `[tokens.<name>]` table per token).

    Raises:
        ValueError: The file is malformed, or holds a table without `token` or `sha256`.
        FileNotFoundError: No such file.
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    found = Path(path)
    mode = found.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO) and os.name == "posix":
        import logging

        logging.getLogger("mediagen.serve").warning("token file %s is readable by other users; chmod 600 it", found)
    try:
        data = tomllib.loads(found.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{found} is not valid TOML: {exc}") from exc
    tables = data.get("tokens")
    if not isinstance(tables, Mapping) or not tables:
        raise ValueError(f"{found} holds no [tokens.<name>] table")
    specs = []
    for name, table in tables.items():
        if not isinstance(table, Mapping):
            raise ValueError(f"{found}: [tokens.{name}] must be a table")
        values = dict(table)
        token = values.pop("token", None)
        try:
            if token is not None:
                specs.append(TokenSpec.from_token(str(name), str(token), **values))
            elif "sha256" in values:
                specs.append(TokenSpec(name=str(name), **values))
            else:
                raise ValueError("give token = '...' or sha256 = '<hex>'")
        except ValueError as exc:
            raise ValueError(f"{found}: [tokens.{name}]: {exc}") from exc
    return specs


class ServeSettings(BaseModel):
    """Everything `create_app` needs besides the client."""

    model_config = ConfigDict(extra="forbid")

    models: list[ServedModel] = Field(default_factory=list)
    """The served models."""
    db: Path | None = None
    """The SQLite file of predictions; outputs live in `<db>.files/` beside it. None keeps both
    in a temporary directory that is removed at shutdown (nothing survives a restart)."""
    fsync: bool = False
    """Flush every commit and output file to the disk, so predictions survive a power loss too (not
    only a crash or `kill -9` of the server, which they always survive); costs a disk flush per write."""
    tokens: list[TokenSpec] = Field(default_factory=list)
    """Accepted bearer tokens; none means no authentication (loopback only)."""
    requests_per_minute: float | None = Field(None, gt=0)
    """Default per-token limit on creates (None: none)."""
    max_concurrency: int | None = Field(16, ge=1)
    """Default per-token limit on predictions running at once (None: none)."""
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    """Largest request body accepted (413 beyond)."""
    max_outputs: int = Field(8, ge=1, le=64)
    """Largest `n` one prediction may ask for."""
    retention_days: float | None = Field(7.0, gt=0)
    """Inputs, outputs and logs of predictions older than this are removed (`data_removed`); None keeps them."""
    shutdown_grace_s: float = Field(30.0, ge=0)
    """How long a stopping server lets running predictions finish before it marks them failed."""
    webhook_secret: str | None = None
    """The master secret that signs webhooks (each token gets its own key derived from it); by
    default one is made and kept in `<db>.webhook-secret`."""
    webhook_allow_http: Literal["loopback", "never"] = "loopback"
    """Plain-http webhooks go only to loopback addresses (tests, a local relay), or nowhere."""
    page_size: int = Field(100, ge=1, le=1000)
    """Predictions per page of `GET /v1/predictions`."""
    min_cancel_after_s: float = Field(5.0, gt=0)
    """Shortest `Cancel-After` accepted (Replicate's minimum is 5 s; a test server on a scaled
    clock lowers it)."""

    @model_validator(mode="after")
    def _unique(self) -> ServeSettings:
        refs = [m.ref for m in self.models]
        twice = sorted({r for r in refs if refs.count(r) > 1})
        if twice:
            raise ValueError(f"models served twice: {', '.join(twice)}")
        names = [t.name for t in self.tokens]
        if len(set(names)) != len(names):
            raise ValueError("two tokens share a name")
        return self

    @classmethod
    def from_config(cls, table: Mapping[str, Any] | None, **overrides: Any) -> ServeSettings:
        """Settings from the config's `[serve]` table, with command-line values over them.

        Args:
            table: The `[serve]` table (may be empty or None).
            **overrides: Values that win (None values are ignored); `models` are added to the table's.

        Raises:
            ValueError: The table is malformed.
        """
        values = dict(table or {})
        models: list[ServedModel] = []
        for ref, target in dict(values.pop("models", {}) or {}).items():
            owner, _, name = str(ref).partition("/")
            if isinstance(target, Mapping):
                models.append(ServedModel(owner=owner, name=name, **target))
            else:
                models.append(ServedModel(owner=owner, name=name, model=target))
        extra_models = list(overrides.pop("models", None) or [])
        given = {m.ref for m in extra_models}
        values["models"] = [m for m in models if m.ref not in given] + extra_models
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)
