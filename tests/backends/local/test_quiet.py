"""Third-party lines that tell a user nothing are filtered where they are made; everything else still shows.

The libraries warn once per process, so each mode runs in a fresh interpreter: without mediagen's
filters (the control: the lines are there), with them, and with the `mediagen` logger at DEBUG
(`-vv`: everything shows again).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("transformers")

SCRIPT = """
import sys, types

# tqdm.autonotebook decides it runs in Jupyter from these (ipywidgets is not installed here).
sys.modules["ipykernel.zmqshell"] = types.ModuleType("ipykernel.zmqshell")
ipython = types.ModuleType("IPython")
ipython.get_ipython = lambda: type("ZMQInteractiveShell", (), {{}})()
sys.modules["IPython"] = ipython

{setup}
import tqdm.auto
import transformers
from transformers import AutoConfig

transformers.CLIPImageProcessor  # no torchvision: the PIL fallback, announced
AutoConfig.from_pretrained({musicgen!r})  # MusicGen: pad/bos ids at vocab_size, by design
AutoConfig.from_pretrained({bad!r})  # an id past that convention: a real problem
"""

MODES = {
    "control": "",
    "quiet": "import mediagen_local",
    "verbose": "import logging, mediagen_local\nlogging.getLogger('mediagen').setLevel(logging.DEBUG)",
}


@pytest.fixture(scope="module")
def screens(tiny_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    musicgen = tiny_model("musicgen")
    bad = tmp_path_factory.mktemp("bad-musicgen")
    config = json.loads((musicgen / "config.json").read_text())
    config["decoder"]["pad_token_id"] = 99
    (bad / "config.json").write_text(json.dumps(config))
    out = {}
    for mode, setup in MODES.items():
        code = SCRIPT.format(setup=setup, musicgen=str(musicgen), bad=str(bad))
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        out[mode] = proc.stderr
    return out


def has_torchvision() -> bool:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return False
    return True


def test_torchvision_fallback_lines_are_filtered(screens: dict[str, str]) -> None:
    if has_torchvision():  # pragma: no cover - with torchvision there is no fallback to announce
        pytest.skip("torchvision is installed")
    assert "requires torchvision" in screens["control"]
    assert "requires torchvision" not in screens["quiet"]
    assert "requires torchvision" in screens["verbose"]


def test_musicgen_token_ids_at_vocab_size_are_filtered_and_others_are_not(screens: dict[str, str]) -> None:
    assert "bos_token_id must be" in screens["control"]
    quiet = screens["quiet"]
    assert "bos_token_id" not in quiet and "got 64" not in quiet
    assert "pad_token_id must be" in quiet and "got 99" in quiet  # not MusicGen's convention: still shown
    assert "bos_token_id must be" in screens["verbose"]


def test_tqdm_iprogress_warning_in_jupyter_is_filtered(screens: dict[str, str]) -> None:
    assert "IProgress not found" in screens["control"]
    assert "IProgress" not in screens["quiet"]


def test_nothing_else_is_said_when_quiet(screens: dict[str, str]) -> None:
    lines = [line for line in screens["quiet"].splitlines() if line.strip()]
    assert lines and all("pad_token_id" in line and "got 99" in line for line in lines), screens["quiet"]
