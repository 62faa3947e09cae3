"""Long work on a CPU is announced before it starts; short work and GPU work are not."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

import mediagen as mg
from mediagen_local.hints import slow_work_hint


def test_a_large_image_on_cpu_earns_a_hint() -> None:
    hint = slow_work_hint("cpu", size=(512, 512), steps=30)
    assert hint is not None and hint.startswith("512x512, 30 steps on CPU: expect several minutes")


@pytest.mark.parametrize(
    ("device", "size", "steps", "frames", "n"),
    [
        ("cuda:0", (1024, 1024), 50, None, 1),
        ("mps", (1024, 1024), 50, None, 1),
        ("cpu", (32, 32), 2, None, 1),
        ("cpu", (64, 64), 20, None, 4),
    ],
)
def test_no_hint_for_quick_work_or_an_accelerator(
    device: str, size: tuple[int, int], steps: int, frames: int | None, n: int
) -> None:
    assert slow_work_hint(device, size=size, steps=steps, frames=frames, n=n) is None


def test_video_frames_and_unknown_settings_count() -> None:
    video = slow_work_hint("cpu", size=(128, 128), steps=10, frames=49)
    assert video is not None and "49 frames" in video
    default = slow_work_hint("cpu", size=None, steps=None)
    assert default is not None and "default size" in default and "default steps" in default


def test_the_diffusers_backend_warns_before_running(
    tiny_model: Callable[[str], Path], caplog: pytest.LogCaptureFixture
) -> None:
    model = f"diffusers:{tiny_model('sd')}"
    with caplog.at_level(logging.WARNING, logger="mediagen"), mg.SyncClient() as client:
        client.image("a fox", model=model, width=32, height=32, steps=2, seed=1)
        assert not [r for r in caplog.records if "on CPU" in r.getMessage()]
        job = client.submit(mg.ImageRequest(prompt="a fox", width=512, height=512, steps=30), model=model)
        for event in job.events():
            if isinstance(event, mg.Progress):
                break  # the warning came first: the work has started, no need to finish it
        job.cancel()
    hints = [r.getMessage() for r in caplog.records if "on CPU" in r.getMessage()]
    assert len(hints) == 1 and "512x512, 30 steps on CPU" in hints[0]
