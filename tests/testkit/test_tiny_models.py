"""The tiny random-weight models of `mediagen_testkit.tiny`: built in code, reloaded by the real loaders.

Each test loads a directory written by a builder with the loader an application would use
(`DiffusionPipeline`/`AutoPipeline*.from_pretrained`, transformers `from_pretrained`/`pipeline`), runs
2 inference steps on the CPU and checks the output shapes.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import threading
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from mediagen_testkit import tiny, tiny_recipes  # noqa: E402


@pytest.fixture(scope="session")
def tiny_models(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    """Every tiny model, built once per test session (a second or two on a CPU)."""
    try:
        # Share the suite-wide directory when conftest provides one, so models are built once per run.
        root = pathlib.Path(request.getfixturevalue("tiny_models_dir"))
    except pytest.FixtureLookupError:
        root = tmp_path_factory.mktemp("tiny-models")
    return tiny.ensure_tiny_models(root)


def _generator(seed: int = 0) -> Any:
    return torch.Generator().manual_seed(seed)


def _quiet(pipe: Any) -> Any:
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _rgb(size: int, seed: int = 0) -> Any:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


# ------------------------------------------------------------------------------------------------
# The module itself
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_module_imports_without_torch() -> None:
    code = (
        "import sys, mediagen_testkit.tiny\n"
        "heavy = {'torch', 'diffusers', 'transformers'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_names_cover_every_model(tiny_models: dict[str, pathlib.Path]) -> None:
    assert list(tiny_models) == list(tiny.TINY_MODEL_NAMES)
    for name, path in tiny_models.items():
        assert path.is_dir(), name
        assert any((path / marker).is_file() for marker in ("model_index.json", "config.json")) or name == "lora"
    assert (tiny_models["lora"] / "pytorch_lora_weights.safetensors").is_file()
    # No temporary build directories are left behind.
    assert not [p for p in tiny_models["sd"].parent.iterdir() if p.name.endswith(".tmp")]


def test_unknown_name_is_a_key_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(KeyError, match="unknown tiny model"):
        tiny.ensure_tiny_model("no-such-model", tmp_path)


def test_builders_are_idempotent_and_deterministic(tmp_path: pathlib.Path) -> None:
    first = tiny.build_vits(tmp_path / "a" / "vits")
    weights = first / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert tiny.build_vits(first) == first
    assert weights.stat().st_mtime_ns == stamp  # the existing model was not rewritten
    second = tiny.build_vits(tmp_path / "b" / "vits")
    assert (second / "model.safetensors").read_bytes() == weights.read_bytes()


def test_builder_refuses_to_overwrite_a_foreign_directory(tmp_path: pathlib.Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        tiny.build_vits(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_builder_accepts_an_existing_empty_directory(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "empty"
    target.mkdir()
    assert (tiny.build_vits(target) / "config.json").is_file()


def test_losing_a_build_race_keeps_the_winner(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "race" / "model"

    def write(out: pathlib.Path) -> None:
        # Another process completes the same model while this one is still writing.
        target.mkdir()
        (target / "config.json").write_text('{"winner": true}')
        (out / "config.json").write_text('{"winner": false}')

    assert tiny_recipes._build_atomically(target, "config.json", write) == target
    assert (target / "config.json").read_text() == '{"winner": true}'
    assert [p.name for p in target.parent.iterdir()] == ["model"]  # the loser's temp dir is gone


def test_concurrent_ensure_builds_once(tmp_path: pathlib.Path) -> None:
    results: list[pathlib.Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(tiny.ensure_tiny_model("vits", tmp_path))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(set(results)) == 1
    assert (results[0] / "config.json").is_file()
    leftovers = [p.name for p in results[0].parent.iterdir() if not p.name.endswith(".lock")]
    assert leftovers == ["vits"]


def test_default_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    monkeypatch.setenv("MEDIAGEN_CACHE_DIR", str(tmp_path))
    assert tiny.default_cache_dir() == tmp_path / "tiny-models"
    monkeypatch.delenv("MEDIAGEN_CACHE_DIR")
    assert tiny.default_cache_dir() == pathlib.Path.home() / ".cache" / "mediagen" / "tiny-models"


# ------------------------------------------------------------------------------------------------
# Marching cubes
# ------------------------------------------------------------------------------------------------


def test_marching_cubes_table_shape() -> None:
    from diffusers.pipelines.shap_e.renderer import MeshDecoder

    cases, masks = tiny.marching_cubes_table()
    reference = MeshDecoder()
    assert cases.shape == reference.cases.shape and cases.dtype == reference.cases.dtype
    assert masks.shape == reference.masks.shape and masks.dtype == reference.masks.dtype
    counts = masks.sum(dim=1)
    assert counts[0] == 0 and counts[255] == 0  # all outside / all inside: no surface
    assert counts[1] == 1  # one corner inside: one triangle cutting it off
    assert counts.max() <= 5
    assert int(cases.min()) >= 0 and int(cases.max()) < 12
    # A corner pattern and its complement cut the same edges.
    for case in (1, 3, 6, 7, 24, 105):
        used = set(cases[case][masks[case]].flatten().tolist())
        complement = set(cases[255 - case][masks[255 - case]].flatten().tolist())
        assert used == complement


def test_marching_cubes_table_gives_a_closed_sphere() -> None:
    from diffusers.pipelines.shap_e.renderer import MeshDecoder

    decoder = MeshDecoder()
    tiny_recipes._install_marching_cubes_table(decoder)
    n = 40
    axis = torch.linspace(-1, 1, n)
    x, y, z = torch.meshgrid(axis, axis, axis, indexing="ij")
    field = 0.6 - (x**2 + y**2 + z**2).sqrt()
    mesh = decoder(field, torch.tensor([-1.0, -1.0, -1.0]), torch.tensor([2.0, 2.0, 2.0]))
    assert mesh.verts.shape[0] > 0 and mesh.faces.shape[0] > 0
    trimesh = pytest.importorskip("trimesh")
    surface = trimesh.Trimesh(mesh.verts.numpy(), mesh.faces.numpy(), process=False)
    assert surface.is_watertight and surface.is_winding_consistent
    assert surface.volume == pytest.approx(4 / 3 * np.pi * 0.6**3, rel=0.03)  # positive: normals point out


# ------------------------------------------------------------------------------------------------
# Image
# ------------------------------------------------------------------------------------------------


def test_sd_text_image_inpaint(tiny_models: dict[str, pathlib.Path]) -> None:
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image
    from PIL import Image

    pipe = _quiet(AutoPipelineForText2Image.from_pretrained(tiny_models["sd"]))
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    image = pipe("a red fox", num_inference_steps=2, generator=_generator()).images[0]
    assert image.size == (32, 32)  # the default size: sample_size 16 x VAE factor 2

    batch = pipe(["a", "b"], num_inference_steps=2, height=32, width=32, output_type="np").images
    assert batch.shape == (2, 32, 32, 3)

    img2img = _quiet(AutoPipelineForImage2Image.from_pipe(pipe))
    out = img2img("a fox", image=image, strength=0.6, num_inference_steps=2, output_type="np").images
    assert out.shape == (1, 32, 32, 3)

    inpaint = _quiet(AutoPipelineForInpainting.from_pipe(pipe))
    mask = Image.new("L", (32, 32), 255)
    out = inpaint("a fox", image=image, mask_image=mask, num_inference_steps=2, output_type="np").images
    assert out.shape == (1, 32, 32, 3)


def test_controlnet(tiny_models: dict[str, pathlib.Path]) -> None:
    from diffusers import ControlNetModel, DiffusionPipeline, StableDiffusionControlNetPipeline

    base = DiffusionPipeline.from_pretrained(tiny_models["sd"])
    controlnet = ControlNetModel.from_pretrained(tiny_models["controlnet"])
    pipe = _quiet(StableDiffusionControlNetPipeline.from_pipe(base, controlnet=controlnet))

    def run(control: Any) -> Any:
        return pipe("a fox", image=control, num_inference_steps=2, generator=_generator(), output_type="np").images

    first, second = run(_rgb(32, seed=1)), run(_rgb(32, seed=2))
    assert first.shape == (1, 32, 32, 3)
    assert np.abs(first - second).max() > 1e-3  # the control image is really used


def test_lora_changes_output_and_unloads_exactly(tiny_models: dict[str, pathlib.Path]) -> None:
    from diffusers import DiffusionPipeline

    pipe = _quiet(DiffusionPipeline.from_pretrained(tiny_models["sd"]))

    def run() -> Any:
        return pipe("a fox", num_inference_steps=2, generator=_generator(), output_type="np").images

    plain = run()
    pipe.load_lora_weights(tiny_models["lora"], adapter_name="style")
    assert "style" in pipe.get_active_adapters()
    styled = run()
    assert np.abs(styled - plain).max() > 1e-2
    pipe.unload_lora_weights()
    np.testing.assert_array_equal(run(), plain)


# ------------------------------------------------------------------------------------------------
# Video
# ------------------------------------------------------------------------------------------------


def test_wan_text_to_video(tiny_models: dict[str, pathlib.Path]) -> None:
    from diffusers import DiffusionPipeline

    pipe = _quiet(DiffusionPipeline.from_pretrained(tiny_models["wan-t2v"]))
    assert type(pipe).__name__ == "WanPipeline"
    frames = pipe(
        "a fox runs",
        negative_prompt="blurry",
        height=16,
        width=16,
        num_frames=5,
        num_inference_steps=2,
        generator=_generator(),
        output_type="np",
    ).frames
    assert frames.shape == (1, 5, 16, 16, 3)
    assert np.isfinite(frames).all()


def test_svd_image_to_video(tiny_models: dict[str, pathlib.Path]) -> None:
    from diffusers import DiffusionPipeline

    pipe = _quiet(DiffusionPipeline.from_pretrained(tiny_models["svd"]))
    assert type(pipe).__name__ == "StableVideoDiffusionPipeline"
    frames = pipe(_rgb(32), height=32, width=32, num_inference_steps=2, generator=_generator(), output_type="np").frames
    assert frames.shape == (1, 4, 32, 32, 3)  # num_frames defaults to the UNet's 4


# ------------------------------------------------------------------------------------------------
# 3D
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "prompt"), [("shap-e", "a chair"), ("shap-e-img2img", None)])
def test_shap_e_mesh(tiny_models: dict[str, pathlib.Path], name: str, prompt: str | None) -> None:
    from diffusers import DiffusionPipeline

    pipe = _quiet(DiffusionPipeline.from_pretrained(tiny_models[name]))
    condition = prompt if prompt is not None else _rgb(64)
    latents = pipe(condition, num_inference_steps=2, generator=_generator(), output_type="latent").images
    assert latents.shape == (1, 32, 16)

    mesh = pipe(condition, num_inference_steps=2, generator=_generator(), output_type="mesh").images[0]
    assert mesh.verts.shape[0] > 0 and mesh.verts.shape[1] == 3
    assert mesh.faces.shape[0] > 0 and mesh.faces.shape[1] == 3
    assert set(mesh.vertex_channels) == {"R", "G", "B"}
    trimesh = pytest.importorskip("trimesh")
    surface = trimesh.Trimesh(mesh.verts.numpy(), mesh.faces.numpy(), process=False)
    assert surface.is_watertight and surface.volume > 0


# ------------------------------------------------------------------------------------------------
# Audio
# ------------------------------------------------------------------------------------------------


def test_stable_audio(tiny_models: dict[str, pathlib.Path]) -> None:
    from diffusers import AutoPipelineForText2Audio

    pipe = _quiet(AutoPipelineForText2Audio.from_pretrained(tiny_models["stable-audio"]))
    rate = pipe.vae.sampling_rate
    assert rate == tiny.STABLE_AUDIO_SAMPLING_RATE
    audio = pipe("rain on a roof", audio_end_in_s=0.5, num_inference_steps=2, generator=_generator()).audios
    assert tuple(audio.shape) == (1, 2, int(0.5 * rate))
    assert torch.isfinite(audio).all()


def test_musicgen(tiny_models: dict[str, pathlib.Path]) -> None:
    from transformers import AutoProcessor, AutoTokenizer, MusicgenForConditionalGeneration, pipeline

    path = tiny_models["musicgen"]
    model = MusicgenForConditionalGeneration.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    assert AutoTokenizer.from_pretrained(path) is not None
    rate = model.config.audio_encoder.sampling_rate
    assert rate == tiny.MUSICGEN_SAMPLING_RATE and model.config.audio_encoder.frame_rate == 25

    inputs = processor(text=["calm piano", "fast drums"], padding=True, return_tensors="pt")
    torch.manual_seed(0)
    audio = model.generate(**inputs, max_new_tokens=13)
    assert tuple(audio.shape) == (2, 1, 320 * (13 - 3))

    speaker = pipeline("text-to-audio", model=str(path))
    out = speaker("calm piano", forward_params={"max_new_tokens": 8})
    assert out["sampling_rate"] == rate and out["audio"].shape[-1] == 320 * (8 - 3)


@pytest.mark.parametrize("name", ["vits", "vits-speakers"])
def test_vits(tiny_models: dict[str, pathlib.Path], name: str) -> None:
    from transformers import AutoTokenizer, VitsModel, pipeline

    path = tiny_models[name]
    model = VitsModel.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    inputs = tokenizer(["Hello world.", "hi"], padding=True, return_tensors="pt")
    extra = {"speaker_id": 1} if name == "vits-speakers" else {}
    torch.manual_seed(0)
    with torch.no_grad():
        out = model(**inputs, **extra)
    assert out.waveform.ndim == 2 and out.waveform.shape[0] == 2
    assert out.sequence_lengths.min() > 0
    assert model.config.sampling_rate == tiny.VITS_SAMPLING_RATE
    assert model.config.num_speakers == (2 if name == "vits-speakers" else 1)

    speech = pipeline("text-to-speech", model=str(path))("hello there")
    assert speech["sampling_rate"] == tiny.VITS_SAMPLING_RATE and speech["audio"].size > 0
