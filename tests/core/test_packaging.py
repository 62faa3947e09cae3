"""What `pip install .` ships: the core and the backends, never the test kit's servers or recipes."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_wheel_holds_the_core_and_backends_but_no_simulation(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("mediagen-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        testing_lines = sum(
            zf.read(n).count(b"\n") for n in names if n.startswith("mediagen/testing/") and n.endswith(".py")
        )
    packages = {n.split("/", 1)[0] for n in names if "/" in n and not n.split("/", 1)[0].endswith(".dist-info")}
    assert {"mediagen", "mediagen_local", "mediagen_diffusers", "mediagen_transformers", "mediagen_replicate", "mediagen_fal"} <= packages
    assert not any(p.startswith("mediagen_testkit") for p in packages), packages
    assert not any(("replicate_server" in n or "fal_server" in n or "tiny" in n or "fixtures" in n) for n in names), names
    assert testing_lines < 600
    # Every package carries its py.typed marker, so apps' type checkers see the real types.
    assert {p for p in packages if f"{p}/py.typed" in names} == packages
