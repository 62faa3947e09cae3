"""The examples in docstrings run: a wrong `>>>` example misleads a reader as much as a wrong doc page."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def modules_with_examples() -> list[str]:
    names = set()
    for base in (ROOT / "sdk", ROOT / "backends", ROOT / "testkit"):
        for path in base.rglob("*.py"):
            # Only modules with an example that runs: one whose every example is skipped tests nothing.
            lines = path.read_text(encoding="utf-8").splitlines()
            if any(">>>" in line and "+SKIP" not in line for line in lines):
                parts = path.relative_to(base).with_suffix("").parts
                names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(names)


MODULES = modules_with_examples()


def test_the_examples_are_found() -> None:
    assert "mediagen._remote" in MODULES and "mediagen.results" in MODULES and len(MODULES) > 30


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    failed, attempted = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert attempted > 0, f"no docstring example of {name} ran"
    assert failed == 0, f"{failed} docstring example(s) in {name} failed (run: python -m doctest -v on it)"
