"""Mux and concat: a soundtrack under a video (`mediagen.mux`), clips end to end (`mediagen.concat`).

`mux(video, audio)` returns an MP4 whose audio lasts exactly as long as its picture: a longer
soundtrack is cut, a shorter one is padded with silence. The work is done by the ffmpeg binary that
`imageio-ffmpeg` ships (no system ffmpeg needed), in a temporary directory that is removed after.
Every ffmpeg run has a timeout (`timeout_s`, 600 s by default): past it ffmpeg is killed and
`DeadlineExceededError` is raised.

Examples:
    >>> import mediagen as mg
    >>> clip = mg.mux(video_result.artifacts[0], audio_result.artifacts[0])  # doctest: +SKIP
    >>> clip.save("clip.mp4")  # doctest: +SKIP
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._config import DEFAULT_FFMPEG_TIMEOUT_S
from ._ffmpeg import check_timeout, encode_video, ffmpeg_exe, run_ffmpeg

if TYPE_CHECKING:
    # Only for annotations: `Video.with_audio` calls `mux`, so a runtime import would close a circle.
    # The functions build their results with the class of the clip they are given.
    import numpy as np

    from .artifacts import Audio, Video

__all__ = ["mux", "concat", "ffmpeg_exe"]

# Rates the AAC encoder accepts; anything else (tiny test models make 4 kHz) is resampled to 48 kHz.
_AAC_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000})


def mux(
    video: Video, audio: Audio, *, audio_bitrate: str = "192k", timeout_s: float = DEFAULT_FFMPEG_TIMEOUT_S
) -> Video:
    """Return `video` with `audio` as its soundtrack, trimmed or padded to the video's length.

    The picture is copied as is when `video` is already an MP4 (any soundtrack it had is replaced);
    a WebM or GIF is re-encoded to H.264 first. The sound is encoded as AAC, at the audio's own
    sample rate when AAC supports it, else at 48 kHz.

    Args:
        video: The picture.
        audio: The soundtrack, any length.
        audio_bitrate: AAC bitrate, as ffmpeg spells it (`"128k"`, `"192k"` ...).
        timeout_s: Seconds each ffmpeg run may take before it is killed.

    Returns:
        An MP4 `Video` with one video and one audio stream; `frames` and `fps` still decode.

    Raises:
        ValueError: The video has no frames or the audio no samples.
        GenerationFailedError: ffmpeg failed (its last lines of output are in the message).
        DeadlineExceededError: ffmpeg ran past `timeout_s` and was stopped.

    Examples:
        >>> frames = np.zeros((16, 32, 32, 3), dtype="uint8")  # doctest: +SKIP
        >>> tone = np.sin(np.linspace(0, 2000, 16000)).astype("float32")  # doctest: +SKIP
        >>> clip = mux(Video.from_frames(frames, fps=8), Audio.from_samples(tone, 16000))  # doctest: +SKIP
        >>> clip.save("tone.mp4")  # doctest: +SKIP
    """
    # 1. Measure the picture: its length decides the soundtrack's.
    seconds = check_timeout(timeout_s)
    if video.num_frames == 0:
        raise ValueError("the video has no frames to put a soundtrack under")
    if audio.samples.size == 0:
        raise ValueError("the audio has no samples")
    duration_s = video.num_frames / video.fps
    rate = audio.sample_rate if audio.sample_rate in _AAC_RATES else 48000

    with tempfile.TemporaryDirectory(prefix="mediagen-mux-") as scratch:
        # 2. Write both inputs: the video as MP4 (copied later, not re-encoded), the audio as WAV.
        work = Path(scratch)
        picture = work / "picture.mp4"
        if video.media_type == "video/mp4":
            picture.write_bytes(video.read())
        else:
            picture.write_bytes(_encode(video.frames, video.fps, seconds))
        sound = work / "sound.wav"
        sound.write_bytes(audio._encode_as("audio/wav"))
        out = work / "muxed.mp4"

        # 3. Mux: `apad` makes the sound endless and `-t` cuts both streams at the picture's end.
        command = [
            "-i",
            str(picture),
            "-i",
            str(sound),
            "-map",
            "0:v:0",
            "-map",
            "1:a:0",
            "-c:v",
            "copy",
            "-af",
            "apad",
            "-c:a",
            "aac",
            "-b:a",
            audio_bitrate,
            "-ar",
            str(rate),
            "-t",
            f"{duration_s:.6f}",
            "-movflags",
            "+faststart",
            str(out),
        ]
        run_ffmpeg(command, what="mux the soundtrack", timeout_s=seconds)
        data = out.read_bytes()

    # 4. Wrap the bytes; `frames` decodes them again (the picture stream, the sound ignored).
    metadata = {**video.metadata, "audio": {**audio.metadata, "sample_rate": rate, "channels": audio.channels}}
    return type(video)(data, media_type="video/mp4", fps=video.fps, metadata=metadata)


def concat(videos: list[Video], *, fps: float | None = None, timeout_s: float = DEFAULT_FFMPEG_TIMEOUT_S) -> Video:
    """Join clips end to end into one video (silent; `mux` a soundtrack afterwards).

    Clips keep every frame; the result plays at `fps`, else at the first clip's rate. Clips of
    another size are refused rather than resized, so no clip is silently distorted.

    Args:
        videos: The clips, in order.
        fps: Frames per second of the result.
        timeout_s: Seconds the ffmpeg run that encodes the result may take before it is killed.

    Returns:
        A `Video` holding all frames, encoded as an MP4.

    Raises:
        ValueError: No clips, or clips of different sizes.
        DeadlineExceededError: ffmpeg ran past `timeout_s` and was stopped.
    """
    import numpy as np

    if not videos:
        raise ValueError("concat needs at least one clip")
    frames = [v.frames for v in videos]
    size = frames[0].shape[1:3]
    for index, clip in enumerate(frames[1:], start=1):
        if clip.shape[1:3] != size:
            raise ValueError(
                f"clip {index} is {clip.shape[2]}x{clip.shape[1]} but clip 0 is {size[1]}x{size[0]}; "
                "generate every scene at one size"
            )
    seconds = check_timeout(timeout_s)
    cls = type(videos[0])
    joined = cls.from_frames(np.concatenate(frames), fps=fps or videos[0].fps)
    # Encoded here, under the timeout, rather than later on save; the exact frames stay in memory.
    encoded = cls(_encode(joined.frames, joined.fps, seconds), media_type="video/mp4", fps=joined.fps)
    encoded._frames = joined.frames
    return encoded


def _encode(frames: np.ndarray[Any, Any], fps: float, timeout_s: float) -> bytes:
    return encode_video(frames, fps, "video/mp4", timeout_s=timeout_s)
