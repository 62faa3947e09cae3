"""Every script in examples/ runs, offline, and writes files that decode."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mediagen as mg

# Each example runs as its own process, as a user would run it.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def example_env(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    # The examples build tiny models under $MEDIAGEN_CACHE_DIR/tiny-models: share the suite's.
    cache = tmp_path_factory.mktemp("example-cache")
    (cache / "tiny-models").symlink_to(tiny_models_dir, target_is_directory=True)
    env = dict(os.environ, MEDIAGEN_CACHE_DIR=str(cache), HF_HUB_OFFLINE="1", MEDIAGEN_ALLOW_REMOTE="0")
    env.pop("REPLICATE_API_TOKEN", None)
    return env


def run(name: str, out: Path, env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "-o", str(out), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=out.parent,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def streams(path: Path) -> list[str]:
    """Stream lines as ffmpeg reports them (an independent reader of the container)."""
    import imageio_ffmpeg

    probe = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True
    )
    return re.findall(r"Stream #\S+: (Video|Audio)", probe.stderr)


def test_image_example(tmp_path: Path, example_env: dict[str, str]) -> None:
    from PIL import Image

    run("image.py", tmp_path / "out", example_env)
    for name in ("fox-0.png", "fox-1.png", "fox-painted.png"):
        with Image.open(tmp_path / "out" / name) as img:
            assert img.size == (32, 32)


def test_video_example(tmp_path: Path, example_env: dict[str, str]) -> None:
    import imageio.v3 as iio

    out = run("video.py", tmp_path / "out", example_env)
    assert "text-to-video 100%" in out
    assert iio.imread(tmp_path / "out" / "waves.mp4", index=None).shape[:3] == (9, 16, 16)
    assert iio.imread(tmp_path / "out" / "waves-i2v.gif", index=None).shape[0] == 4


def test_audio_example(tmp_path: Path, example_env: dict[str, str]) -> None:
    import soundfile as sf

    run("audio.py", tmp_path / "out", example_env)
    music, rate = sf.read(tmp_path / "out" / "piano.wav")
    assert abs(len(music) / rate - 1.0) < 0.05
    speech, _ = sf.read(tmp_path / "out" / "hello.flac")
    assert len(speech) > 0


def test_mesh_example(tmp_path: Path, example_env: dict[str, str]) -> None:
    import trimesh

    run("mesh.py", tmp_path / "out", example_env)
    glb = trimesh.load(tmp_path / "out" / "chair.glb", force="mesh")
    ply = trimesh.load(tmp_path / "out" / "from-image.ply", force="mesh")
    assert len(glb.faces) > 0 and len(ply.faces) > 0


@pytest.mark.parametrize("where", ["local", "hosted"])
def test_local_or_hosted_example(tmp_path: Path, example_env: dict[str, str], where: str) -> None:
    out = run("local_or_hosted.py", tmp_path / "out", example_env, "--where", where)
    provider = "diffusers" if where == "local" else "replicate"
    assert out.count(f"{provider}:") == 2
    for i in range(2):
        assert mg.Image(path=tmp_path / "out" / f"lighthouse-{where}-{i}.png").to_pil().size[0] > 0


def test_storyboard_example(tmp_path: Path, example_env: dict[str, str]) -> None:
    out = run("storyboard.py", tmp_path / "out", example_env)
    film = tmp_path / "out" / "storyboard.mp4"
    assert sorted(streams(film)) == ["Audio", "Video"]
    video = mg.Video(path=film)
    assert video.num_frames == 3 * 4  # three scenes of four frames
    assert "3 scenes" in out


def test_batch_example(tmp_path: Path, example_env: dict[str, str]) -> None:
    out = run("batch.py", tmp_path / "out", example_env)
    assert "first run: 5 done, 0 failed" in out
    assert "second run: 0 done, 5 skipped" in out
    assert sorted(p.name for p in (tmp_path / "out" / "out").iterdir()) == [
        "fox.png",
        "hare.png",
        "lynx.png",
        "manifest.jsonl",
        "owl.png",
        "wind.wav",
    ]


def test_mediagen_demo(tmp_path: Path, example_env: dict[str, str]) -> None:
    """`make demo`'s command: one decodable file per modality, plus a video with sound."""
    import soundfile as sf
    import trimesh
    from PIL import Image

    cli = Path(sys.executable).with_name("mediagen")
    proc = subprocess.run(
        [str(cli), "demo", "-o", str(tmp_path / "demo")], capture_output=True, text=True, env=example_env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "demo"
    for label in ("image", "video", "mesh", "audio", "speech", "video+audio"):
        assert f"{label}: " in proc.stdout
    assert "Loading weights" not in proc.stderr  # the libraries' own progress bars are silenced
    assert "[transformers]" not in proc.stderr and "torchvision" not in proc.stderr  # nor their chatter
    assert Image.open(out / "fox.png").size == (32, 32)
    assert mg.Video(path=out / "waves.mp4").num_frames == 9
    assert len(trimesh.load(out / "chair.glb", force="mesh").faces) > 0
    assert sf.info(str(out / "piano.wav")).duration == pytest.approx(1.0, abs=0.01)
    assert sf.info(str(out / "hello.wav")).frames > 0
    assert sorted(streams(out / "waves-with-sound.mp4")) == ["Audio", "Video"]
