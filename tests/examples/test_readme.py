"""The README and the docs home work as written: snippets run as files, commands run, make targets exist.

Python blocks run as their own process, with each model line swapped for the offline substitute
written beside it (`# MODEL = "test:fake"  # offline substitute`). `mediagen` command lines run
with a hub model replaced by `test:fake`. `make X` is checked against the Makefile's targets.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "docs" / "index.md"]
CLI = Path(sys.executable).with_name("mediagen")
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
OFFLINE = re.compile(r"^# (?P<line>[A-Z_ =]+= \"test:fake\")\s+# offline substitute$", re.M)


def blocks(lang: str) -> list[tuple[str, int, str]]:
    found = []
    for page in PAGES:
        for i, match in enumerate(FENCE.finditer(page.read_text())):
            if match[1] == lang:
                found.append((page.name, i, match[2]))
    return found


def offline(code: str) -> str:
    """Uncomment the offline substitute, which follows (and so overrides) the real model line."""
    return OFFLINE.sub(lambda m: m["line"], code)


def env() -> dict[str, str]:
    out = dict(os.environ, HF_HUB_OFFLINE="1", MEDIAGEN_ALLOW_REMOTE="0")
    out.pop("REPLICATE_API_TOKEN", None)
    return out


PYTHON = blocks("python")


def test_the_pages_have_snippets_and_the_three_line_example_comes_first() -> None:
    assert len(PYTHON) >= 6
    first_readme = next(code for page, _, code in PYTHON if page == "README.md")
    assert "mg.SyncClient()" in first_readme and len(first_readme.strip().splitlines()) <= 4


@pytest.mark.parametrize(("page", "index", "code"), PYTHON, ids=[f"{p}-{i}" for p, i, _ in PYTHON])
def test_python_snippet_runs_as_a_file(page: str, index: int, code: str, tmp_path: Path) -> None:
    ast.parse(code)  # no top-level `await` / `async with`: it must run as a file
    script = offline(code)
    assert "test:fake" in script, f"{page} block {index} has no offline substitute beside its model"
    work = tmp_path / "work"
    work.mkdir()
    (work / "snippet.py").write_text(script)
    proc = subprocess.run(
        [sys.executable, "snippet.py"], cwd=work, env=env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"{page} block {index}:\n{script}\n{proc.stderr}"
    written = [p for p in work.iterdir() if p.name != "snippet.py"]
    assert written, "each snippet saves at least one file"
    assert all(p.stat().st_size > 0 for p in written)


def shell_lines() -> list[str]:
    lines = []
    for _, _, code in blocks("bash"):
        for line in code.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line:
                lines.append(line)
    return lines


# Commands that keep running (a server) are exercised by their own tests, not started from here.
LONG_RUNNING = ("mediagen serve",)
MEDIAGEN_LINES = [line for line in shell_lines() if line.startswith("mediagen ") and not line.startswith(LONG_RUNNING)]


@pytest.mark.parametrize("line", MEDIAGEN_LINES)
def test_mediagen_command_runs(line: str, tmp_path: Path) -> None:
    if not CLI.exists():
        pytest.skip("the mediagen script is not installed next to this interpreter")
    argv = shlex.split(line)[1:]
    if "-m" in argv:  # a hub model is swapped for the offline backend
        argv[argv.index("-m") + 1] = "test:fake"
    proc = subprocess.run([str(CLI), *argv], cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{line}\n{proc.stderr}"


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, re.M))


def test_every_make_target_the_docs_name_exists() -> None:
    named = set()
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        named |= set(re.findall(r"(?:^|`)make ([a-z][\w-]*)", page.read_text(), re.M))  # in code, not prose
    assert {"demo", "test", "docs-serve"} <= named
    missing = named - make_targets()
    assert not missing, f"the docs name make targets the Makefile lacks: {sorted(missing)}"


def test_install_lines_work_from_a_clone() -> None:
    for line in shell_lines():
        if line.startswith("pip install"):
            words = shlex.split(line)
            # from the clone (-e . / ./testkit) or a URL: never a bare name no index serves
            assert "-e" in words or any("@" in w for w in words), line
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        assert not re.search(r"pip install \"?mediagen\[[\w,]*\]\"?(?! @)", page.read_text()), page.name


@pytest.mark.parametrize("line", [line for line in shell_lines() if line.startswith(LONG_RUNNING)])
def test_long_running_commands_exist(line: str, tmp_path: Path) -> None:
    if not CLI.exists():
        pytest.skip("the mediagen script is not installed next to this interpreter")
    command = shlex.split(line)[1]
    proc = subprocess.run(
        [str(CLI), command, "--help"], cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and f"usage: mediagen {command}" in proc.stdout, proc.stderr
