"""Telling the user up front when local work will be slow (a large image on a CPU runs for minutes).

A 512x512, 30-step Stable Diffusion image takes seconds on a GPU and a quarter of an hour on a
laptop CPU; without a word the command looks hung. The hint is one log line before the work
starts, from the size of the work and the device, not from a measurement.
"""

from __future__ import annotations

__all__ = ["CPU_WORK_HINT", "slow_work_hint"]

CPU_WORK_HINT = 256 * 256 * 20
"""Pixel-steps (width x height x steps x frames x outputs) from which CPU work earns a warning."""

_DEFAULT_STEPS = 30
_DEFAULT_SIDE = 512


def slow_work_hint(
    device: str,
    *,
    size: tuple[int, int] | None,
    steps: int | None,
    frames: int | None = None,
    n: int = 1,
) -> str | None:
    """The warning to show before running this work on `device`, or None when it will be quick enough.

    Args:
        device: Where it runs (`"cpu"`, `"cuda:0"`, `"mps"`); only the CPU gets hints.
        size: Width and height, when known (else the model's default, taken as 512x512).
        steps: Denoising steps, when known (else the pipeline's default, taken as 30).
        frames: Frames per output, for video.
        n: Outputs.

    Examples:
        >>> slow_work_hint("cpu", size=(512, 512), steps=30)
        '512x512, 30 steps on CPU: expect several minutes (a GPU takes seconds; smaller --size or fewer --steps go faster)'
        >>> slow_work_hint("cuda:0", size=(512, 512), steps=30) is None
        True
    """
    if device.split(":", 1)[0] != "cpu":
        return None
    width, height = size or (_DEFAULT_SIDE, _DEFAULT_SIDE)
    work = width * height * (steps or _DEFAULT_STEPS) * max(1, frames or 1) * max(1, n)
    if work < CPU_WORK_HINT:
        return None
    what = f"{width}x{height}" if size else "the model's default size"
    if frames and frames > 1:
        what += f", {frames} frames"
    if n > 1:
        what += f", {n} outputs"
    what += f", {steps} steps" if steps else ", its default steps"
    return f"{what} on CPU: expect several minutes (a GPU takes seconds; smaller --size or fewer --steps go faster)"
