"""`mg.mux`: a video with a soundtrack, checked by probing and decoding the MP4 with the bundled ffmpeg."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mediagen as mg

pytest.importorskip("imageio_ffmpeg")

from mediagen._mux import ffmpeg_exe

FPS = 8.0
FRAMES = 16  # 2 s


def clip() -> mg.Video:
    rng = np.random.default_rng(0)
    return mg.Video.from_frames(rng.integers(0, 256, (FRAMES, 32, 48, 3), dtype=np.uint8), fps=FPS)


def tone(seconds: float, rate: int, channels: int = 2) -> mg.Audio:
    t = np.arange(round(seconds * rate)) / rate
    return mg.Audio.from_samples(np.stack([0.5 * np.sin(2 * np.pi * 440 * t)] * channels).astype(np.float32), rate)


def streams(path: Path) -> list[str]:
    """The stream lines ffmpeg prints for a file (`ffmpeg -i` with no output exits 1; stderr lists them)."""
    probe = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True)
    return [line.strip() for line in probe.stderr.splitlines() if re.match(r"\s*Stream #", line)]


def decoded_audio(path: Path, rate: int) -> np.ndarray:
    """The soundtrack, decoded to mono float32 at `rate`."""
    out = subprocess.run(
        [
            ffmpeg_exe(),
            "-v",
            "error",
            "-i",
            str(path),
            "-map",
            "0:a:0",
            "-f",
            "f32le",
            "-ac",
            "1",
            "-ar",
            str(rate),
            "-",
        ],
        capture_output=True,
        check=True,
    )
    return np.frombuffer(out.stdout, dtype="<f4")


@pytest.mark.parametrize(("seconds", "rate"), [(1.0, 16000), (3.0, 44100), (2.0, 4000)])
def test_mux_has_one_video_and_one_audio_stream_of_the_video_length(seconds: float, rate: int, tmp_path: Path) -> None:
    muxed = mg.mux(clip(), tone(seconds, rate))
    path = muxed.save(tmp_path / "clip.mp4")
    found = streams(path)
    assert len(found) == 2, found
    assert sum("Video: h264" in s for s in found) == 1 and sum("Audio: aac" in s for s in found) == 1
    # Decoded, the picture keeps its frames and the sound lasts as long as they do.
    again = mg.Video(path.read_bytes())
    assert again.frames.shape == (FRAMES, 32, 48, 3) and again.fps == pytest.approx(FPS)
    out_rate = rate if rate != 4000 else 48000  # AAC has no 4 kHz: resampled
    assert muxed.metadata["audio"]["sample_rate"] == out_rate
    sound = decoded_audio(path, out_rate)
    assert abs(len(sound) / out_rate - FRAMES / FPS) <= 1 / FPS


def test_a_short_soundtrack_is_padded_with_silence(tmp_path: Path) -> None:
    path = mg.mux(clip(), tone(1.0, 16000)).save(tmp_path / "padded.mp4")
    sound = decoded_audio(path, 16000)
    assert np.sqrt(np.mean(sound[2000:14000] ** 2)) > 0.1  # the tone
    assert np.abs(sound[18000:]).max() < 1e-3  # then silence


def test_with_audio_and_a_webm_source(tmp_path: Path) -> None:
    webm = mg.Video(clip()._encode_as("video/webm"), media_type="video/webm")
    muxed = webm.with_audio(tone(2.0, 22050, channels=1))
    assert muxed.media_type == "video/mp4"
    assert len(streams(muxed.save(tmp_path / "from-webm.mp4"))) == 2
    assert muxed.frames.shape[0] == FRAMES


def test_mux_refuses_empty_audio() -> None:
    with pytest.raises(ValueError, match="no samples"):
        mg.mux(clip(), mg.Audio.from_samples(np.zeros((1, 0), dtype=np.float32), 16000))


@pytest.mark.slow
def test_mux_is_a_lazy_name_that_stays_a_function() -> None:
    code = (
        "import sys, mediagen\n"
        "assert 'mediagen._mux' not in sys.modules\n"
        "import mediagen._mux\n"  # importing the module first must not shadow the function
        "assert callable(mediagen.mux) and mediagen.mux.__module__ == 'mediagen'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_generated_video_with_generated_music(tiny_model: Any, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    musicgen = tiny_model("musicgen")
    async with mg.Client(config=mg.Config(), providers={"transformers": {"device": "cpu"}}) as client:
        video = (
            await client.video("a fox runs", frames=FRAMES, fps=FPS, width=32, height=32, model="test:fake")
        ).videos[0]
        music = await client.audio("calm piano", kind="music", duration_s=2.6, seed=1, model=f"transformers:{musicgen}")
    path = video.with_audio(music.audios[0]).save(tmp_path / "fox.mp4")
    found = streams(path)
    assert len(found) == 2 and "Audio: aac" in found[1] and "8000 Hz" in found[1]
    assert len(decoded_audio(path, 8000)) == round(FRAMES / FPS * 8000)


def test_concat_joins_clips_in_order_and_refuses_mixed_sizes() -> None:
    import numpy as np

    first = mg.Video.from_frames(np.full((3, 8, 8, 3), 10, dtype=np.uint8), fps=4)
    second = mg.Video.from_frames(np.full((2, 8, 8, 3), 200, dtype=np.uint8), fps=8)
    joined = mg.concat([first, second])
    assert joined.num_frames == 5 and joined.fps == 4
    assert joined.frames[:3].max() == 10 and joined.frames[3:].min() == 200
    # Encoded and decoded again, the clip boundary survives.
    again = mg.Video(joined.read())
    assert again.num_frames == 5
    with pytest.raises(ValueError, match="one size"):
        mg.concat([first, mg.Video.from_frames(np.zeros((1, 16, 8, 3), dtype=np.uint8))])
    with pytest.raises(ValueError, match="at least one"):
        mg.concat([])
