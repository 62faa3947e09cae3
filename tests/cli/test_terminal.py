"""What a person sees on a terminal: run the installed `mediagen` in a pseudo-terminal and read the screen.

The progress phases (queued → loading <model> → steps with an ETA → saving), one line per warning,
the paths as typed, exit 130 on Ctrl-C, and no third-party chatter from a real diffusers run.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

if sys.platform == "win32":  # pragma: no cover
    pytest.skip("pseudo-terminals are POSIX", allow_module_level=True)

CLI = Path(sys.executable).with_name("mediagen")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


class Screen:
    """A `mediagen` process whose stdin, stdout and stderr are one pseudo-terminal."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        if not CLI.exists():
            pytest.skip("the mediagen script is not installed next to this interpreter")
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [str(CLI), *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env={**env, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"},
        )
        os.close(slave)
        self.raw = b""

    def read_until(self, done: Callable[[str], bool], timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while not done(self.text) and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: the process closed the terminal
                    break
                if not chunk:
                    break
                self.raw += chunk
            elif self.proc.poll() is not None:
                break
        return self.text

    def finish(self, timeout: float = 300) -> tuple[int, str]:
        self.read_until(lambda _: False, timeout)
        code = self.proc.wait(timeout=30)
        os.close(self.master)
        return code, self.text

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw.decode("utf-8", "replace"))

    def lines(self) -> list[str]:
        """What is left on screen line by line (a carriage return starts the line over)."""
        return [part.rstrip() for line in self.text.split("\n") for part in line.split("\r") if part.strip()]


@pytest.fixture()
def slow_fake(tmp_path: Path) -> dict[str, str]:
    """The fake backend with 12 visible steps, so the display has something to follow."""
    config = Path(os.environ["MEDIAGEN_CONFIG"])
    config.write_text("[providers.test]\nsteps = 12\nstep_delay_s = 0.08\n")
    return dict(os.environ)


def test_phases_one_line_per_warning_and_the_paths(tmp_path: Path, slow_fake: dict[str, str]) -> None:
    screen = Screen(
        ["image", "a fox", "-m", "test:fake", "-n", "2", "--option", "sampler=euler", "-o", "shots/"],
        tmp_path,
        slow_fake,
    )
    code, text = screen.finish()
    assert code == 0, text
    # The phases, in order.
    at = [text.find(phase) for phase in ("loading fake", "generating", "saving")]
    assert -1 not in at and at == sorted(at), text
    assert re.search(r"\d+/12 · eta \d+:\d\d", text), text
    assert "None" not in text and str(tmp_path) not in text  # no `0/None`, no absolute paths
    # One line per warning, printed once.
    warnings = [line for line in screen.lines() if "unsupported: options" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: test:fake: unsupported: options"), text
    # The paths last, as typed.
    assert screen.lines()[-2:] == [os.path.join("shots", "image-0.png"), os.path.join("shots", "image-1.png")]
    assert (tmp_path / "shots" / "image-1.png").is_file()


def test_ctrl_c_exits_130_and_saves_nothing(tmp_path: Path) -> None:
    Path(os.environ["MEDIAGEN_CONFIG"]).write_text("[providers.test]\nsteps = 400\nstep_delay_s = 0.05\n")
    screen = Screen(["image", "a fox", "-m", "test:fake", "-o", "fox.png"], tmp_path, dict(os.environ))
    screen.read_until(lambda text: "generating" in text)
    screen.proc.send_signal(signal.SIGINT)
    code, text = screen.finish(timeout=60)
    assert code == 130, text
    assert "interrupted" in text and "Traceback" not in text
    assert not (tmp_path / "fox.png").exists()


def test_a_tiny_diffusers_run_prints_no_third_party_lines(tmp_path: Path, tiny_model: Callable[[str], Path]) -> None:
    model = f"diffusers:{tiny_model('sd')}"
    screen = Screen(
        ["image", "a fox", "-m", model, "--size", "32x32", "--steps", "3", "--seed", "1"], tmp_path, dict(os.environ)
    )
    code, text = screen.finish()
    assert code == 0, text
    assert "loading sd" in text and "saving" in text
    for noise in ("[transformers]", "[diffusers]", "torchvision", "Warning:", "warn(", "it/s]", "Loading"):
        assert noise not in text, f"{noise!r} on screen:\n{text}"
    assert screen.lines()[-1] == "image.png"
    assert [line for line in screen.lines() if line.startswith(("warning", "error"))] == []
