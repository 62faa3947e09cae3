"""`mediagen backends`: each provider, whether it is usable here and why not, what it serves."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import EXIT_FAILED, EXIT_OK, echo_json, fail

__all__ = ["add_arguments", "backend_rows", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `backends` command's arguments."""
    parser.add_argument(
        "--json", action="store_true", dest="as_json", help="Full state as JSON: tasks, settings, loaded models."
    )


def run(args: argparse.Namespace) -> int:
    """List providers, whether each is usable here, and why not."""
    from ..errors import ConfigError

    try:
        rows = backend_rows()
    except (ConfigError, ValueError, OSError) as exc:  # a config file refused or unreadable
        return fail(exc, EXIT_FAILED, args.as_json)
    if args.as_json:
        echo_json(rows)
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table("provider", "usable", "modalities", "notes")
    for row in rows:
        ok = "[green]yes[/]" if row["usable"] else "[red]no[/]"
        table.add_row(
            row["provider"], ok, ", ".join(_modalities(row["tasks"])), row["reason"] or _state_line(row["state"])
        )
    Console().print(table)
    return EXIT_OK


_MODALITY_OF_TASK = {
    "image": "image",
    "inpaint": "image",
    "controlnet": "image",
    "video": "video",
    "audio": "audio",
    "music": "audio",
    "sound": "audio",
    "speech": "audio",
    "3d": "3D",
}


def _modalities(tasks: list[str]) -> list[str]:
    found = {_MODALITY_OF_TASK[task.rsplit("-", 1)[-1]] for task in tasks}
    return [m for m in ("image", "video", "audio", "3D") if m in found]


def backend_rows() -> list[dict[str, Any]]:
    """One row per registered provider: usable here or why not, what it serves, where it runs."""
    from .._config import load_config
    from .._registry import available_providers, get_backend_class

    settings = load_config().providers
    rows = []
    for name in available_providers():
        row: dict[str, Any] = {"provider": name, "usable": False, "tasks": [], "reason": "", "state": {}}
        try:
            cls = get_backend_class(name)
        except Exception as exc:  # an import failure is exactly what this command reports
            row["reason"] = str(exc).splitlines()[0]
            rows.append(row)
            continue
        row["tasks"] = sorted(cls.tasks)
        reason = cls.availability()
        row["usable"] = reason is None
        row["reason"] = reason or ""
        if reason is None:
            try:
                row["state"] = cls(**{k: v for k, v in settings.get(name, {}).items() if k != "policy"}).describe()
            except Exception as exc:  # a bad [providers.x] table is worth showing, not crashing on
                row["usable"], row["reason"] = False, f"settings in mediagen.toml: {exc}"
        rows.append(row)
    return rows


def _state_line(state: dict[str, Any]) -> str:
    parts = []
    if "device" in state:
        parts.append(f"device {state['device']}" + (f" ({state['dtype']})" if state.get("dtype") else ""))
    if "loaded" in state:
        parts.append(f"{len(state['loaded'])} model(s) loaded in this process")
    return "; ".join(parts)
