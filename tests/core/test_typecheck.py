"""The type checker sees mediagen's own types inside every backend and the test kit.

Folders are import names, so `mypy` (no arguments, `[tool.mypy]` names the packages) resolves
`mediagen.*` in a backend to the real classes, not `Any`. This proves it on a copy of the tree: a
call to a missing method on a `RunContext`, placed in one file of each package, must fail the check.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# One file in every backend package (its backend module, else its __init__), plus the test kit.
PROBED = [
    *sorted(
        str((pkg / "backend.py" if (pkg / "backend.py").exists() else pkg / "__init__.py").relative_to(ROOT))
        for pkg in (ROOT / "backends").glob("mediagen_*")
        if pkg.is_dir()
    ),
    "testkit/mediagen_testkit/replicate_server.py",
]
PROBE = '''

def _typecheck_probe(ctx: "mediagen.backend.RunContext") -> None:
    ctx.no_such_method()
'''


@pytest.mark.slow
def test_a_missing_method_on_a_mediagen_type_fails_mypy_in_every_package(tmp_path: Path) -> None:
    for folder in ("sdk", "backends", "testkit"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    if (ROOT / ".mypy_cache").is_dir():  # `make typecheck` ran first: only the probed files are checked afresh
        shutil.copytree(ROOT / ".mypy_cache", tmp_path / ".mypy_cache")
    for rel in PROBED:
        path = tmp_path / rel
        path.write_text(path.read_text() + "\nimport mediagen.backend  # noqa: E402\n" + PROBE)

    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / ".mypy_cache")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    flagged = set(re.findall(r'^(\S+\.py):\d+: error: "RunContext" has no attribute "no_such_method"', proc.stdout, re.M))
    assert len(PROBED) >= 8  # local, diffusers, transformers, replicate, openai, google, fal + the test kit
    assert flagged == set(PROBED), proc.stdout
