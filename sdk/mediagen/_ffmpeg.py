"""Running the ffmpeg binary that `imageio-ffmpeg` ships: always with a timeout, errors in the tree.

Every ffmpeg run mediagen starts (mux, concat, video encoding, the provenance remux) goes through
`run_ffmpeg`, which kills ffmpeg when it takes longer than its timeout and raises
`DeadlineExceededError`; a failed run raises `GenerationFailedError` with ffmpeg's last lines.
"""

from __future__ import annotations

import math
import subprocess
from typing import TYPE_CHECKING, Any

from ._config import DEFAULT_FFMPEG_TIMEOUT_S
from .errors import DeadlineExceededError, GenerationFailedError, InvalidRequestError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["ffmpeg_exe", "run_ffmpeg", "check_timeout", "encode_video", "pad_even"]


def ffmpeg_exe() -> str:
    """The path of the ffmpeg binary bundled with `imageio-ffmpeg`.

    Raises:
        ImportError: `imageio-ffmpeg` is not installed (the message names the extra).
    """
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - depends on extras
        raise ImportError("this needs the bundled ffmpeg: pip install 'mediagen[video]'") from exc
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def check_timeout(timeout_s: float) -> float:
    """`timeout_s` as a float, if it is a finite number of seconds above zero.

    Raises:
        InvalidRequestError: It is not.
    """
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not math.isfinite(timeout_s):
        raise InvalidRequestError(f"timeout_s must be a finite number of seconds, got {timeout_s!r}")
    if timeout_s <= 0:
        raise InvalidRequestError(f"timeout_s must be above zero, got {timeout_s!r}")
    return float(timeout_s)


def run_ffmpeg(
    args: list[str], *, what: str, timeout_s: float = DEFAULT_FFMPEG_TIMEOUT_S, stdin: bytes | None = None
) -> bytes:
    """Run ffmpeg with `args` (the binary is prepended), killed past `timeout_s`.

    Args:
        args: ffmpeg's arguments.
        what: What the run does, for error messages ("mux the soundtrack").
        timeout_s: Seconds it may take.
        stdin: Bytes fed to its standard input (raw frames).

    Returns:
        What ffmpeg wrote to its standard output.

    Raises:
        DeadlineExceededError: It ran past `timeout_s` (it was killed).
        GenerationFailedError: It exited with an error (its last lines are in the message).
        InvalidRequestError: `timeout_s` is not a finite number above zero.
    """
    seconds = check_timeout(timeout_s)
    # `-nostdin` unless frames come that way: ffmpeg must never wait on the caller's terminal.
    command = [ffmpeg_exe(), "-hide_banner", "-y", *([] if stdin is not None else ["-nostdin"]), *args]
    try:
        done = subprocess.run(command, input=stdin, capture_output=True, timeout=seconds, check=False)
    except subprocess.TimeoutExpired:
        # subprocess.run has killed and reaped ffmpeg by now.
        raise DeadlineExceededError(
            f"ffmpeg did not {what} within {seconds:g} s and was stopped (pass a larger timeout_s)",
            retryable=False,
        ) from None
    if done.returncode != 0:
        tail = "\n".join(done.stderr.decode(errors="replace").strip().splitlines()[-8:])
        raise GenerationFailedError(f"ffmpeg could not {what} (exit {done.returncode}):\n{tail}", retryable=False)
    return done.stdout


# -- encoding frames (the media layer: artifacts and mux both use it) ----------------------------


def encode_video(
    frames: np.ndarray[Any, Any], fps: float, media_type: str, *, timeout_s: float = DEFAULT_FFMPEG_TIMEOUT_S
) -> bytes:
    """Encode frames: GIF through Pillow; MP4 (H.264) and WebM (VP9) through ffmpeg, under `timeout_s`."""
    if media_type == "image/gif":
        try:
            import imageio.v3 as iio
        except ImportError as exc:  # pragma: no cover - depends on extras
            raise ImportError("encoding video needs: pip install 'mediagen[video]'") from exc
        return bytes(iio.imwrite("<bytes>", frames, extension=".gif", duration=1000.0 / fps, loop=0))
    import tempfile
    from fractions import Fraction

    import numpy as np

    from ._media import suffix_for_media_type

    ext = suffix_for_media_type(media_type) or ".mp4"
    # yuv420p needs even sizes; pad (never resize) so pixels keep their positions.
    frames = np.ascontiguousarray(pad_even(frames[..., :3]).astype(np.uint8))
    count, height, width = frames.shape[:3]
    # The same settings imageio's writer used (quality 5 is CRF 25 for H.264), fed raw frames on stdin.
    codec = ["-vcodec", "libvpx-vp9", "-qscale:v", "16"] if ext == ".webm" else ["-vcodec", "libx264", "-crf", "25"]
    with tempfile.TemporaryDirectory(prefix="mediagen-encode-") as scratch:
        out = f"{scratch}/video{ext}"
        run_ffmpeg(
            [
                "-f",
                "rawvideo",
                "-vcodec",
                "rawvideo",
                "-s",
                f"{width}x{height}",
                "-pix_fmt",
                "rgb24",
                "-r",
                str(Fraction(fps).limit_denominator()),
                "-i",
                "-",
                "-an",
                *codec,
                "-pix_fmt",
                "yuv420p",
                "-v",
                "warning",
                out,
            ],
            what=f"encode {count} frames as {ext[1:].upper()}",
            timeout_s=timeout_s,
            stdin=frames.tobytes(),
        )
        with open(out, "rb") as fh:
            return fh.read()


def pad_even(frames: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Frames padded (never resized) to even sides, as yuv420p needs."""
    import numpy as np

    h, w = frames.shape[1:3]
    ph, pw = h % 2, w % 2
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    return frames
