"""The `mediagen` command: generation to files, --json, exit codes, and `mediagen backends`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import wave
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import PIL.Image
import pytest
import trimesh

import mediagen as mg
from mediagen.cli import main


@dataclass
class Ran:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def invoke(*args: str) -> Ran:
    """Run the command in this process, as the script would, capturing what it prints."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return Ran(code, out.getvalue(), err.getvalue())


# -- generating files ------------------------------------------------------------------------------


def test_image_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "fox.png"
    result = invoke("image", "a red fox", "-m", "test:fake", "--seed", "7", "--size", "48x32", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    with PIL.Image.open(out) as img:
        assert img.format == "PNG" and img.size == (48, 32)


def test_image_square_size_and_other_format(tmp_path: Path) -> None:
    out = tmp_path / "fox.jpg"
    assert invoke("image", "fox", "-m", "test:fake", "--size", "40", "-o", str(out)).exit_code == 0
    with PIL.Image.open(out) as img:
        assert img.format == "JPEG" and img.size == (40, 40)


def test_numbered_files_for_n(tmp_path: Path) -> None:
    result = invoke("image", "fox", "-m", "test:fake", "-n", "3", "--seed", "1", "-o", str(tmp_path / "fox.png"))
    assert result.exit_code == 0, result.output
    paths = [tmp_path / f"fox-{i}.png" for i in range(3)]
    assert result.stdout.split() == [str(p) for p in paths]
    pixels = []
    for path in paths:
        with PIL.Image.open(path) as img:
            pixels.append(img.getpixel((0, 0)))
    assert len(set(pixels)) == 3  # seeds 1, 2, 3 differ


def test_directory_with_trailing_slash(tmp_path: Path) -> None:
    result = invoke("image", "fox", "-m", "test:fake", "-n", "2", "-o", f"{tmp_path}/shots/")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "shots").iterdir()) == ["image-0.png", "image-1.png"]
    result = invoke("audio", "piano", "-m", "test:fake", "--duration", "0.25", "-o", f"{tmp_path}/snd/")
    assert result.exit_code == 0, result.output
    with wave.open(str(tmp_path / "snd" / "audio.wav")) as w:
        assert w.getframerate() == 16_000 and w.getnframes() == 4000


