"""The plugin guide's backend, copied out of docs/plugins.md, works through the client and the CLI.

Nothing here is written for the test: the code is the guide's, and it is registered the way the
guide says, through an entry point of an installed distribution.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mediagen as mg

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def guide_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)


@pytest.fixture
def installed_plugin(tmp_path: Path) -> Path:
    """A site directory holding my_backend.py and a dist-info declaring its entry point."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "my_backend.py").write_text(guide_blocks()[0])
    dist = site / "my_backend-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-backend\nVersion: 0.1\n")
    toml = re.search(r'```toml\n(\[project\.entry-points\."mediagen\.backends"\]\n.*?)```', GUIDE.read_text(), re.S)
    assert toml is not None, "the guide no longer shows the entry-point declaration"
    (dist / "entry_points.txt").write_text(toml.group(1).replace("project.entry-points.", "").replace('"', ""))
    return site


def test_guide_backend_through_the_client(installed_plugin: Path, tmp_path: Path) -> None:
    sys.path.insert(0, str(installed_plugin))
    try:
        namespace: dict[str, object] = {}
        exec(compile(guide_blocks()[1], "guide-test", "exec"), namespace)  # the guide's own test
        import asyncio

        asyncio.run(namespace["test_gradient"](tmp_path))  # type: ignore[operator]
        assert mg.Image(path=tmp_path / "g.png").size == (64, 64)
    finally:
        sys.path.remove(str(installed_plugin))
        sys.modules.pop("my_backend", None)


@pytest.mark.slow
def test_guide_backend_through_the_cli_by_entry_point(installed_plugin: Path, tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(installed_plugin))
    cli = Path(sys.executable).with_name("mediagen")
    proc = subprocess.run(
        [
            str(cli),
            "image",
            "sunset",
            "-m",
            "gradient:v1",
            "-n",
            "5",
            "--seed",
            "3",
            "--size",
            "64x32",
            "--negative",
            "clouds",
            "-o",
            str(tmp_path / "out") + "/",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["provider"] == "gradient" and out["seeds"] == [3, 4, 5, 6, 7]
    assert [w["feature"] for w in out["warnings"]] == ["negative_prompt"]
    assert [mg.Image(path=f).size for f in out["files"]] == [(64, 32)] * 5
    listed = subprocess.run([str(cli), "backends", "--json"], capture_output=True, text=True, env=env, timeout=60)
    rows = {row["provider"]: row for row in json.loads(listed.stdout)}
    assert rows["gradient"]["usable"] and rows["gradient"]["tasks"] == ["text-to-image"]
