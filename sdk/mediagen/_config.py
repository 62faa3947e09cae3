"""Defaults (`DEFAULT_*`) and the `mediagen.toml` configuration.

Where the file comes from decides what it may change. `$MEDIAGEN_CONFIG`, a path given to the
client, and the user's own `~/.config/mediagen/mediagen.toml` are the user's choice: trusted. A
`mediagen.toml` that merely lies in the working directory (a cloned repository, a shared folder)
is not: it may set models, aliases, timeouts and limits, but a key that changes where credentials
go or which credentials are sent (`base_url`, any `*_url`/`endpoint`/`host`, `api_token`, `*key`,
`*secret`, `headers`, `client` ... in `[providers.<name>]`) makes loading fail with a `ConfigError`
unless the user opts in: `MEDIAGEN_CONFIG=./mediagen.toml` or `MEDIAGEN_TRUST_CWD_CONFIG=1`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import ConfigError

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_MAX_DOWNLOAD_BYTES",
    "DEFAULT_DOWNLOAD_ATTEMPTS",
    "DEFAULT_DOWNLOAD_TIMEOUT_S",
    "DEFAULT_MAX_RESULT_BYTES",
    "DEFAULT_MAX_OUTPUTS_PER_N",
    "DEFAULT_MAX_DECODED_BYTES",
    "DEFAULT_FFMPEG_TIMEOUT_S",
    "DEFAULT_MAX_CONCURRENT_CALLS",
    "DEFAULT_IMAGE_SIZE",
    "Config",
    "load_config",
    "config_path",
    "cache_dir",
    "TRUST_CWD_CONFIG_ENV",
    "endpoint_or_credential_keys",
]

TRUST_CWD_CONFIG_ENV = "MEDIAGEN_TRUST_CWD_CONFIG"
"""Set to 1 to let a `mediagen.toml` found in the working directory set endpoints and credentials."""

DEFAULT_TIMEOUT: float | None = None
"""Seconds one job may take end to end; None waits as long as the backend takes."""

DEFAULT_MAX_DOWNLOAD_BYTES = 1 << 30
"""Largest artifact fetched from a URL (1 GiB): a bigger body is refused, not truncated."""

DEFAULT_DOWNLOAD_ATTEMPTS = 3
"""Tries in all for an artifact download that failed in a way that may pass (dropped connection, 5xx)."""

DEFAULT_DOWNLOAD_TIMEOUT_S = 600.0
"""Seconds one artifact download may take in all (every redirect and retry included), however the
server paces its bytes; each network step also gives up after at most 60 s."""

DEFAULT_MAX_RESULT_BYTES = 4 << 30
"""Largest total a hosted result's outputs may download together (4 GiB)."""

DEFAULT_MAX_OUTPUTS_PER_N = 8
"""A hosted result may hold at most this many outputs per output asked for (`n`), previews included."""

DEFAULT_MAX_DECODED_BYTES = 2 << 30
"""Largest decoded form (video frames, audio samples) an artifact builds from its bytes (2 GiB)."""

DEFAULT_FFMPEG_TIMEOUT_S = 600.0
"""Seconds one ffmpeg run (mux, concat, video encoding, provenance remux) may take before it is killed."""

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
    return _find_config()[0]


def _find_config() -> tuple[Path | None, bool]:
    """The configuration file in force, and whether the user chose it (see the module docstring)."""
    if env := os.environ.get("MEDIAGEN_CONFIG"):
        return Path(env), True
    user = _user_config_dir() / "mediagen.toml"
    here = Path.cwd() / "mediagen.toml"
    if here.is_file():
        trusted = os.environ.get(TRUST_CWD_CONFIG_ENV, "").strip().lower() in ("1", "true", "yes")
        return here, trusted or _same_file(here, user)
    if user.is_file():
        return user, True
    return None, False


def _same_file(a: Path, b: Path) -> bool:
    try:
        return b.is_file() and os.path.samefile(a, b)
    except OSError:
        return False


# Settings that decide where a request goes or what credentials it carries.
_ENDPOINT_NAMES = ("url", "base_url", "endpoint", "host", "api_base", "base", "origin", "proxy", "proxies")
_ENDPOINT_SUFFIXES = ("_url", "_endpoint", "_host", "_base", "_proxy")
_CREDENTIAL_NAMES = ("client", "headers", "auth", "key", "cookies", "http_client")
_CREDENTIAL_PARTS = ("token", "secret", "password", "api_key", "apikey", "credential", "auth")


def endpoint_or_credential_keys(providers: Any) -> list[str]:
    """The `[providers.<name>] key` settings that change an endpoint or credentials.

    Args:
        providers: The `providers` table of a configuration file.

    Returns:
        `"<provider>.<key>"` for each such setting, in file order.

    Examples:
        >>> endpoint_or_credential_keys({"replicate": {"base_url": "https://x", "max_concurrency": 8}})
        ['replicate.base_url']
    """
    found: list[str] = []
    if not isinstance(providers, dict):
        return found
    for provider, settings in providers.items():
        if not isinstance(settings, dict):
            continue
        for key in settings:
            name = str(key).lower()
            if (
                name in _ENDPOINT_NAMES
                or name in _CREDENTIAL_NAMES
                or name.endswith(_ENDPOINT_SUFFIXES)
                or name.endswith("_key")
                or any(part in name for part in _CREDENTIAL_PARTS)
            ):
                found.append(f"{provider}.{key}")
    return found


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read the configuration from `path`, or from where `config_path()` finds it.

    A file found in the working directory (not named by `path` or `$MEDIAGEN_CONFIG`) may not
    change endpoints or credentials (see the module docstring).

    Raises:
        FileNotFoundError: `path` (or `$MEDIAGEN_CONFIG`) names a missing file.
        ConfigError: A working-directory file sets an endpoint or credentials without the opt-in.
        ValueError: The file is not valid TOML or holds unknown keys.
    """
    if path is not None:
        found: Path | None = Path(path)
        trusted = True  # the caller named it
    else:
        found, trusted = _find_config()
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
    if not trusted and (keys := endpoint_or_credential_keys(data.get("providers"))):
        raise ConfigError(
            f"{found} was found in the working directory and sets {', '.join(keys)}: a config file "
            "that merely lies where mediagen runs may not change where credentials are sent, or which. "
            f"If you trust it, name it (MEDIAGEN_CONFIG={found}) or set {TRUST_CWD_CONFIG_ENV}=1; "
            "otherwise remove those keys (endpoints belong in the environment, e.g. REPLICATE_BASE_URL, "
            "or in ~/.config/mediagen/mediagen.toml; tokens in the environment)."
        )
    try:
        return Config.model_validate({**data, "source": str(found)})
    except Exception as exc:
        raise ValueError(f"{found}: {exc}") from exc
