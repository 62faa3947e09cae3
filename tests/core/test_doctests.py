"""The examples in docstrings run: a wrong `>>>` example misleads a reader as much as a wrong doc page."""

from __future__ import annotations

import doctest
import importlib
import inspect
from pathlib import Path
from typing import Any

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


def _written_in(obj: Any) -> str | None:
    """The file a function or class is written in, from its code (not from `__module__`)."""
    if inspect.isfunction(obj):
        functions = [obj]
    else:  # the methods written in its body (not ones a library such as pydantic attached)
        functions = [
            v for v in vars(obj).values() if inspect.isfunction(v) and v.__qualname__.startswith(f"{obj.__qualname__}.")
        ]
    files = {f.__code__.co_filename for f in functions}
    return files.pop() if len(files) == 1 else None


class _SourceFinder(doctest.DocTestFinder):
    """Finds a module's examples by the file they are written in, not by `__module__`.

    `mediagen` renames its public classes to `mediagen.X` when `mg.X` is first used, after which
    `doctest.testmod(mediagen.results)` sees none of them: how far the suite has run decided it.
    """

    def _from_module(self, module: Any, object: Any) -> bool:
        written = _written_in(object) if inspect.isfunction(object) or inspect.isclass(object) else None
        if written is None:
            return bool(super()._from_module(module, object))  # type: ignore[misc]
        return Path(written).resolve() == Path(module.__file__).resolve()


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    for test in _SourceFinder().find(module, name):
        runner.run(test)
    failed, attempted = runner.summarize(verbose=False)
    assert attempted > 0, f"no docstring example of {name} ran"
    assert failed == 0, f"{failed} docstring example(s) in {name} failed (run: python -m doctest -v on it)"