def test_output_without_a_suffix_is_a_directory(tmp_path: Path) -> None:
    result = invoke("image", "fox", "-m", "test:fake", "-o", str(tmp_path / "o1"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o1").is_dir() and (tmp_path / "o1" / "image.png").is_file()
    assert result.stdout.strip() == str(tmp_path / "o1" / "image.png")


def test_paths_are_printed_as_given_not_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert invoke("image", "fox", "-m", "test:fake").stdout.strip() == "image.png"
    assert invoke("image", "fox", "-m", "test:fake", "-o", "shots/").stdout.strip() == os.path.join(
        "shots", "image.png"
    )


def test_an_existing_file_is_never_replaced_silently(tmp_path: Path) -> None:
    out = tmp_path / "fox.png"
    assert invoke("image", "fox", "-m", "test:fake", "--seed", "1", "-o", str(out)).exit_code == 0
    first = out.read_bytes()
    again = invoke("image", "fox", "-m", "test:fake", "--seed", "2", "-o", str(out))
    assert again.exit_code == 2
    assert "already exists" in again.stderr and "--overwrite" in again.stderr
    assert out.read_bytes() == first
    replaced = invoke("image", "fox", "-m", "test:fake", "--seed", "2", "-o", str(out), "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert out.read_bytes() != first


def test_a_derived_name_moves_on_to_a_free_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runs = [invoke("image", "fox", "-m", "test:fake", "-o", "shots") for _ in range(2)]
    runs += [invoke("image", "fox", "-m", "test:fake") for _ in range(2)]
    assert [r.exit_code for r in runs] == [0, 0, 0, 0], runs[-1].output
    assert [r.stdout.strip() for r in runs] == [
        os.path.join("shots", "image.png"),
        os.path.join("shots", "image-1.png"),
        "image.png",
        "image-1.png",
    ]


def test_numbered_outputs_are_checked_too(tmp_path: Path) -> None:
    (tmp_path / "fox-1.png").write_bytes(b"mine")
    result = invoke("image", "fox", "-m", "test:fake", "-n", "2", "-o", str(tmp_path / "fox.png"), "--json")
    assert result.exit_code == 2
    error = json.loads(result.stdout)
    assert error["error"] == "OutputExistsError" and "fox-1.png" in error["message"]
    assert (tmp_path / "fox-1.png").read_bytes() == b"mine" and not (tmp_path / "fox-0.png").exists()


def test_default_output_in_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert invoke("mesh", "a chair", "-m", "test:fake").exit_code == 0
    assert len(trimesh.load(tmp_path / "mesh.glb", force="mesh").faces) == 4


def test_video(tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    result = invoke(
        "video", "waves", "-m", "test:fake", "--frames", "4", "--fps", "8", "--size", "32x24", "-o", str(out)
    )
    assert result.exit_code == 0, result.output
    frames = iio.imread(out, index=None)
    assert frames.shape[:3] == (4, 24, 32)


def test_video_as_gif(tmp_path: Path) -> None:
    out = tmp_path / "clip.gif"
    assert invoke("video", "waves", "-m", "test:fake", "--frames", "3", "-o", str(out)).exit_code == 0
    assert iio.imread(out, index=None).shape[0] == 3


def test_audio(tmp_path: Path) -> None:
    out = tmp_path / "speech.wav"
    result = invoke(
        "audio", "hello there", "-m", "test:fake", "--kind", "speech", "--sample-rate", "8000", "-o", str(out)
    )
    assert result.exit_code == 0, result.output
    with wave.open(str(out)) as w:
        assert w.getframerate() == 8000 and w.getnframes() > 0


@pytest.mark.parametrize("fmt", ["glb", "obj", "ply"])
def test_mesh_formats(tmp_path: Path, fmt: str) -> None:
    result = invoke("mesh", "a chair", "-m", "test:fake", "--format", fmt, "-o", f"{tmp_path}/")
    assert result.exit_code == 0, result.output
    path = tmp_path / f"mesh.{fmt}"
    assert len(trimesh.load(path, force="mesh").vertices) == 4


def test_json_output(tmp_path: Path) -> None:
    result = invoke(
        "image", "fox", "-m", "test:fake", "-n", "2", "--seed", "5", "-o", str(tmp_path / "f.png"), "--json"
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)  # exactly one JSON object on stdout
    assert out["provider"] == "test" and out["model"] == "fake"
    assert out["seeds"] == [5, 6]
    assert out["files"] == [str(tmp_path / "f-0.png"), str(tmp_path / "f-1.png")]
    assert all(Path(f).is_file() for f in out["files"])
    assert out["usage"]["images"] == 2
    assert out["timings"]["total_s"] > 0
    assert out["warnings"] == []


def test_warnings_reach_the_user(tmp_path: Path) -> None:
    result = invoke("image", "fox", "-m", "test:fake", "--option", "sampler=euler", "-o", str(tmp_path / "a.png"))
    assert result.exit_code == 0
    assert "options" in result.stderr and "warning" in result.stderr
    result = invoke(
        "image", "fox", "-m", "test:fake", "--option", "sampler=euler", "-o", str(tmp_path / "b.png"), "--json"
    )
    assert json.loads(result.stdout)["warnings"][0]["feature"] == "options"


def test_strict_flag_fails_as_an_unsupported_request(tmp_path: Path) -> None:
    result = invoke("image", "fox", "-m", "test:fake", "--option", "a=1", "--strict", "-o", str(tmp_path / "a.png"))
    assert result.exit_code == 2  # unsupported requests are bad input, like invalid ones
    assert "UnsupportedRequestError" in result.stderr


def test_default_model_from_config(tmp_path: Path) -> None:
    Path(os.environ["MEDIAGEN_CONFIG"]).write_text('[defaults]\nimage = "test:from-config"\n')
    result = invoke("image", "fox", "-o", str(tmp_path / "a.png"), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model"] == "from-config"


# -- failures --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["image", "fox", "-m", "test:fake", "--size", "513x512"], "multiple of 8"),
        (["image", "fox", "-m", "test:fake", "-n", "0"], "n:"),
        (["image", "fox", "-m", "test:fake", "--aspect-ratio", "wide"], "aspect_ratio"),
        (["audio", "piano", "-m", "test:fake", "--kind", "noise"], "kind"),
        (["image", "fox", "-m", "nocolon"], "provider:model"),
        (["image", "fox", "-m", "tset:fake"], "Did you mean 'test'"),
        (["image", "fox"], "no model given"),
        (["image", "fox", "-m", "test:fake", "--image", "/no/such/file.png"], "no such file"),
    ],
)
def test_bad_input_exits_2_with_a_readable_message(tmp_path: Path, args: list[str], says: str) -> None:
    result = invoke(*args, "-o", str(tmp_path / "x.png"))
    assert result.exit_code == 2
    assert says in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("size", ["abc", "12xq"])
def test_bad_size_is_a_usage_error(size: str) -> None:
    result = invoke("image", "fox", "-m", "test:fake", "--size", size)
    assert result.exit_code == 2
    assert "512x512" in result.output


def test_bad_input_with_json_prints_the_error_as_json() -> None:
    result = invoke("image", "fox", "-m", "test:fake", "--size", "513", "--json")
    assert result.exit_code == 2
    out = json.loads(result.stdout)
    assert out["error"] == "InvalidRequestError" and "multiple of 8" in out["message"]


def test_backend_failure_exits_1(tmp_path: Path) -> None:
    class Failing(mg.Backend):
        provider = "failing"

        async def run(self, request: mg.Request, model: str, ctx: mg.RunContext) -> mg.Result:
            raise mg.ProviderError("the provider is down", status=503, provider="failing")

    mg.register_backend("failing", Failing)
    result = invoke("image", "fox", "-m", "failing:m", "-o", str(tmp_path / "x.png"))
    assert result.exit_code == 1
    assert "ProviderError" in result.stderr and "the provider is down" in result.stderr
    assert not (tmp_path / "x.png").exists()
    result = invoke("image", "fox", "-m", "failing:m", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"] == "ProviderError"


def test_deadline_exits_1(tmp_path: Path) -> None:
    Path(os.environ["MEDIAGEN_CONFIG"]).write_text("[providers.test]\nsteps = 50\nstep_delay_s = 0.02\n")
    result = invoke("image", "fox", "-m", "test:fake", "--timeout", "0.05", "-o", str(tmp_path / "x.png"))
    assert result.exit_code == 1
    assert "DeadlineExceededError" in result.stderr


def test_missing_extra_exits_1() -> None:
    mg.register_backend("broken", "mediagen_no_such_module_anywhere:B")
    result = invoke("image", "fox", "-m", "broken:m")
    assert result.exit_code == 1
    assert "the plugin providing 'broken:'" in " ".join(result.stderr.split())


# -- backends --------------------------------------------------------------------------------------


def test_backends_lists_providers() -> None:
    result = invoke("backends")
    assert result.exit_code == 0, result.output
    for name in ("test", "diffusers", "transformers", "replicate"):
        assert name in result.stdout


def test_backends_json() -> None:
    mg.register_backend("broken", "mediagen_no_such_module_anywhere:B")
    result = invoke("backends", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["provider"]: row for row in json.loads(result.stdout)}
    assert {"test", "diffusers", "transformers", "replicate", "broken"} <= set(rows)
    assert rows["test"]["usable"] is True and "text-to-image" in rows["test"]["tasks"]
    assert rows["broken"]["usable"] is False
    assert "the plugin providing 'broken:'" in rows["broken"]["reason"]
    for row in rows.values():
        assert set(row) >= {"provider", "usable", "tasks", "reason"}


# -- the installed script --------------------------------------------------------------------------


@pytest.mark.slow
def test_the_installed_script(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("mediagen")
    if not script.exists():
        pytest.skip("the mediagen script is not installed next to this interpreter")
    out = tmp_path / "fox.webp"
    proc = subprocess.run(
        [str(script), "image", "a fox", "-m", "test:fake", "--seed", "2", "-o", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MEDIAGEN_ALLOW_REMOTE": "0"},
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["files"] == [str(out)]
    with PIL.Image.open(out) as img:
        assert img.format == "WEBP"
    bad = subprocess.run(
        [str(script), "image", "a fox", "-m", "test:fake", "--size", "100x7"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "multiple of 8" in bad.stderr
