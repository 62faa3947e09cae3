"""Shared by the Ray tests: no Ray process a test started may outlive it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def _ray_processes() -> set[int]:
    """Pids of Ray's own daemons and workers on this machine (read from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"raylet" in cmdline or b"gcs_server" in cmdline or b"default_worker.py" in cmdline:
            found.add(int(entry.name))
    return found


@pytest.fixture
def no_ray_left_behind() -> Iterator[None]:
    before = _ray_processes()
    yield None
    # Ray's daemons exit shortly after shutdown; wait for them (bounded) rather than assert at once.
    for _ in range(300):
        left = _ray_processes() - before
        if not left:
            return
        time.sleep(0.1)
    pytest.fail(f"Ray processes left behind by the test: {sorted(left)}")
