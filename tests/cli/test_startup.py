"""`mediagen --help` and `mediagen <command> --help` load only the CLI: no client, no rich, no provider.

(How long they take is measured in benchmarks/import_time.py, not asserted here.)
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mediagen.cli import COMMANDS

NOT_FOR_HELP = (
    "mediagen.client",
    "mediagen.sync",
    "mediagen.jobs",
    "mediagen.cli._progress",
    "rich",
    "typer",
    "click",
    "httpx",
    "numpy",
    "PIL",
    "torch",
    "mediagen_local",
    "mediagen_diffusers",
    "mediagen_transformers",
    "mediagen_replicate",
)

PROBE = """
import contextlib, io, json, sys
from mediagen.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = main({argv!r})
print(json.dumps([code, out.getvalue(), sorted(m for m in sys.modules if m.split(".")[0] in {roots!r} or m in {names!r})]))
"""


def help_of(argv: list[str]) -> tuple[int, str, list[str]]:
    roots = sorted({name.split(".")[0] for name in NOT_FOR_HELP} | {"mediagen"})
    code = PROBE.format(argv=argv, roots=roots, names=list(NOT_FOR_HELP))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    exit_code, text, modules = json.loads(proc.stdout)
    return exit_code, text, modules


@pytest.mark.parametrize("argv", [["--help"], *[[name, "--help"] for name in COMMANDS]])
def test_help_loads_nothing_it_does_not_need(argv: list[str]) -> None:
    exit_code, text, modules = help_of(argv)
    assert exit_code == 0 and "usage: mediagen" in text
    loaded = [m for m in modules if any(m == bad or m.startswith(bad + ".") for bad in NOT_FOR_HELP)]
    assert loaded == []
    # Only the command asked about is imported.
    others = {f"mediagen.cli.{name}" for name in COMMANDS} - {f"mediagen.cli.{argv[0]}"}
    assert not others & set(modules)


def test_top_level_help_lists_every_command() -> None:
    _, text, _ = help_of(["--help"])
    flat = " ".join(text.split())  # argparse may wrap a row
    for name, summary in COMMANDS.items():
        assert " ".join(f"{name} {summary}".split()) in flat, name


def test_help_shows_choices_and_flags_as_flags() -> None:
    _, text, _ = help_of(["audio", "--help"])
    assert "--kind music|sound|speech" in text
    assert "--json " in text and "--json <bool>" not in text and "--overwrite" in text
    _, text, _ = help_of(["mesh", "--help"])
    assert "--format glb|obj|ply" in text
