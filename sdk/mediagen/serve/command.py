"""The `mediagen serve` command: settings from the config, the command line and the environment."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from .._config import Config, load_config
from .runner import BindRefused, serve
from .settings import ENV_TOKEN, ServeSettings, TokenSpec, load_token_file, parse_model_spec

__all__ = ["load_settings", "run_command", "settings_from"]


def settings_from(
    *,
    models: Sequence[str] = (),
    db: str | None = None,
    token_file: str | None = None,
    retention_days: float | None = None,
    config_table: dict[str, object] | None = None,
) -> ServeSettings:
    """Settings from `[serve]`, `--model`/`--db`/`--token-file`, and `MEDIAGEN_SERVE_TOKEN`.

    Raises:
        ValueError: A malformed `--model`, token file or `[serve]` table.
    """
    tokens: list[TokenSpec] = []
    if env := os.environ.get(ENV_TOKEN):
        tokens.append(TokenSpec.from_token("default", env))
    if token_file:
        tokens += load_token_file(token_file)
    return ServeSettings.from_config(
        config_table,
        models=[parse_model_spec(spec) for spec in models],
        db=db,
        tokens=tokens or None,
        retention_days=retention_days,
    )


def load_settings(
    *, models: Sequence[str], db: str | None, token_file: str | None, retention_days: float | None
) -> tuple[Config, ServeSettings]:
    """The configuration and the serve settings of one `mediagen serve` command line.

    Raises:
        ValueError: Malformed settings, or no model to serve.
        FileNotFoundError: A token file that is not there.
    """
    config = load_config()
    settings = settings_from(
        models=models, db=db, token_file=token_file, retention_days=retention_days, config_table=dict(config.serve)
    )
    if not settings.models:
        raise ValueError("no model to serve: pass --model OWNER/NAME=MODEL, or fill [serve.models] in mediagen.toml")
    return config, settings


def run_command(
    *,
    host: str,
    port: int,
    models: Sequence[str],
    db: str | None,
    token_file: str | None,
    retention_days: float | None,
    log_level: str,
    metrics_public: bool,
) -> int:
    """Run the server; returns the exit code (2 for bad settings or a refused bind)."""
    try:
        config, settings = load_settings(models=models, db=db, token_file=token_file, retention_days=retention_days)
        serve(settings, host=host, port=port, config=config, log_level=log_level, metrics_public=metrics_public)
    except (BindRefused, ValueError, FileNotFoundError) as exc:
        print(f"mediagen serve: {exc}", file=sys.stderr)
        return 2
    return 0
