"""Defaults (`DEFAULT_*`) and the `mediagen.toml` configuration."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_MAX_DOWNLOAD_BYTES",
    "DEFAULT_DOWNLOAD_ATTEMPTS",
    "DEFAULT_MAX_CONCURRENT_CALLS",
    "DEFAULT_IMAGE_SIZE",
    "Config",
    "load_config",
    "config_path",
    "cache_dir",
]

DEFAULT_TIMEOUT: float | None = None
"""Seconds one job may take end to end; None waits as long as the backend takes."""

DEFAULT_MAX_DOWNLOAD_BYTES = 1 << 30
"""Largest artifact fetched from a URL (1 GiB): a bigger body is refused, not truncated."""

DEFAULT_DOWNLOAD_ATTEMPTS = 3
"""Tries in all for an artifact download that failed in a way that may pass (dropped connection, 5xx)."""

DEFAULT_MAX_CONCURRENT_CALLS = 4
"""How many backend calls one request split by `n` may run at once."""

DEFAULT_IMAGE_SIZE = 1024
"""Width and height a backend uses when a request names neither (backends may prefer their model's own)."""

Modality = Literal["image", "video", "audio", "mesh"]
ModelSpec = str | list[str]


class Config(BaseModel):
    """What `mediagen.toml` holds.

    ```toml
    timeout = 600

    [defaults]
    image = "diffusers:stabilityai/stable-diffusion-xl-base-1.0"
    audio = "transformers:facebook/musicgen-small"

    [aliases]
    fast = "replicate:black-forest-labs/flux-schnell"
    robust = ["replicate:black-forest-labs/flux-schnell", "diffusers:/models/sdxl"]

    [providers.replicate]
    max_concurrency = 32
    ```
    """

    model_config = ConfigDict(extra="forbid")

    defaults: dict[Modality, ModelSpec] = Field(default_factory=dict)
    """Model used per modality when a call names none."""
    aliases: dict[str, ModelSpec] = Field(default_factory=dict)
    """Short names for model strings; a list is a fallback chain."""
    providers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Settings passed to each provider's backend constructor (never secrets)."""
    timeout: float | None = Field(default=None, gt=0)
    """Default deadline in seconds for each job."""
    strict: bool = False
    """Raise instead of warning when a backend cannot honour a setting."""
    cache: dict[str, Any] = Field(default_factory=dict)
    """Result-cache settings (`dir`, `max_bytes`, `enabled`)."""
    prices: dict[str, dict[str, float]] = Field(default_factory=dict)
    """Price per usage unit, keyed by `provider` or `provider:model`."""
    budget: float | None = Field(default=None, ge=0)
    """Refuse new jobs once the ledger's cost passes this amount."""
    serve: dict[str, Any] = Field(default_factory=dict)
    """`mediagen serve` settings (`[serve]`, `[serve.models]`); see `mediagen.serve.ServeSettings`."""
    source: str | None = None
    """The file this configuration was read from (set by `load_config`)."""


def _user_config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "mediagen"


def cache_dir() -> Path:
    """Where mediagen keeps caches: `$MEDIAGEN_CACHE_DIR`, else the user cache directory."""
    if env := os.environ.get("MEDIAGEN_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mediagen"


def config_path() -> Path | None:
    """The configuration file in force: `$MEDIAGEN_CONFIG`, `./mediagen.toml`, the user's; or None."""
    if env := os.environ.get("MEDIAGEN_CONFIG"):
        return Path(env)
    for candidate in (Path.cwd() / "mediagen.toml", _user_config_dir() / "mediagen.toml"):
        if candidate.is_file():
            return candidate
    return None


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read the configuration from `path`, or from where `config_path()` finds it.

    Raises:
        FileNotFoundError: `path` (or `$MEDIAGEN_CONFIG`) names a missing file.
        ValueError: The file is not valid TOML or holds unknown keys.
    """
    found = Path(path) if path is not None else config_path()
    if found is None:
        return Config()
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        data = tomllib.loads(found.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{found} is not valid TOML: {exc}") from exc
    try:
        return Config.model_validate({**data, "source": str(found)})
    except Exception as exc:
        raise ValueError(f"{found}: {exc}") from exc
