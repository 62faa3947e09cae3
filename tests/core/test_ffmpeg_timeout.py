"""ffmpeg with a timeout (issue 12, finding 9): mux, concat and video encoding never hang forever."""

from __future__ import annotations

import numpy as np
import pytest

import mediagen as mg


def _clip() -> mg.Video:
    return mg.Video.from_frames(np.full((8, 16, 16, 3), 120, dtype=np.uint8), fps=8)


def _tone() -> mg.Audio:
    return mg.Audio.from_samples(0.3 * np.sin(np.linspace(0, 400, 8000)).astype(np.float32), 8000)


def test_mux_runs_ffmpeg_with_a_timeout() -> None:
    # No ffmpeg run starts, let alone muxes, in a millisecond: it is stopped and the error says so.
    with pytest.raises(mg.DeadlineExceededError, match=r"ffmpeg did not mux the soundtrack within 0\.001 s") as info:
        mg.mux(_clip(), _tone(), timeout_s=0.001)
    assert isinstance(info.value, mg.MediagenError) and not info.value.retryable
    muxed = mg.mux(_clip(), _tone(), timeout_s=120)  # with time to work, the same call succeeds
    assert muxed.num_frames == 8


def test_concat_runs_ffmpeg_with_a_timeout() -> None:
    with pytest.raises(mg.DeadlineExceededError, match="ffmpeg did not encode 16 frames"):
        mg.concat([_clip(), _clip()], timeout_s=0.001)
    joined = mg.concat([_clip(), _clip()], timeout_s=120)
    assert joined.num_frames == 16 and mg.Video(joined.read()).num_frames == 16


@pytest.mark.parametrize("bad", [0, -5, float("nan"), float("inf")])
def test_ffmpeg_timeout_must_be_finite_and_positive(bad: float) -> None:
    with pytest.raises(mg.InvalidRequestError, match="timeout_s"):
        mg.mux(_clip(), _tone(), timeout_s=bad)
    with pytest.raises(mg.InvalidRequestError, match="timeout_s"):
        mg.concat([_clip()], timeout_s=bad)


def test_ffmpeg_failure_is_a_mediagen_error() -> None:
    from mediagen._ffmpeg import run_ffmpeg

    with pytest.raises(mg.GenerationFailedError, match="ffmpeg could not probe"):
        run_ffmpeg(["-i", "/nonexistent/input.mp4", "-f", "null", "-"], what="probe", timeout_s=60)
