"""Every diffusers family the backend serves, on a tiny random-weight pipeline, through `mg.Client`.

For each family, the natural request of the family runs with `n=1`, `n=2` and as two concurrent
`n=1` requests; all must give the same outputs for the same seeds (a request's output never
depends on what it was batched with), and the `n=1` output must equal what diffusers itself makes
for the same seed and arguments (`raw`, called here without mediagen).

Decoded outputs are compared: images and video frames within one uint8 level (a batched call
differs from a lone one by float rounding only), sounds within 1e-4, meshes by their vertices.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mediagen as mg

TinyModel = Callable[[str], Path]

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


def _picture(side: int = 32, seed: int = 0) -> mg.Image:
    rng = np.random.default_rng(seed)
    return mg.Image.from_array(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))


def _mask(side: int = 32) -> mg.Image:
    quarter = side // 4
    return mg.Image.from_array(np.pad(np.full((side // 2, side // 2), 255, np.uint8), quarter))


PICTURE = _picture()
OTHER_PICTURE = _picture(seed=1)
MASK = _mask()


@dataclass(frozen=True)
class Case:
    """One family: its tiny model, its natural request, and the same call made on diffusers directly."""

    model: str
    request: Callable[[int, int], mg.Request]
    """(seed, n) -> the request."""
    raw: dict[str, Any] = field(default_factory=dict)
    """Arguments of the same call made on the pipeline directly (None: no raw comparison)."""
    compare_raw: bool = True

    @property
    def id(self) -> str:
        return self.model


def _image(**fields: Any) -> Callable[[int, int], mg.Request]:
    return lambda seed, n: mg.ImageRequest(**{"prompt": "a red fox", "steps": 2, "seed": seed, "n": n, **fields})


def _video(**fields: Any) -> Callable[[int, int], mg.Request]:
    return lambda seed, n: mg.VideoRequest(**{"prompt": "waves", "steps": 2, "seed": seed, "n": n, **fields})


def _mesh(**fields: Any) -> Callable[[int, int], mg.Request]:
    return lambda seed, n: mg.MeshRequest(**{"steps": 2, "seed": seed, "n": n, **fields})


def _audio(**fields: Any) -> Callable[[int, int], mg.Request]:
    return lambda seed, n: mg.AudioRequest(**{"prompt": "rain", "steps": 2, "seed": seed, "n": n, **fields})


_T2I = {"prompt": "a red fox", "num_inference_steps": 2, "height": 32, "width": 32, "output_type": "pil"}
_NO_BINNING = {"use_resolution_binning": False}
_WAN_T2V = {"prompt": "waves", "num_inference_steps": 2, "height": 16, "width": 16, "num_frames": 5}
_WAN_I2V = {**_WAN_T2V, "image": _picture(16)}

CASES = [
    Case("sd", _image(width=32, height=32), _T2I),
    Case("sdxl", _image(width=32, height=32), _T2I),
    Case(
        "sdxl-refiner",
        _image(image=PICTURE, strength=0.6),
        {"prompt": "a red fox", "num_inference_steps": 2, "image": PICTURE, "strength": 0.6, "output_type": "pil"},
    ),
    Case("sd3", _image(width=32, height=32), _T2I),
    Case("flux", _image(width=32, height=32), _T2I),
    Case(
        "flux-fill",
        _image(image=PICTURE, mask=MASK),
        {**_T2I, "image": PICTURE, "mask_image": MASK},
    ),
    Case(
        "flux-kontext",
        _image(prompt="make it night", image=PICTURE, options={"_auto_resize": False}),
        {**_T2I, "prompt": "make it night", "image": PICTURE, "max_area": 32 * 32, "_auto_resize": False},
    ),
    # FLUX.1 Canny/Depth: the control image is read by the checkpoint itself (no ControlNet).
    Case(
        "flux-control",
        _image(control_image=PICTURE, width=32, height=32),
        {**_T2I, "control_image": PICTURE},
    ),
    Case("kolors", _image(width=32, height=32), _T2I),
    Case("flux2-klein", _image(width=32, height=32), _T2I),
    Case("qwen-image", _image(width=32, height=32), _T2I),
    # Their processor needs torchvision: `make test` runs these in a second environment that has it.
    pytest.param(
        Case(
            "qwen-image-edit",
            _image(prompt="make it night", image=PICTURE, width=32, height=32),
            {**_T2I, "prompt": "make it night", "image": PICTURE},
        ),
        marks=pytest.mark.torchvision,
    ),
    pytest.param(
        Case(
            "qwen-image-edit-plus",
            _image(prompt="make it night", image=PICTURE, images=[OTHER_PICTURE], width=32, height=32),
            {**_T2I, "prompt": "make it night", "image": [PICTURE, OTHER_PICTURE]},
        ),
        marks=pytest.mark.torchvision,
    ),
    # HiDream renders at a fixed area (128 x 128 latents a side); the request's size gives the aspect only.
    Case("hidream", _image(width=32, height=32), _T2I),
    Case("lumina2", _image(width=32, height=32), _T2I),
    Case("lumina", _image(width=32, height=32), _T2I),
    Case("pixart", _image(width=32, height=32, options=_NO_BINNING), {**_T2I, **_NO_BINNING}),
    Case("sana", _image(width=32, height=32, options=_NO_BINNING), {**_T2I, **_NO_BINNING}),
    Case("wan-t2v", _video(width=16, height=16, frames=5), _WAN_T2V),
    Case("wan-i2v", _video(image=_picture(16), frames=5), _WAN_I2V),
    # Wan 2.2 A14B: two experts split the schedule at `boundary_ratio`; its image-to-video has no CLIP.
    Case("wan22-t2v", _video(width=16, height=16, frames=5), _WAN_T2V),
    Case("wan22-i2v", _video(image=_picture(16), frames=5), _WAN_I2V),
    Case(
        "ltx",
        _video(width=32, height=32, frames=9),
        {"prompt": "waves", "num_inference_steps": 2, "height": 32, "width": 32, "num_frames": 9, "frame_rate": 25},
    ),
    Case(
        "cogvideox",
        _video(width=16, height=16, frames=9),
        {"prompt": "waves", "num_inference_steps": 2, "height": 16, "width": 16, "num_frames": 9},
    ),
    Case(
        "mochi",
        _video(width=16, height=16, frames=7),
        {"prompt": "waves", "num_inference_steps": 2, "height": 16, "width": 16, "num_frames": 7},
    ),
    Case(
        "hunyuan-video",
        _video(width=16, height=16, frames=5),
        {"prompt": "waves", "num_inference_steps": 2, "height": 16, "width": 16, "num_frames": 5},
    ),
    Case(
        "animatediff",
        _video(width=32, height=32, frames=4),
        {"prompt": "waves", "num_inference_steps": 2, "height": 32, "width": 32, "num_frames": 4},
    ),
    Case(
        "svd",
        _video(image=PICTURE, prompt=None, frames=4),
        {"image": PICTURE, "num_inference_steps": 2, "height": 32, "width": 32, "num_frames": 4, "fps": 7},
    ),
    Case("shap-e-img2img", _mesh(image=PICTURE), compare_raw=False),
    Case(
        "stable-audio",
        _audio(duration_s=0.5),
        {"prompt": "rain", "num_inference_steps": 2, "audio_end_in_s": 0.5},
    ),
]


def _values(result: mg.Result) -> list[np.ndarray[Any, Any]]:
    out = []
    for artifact in result.artifacts:
        if isinstance(artifact, mg.Image):
            out.append(np.asarray(artifact.to_pil().convert("RGB"), dtype=np.int16))
        elif isinstance(artifact, mg.Video):
            out.append(artifact.frames.astype(np.int16))
        elif isinstance(artifact, mg.Audio):
            out.append(np.asarray(artifact.samples, dtype=np.float64))
        else:
            out.append(np.asarray(artifact.to_trimesh().vertices, dtype=np.float64))
    return out


def _same(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> bool:
    if a.shape != b.shape:
        return False
    if a.dtype == np.int16:
        return bool(np.abs(a - b).max() <= 1)
    return bool(np.allclose(a, b, atol=1e-4))


def _raw(directory: Path, kwargs: dict[str, Any], seed: int) -> np.ndarray[Any, Any]:
    import diffusers
    import torch

    pipe = diffusers.DiffusionPipeline.from_pretrained(directory)
    pipe.set_progress_bar_config(disable=True)
    def pil(value: Any) -> Any:
        if isinstance(value, list):
            return [pil(v) for v in value]
        return value.to_pil().convert("RGB") if isinstance(value, mg.Image) else value

    args = {k: pil(v) for k, v in kwargs.items()}
    if "mask_image" in args:
        args["mask_image"] = args["mask_image"].convert("L")
    args["generator"] = [torch.Generator("cpu").manual_seed(seed)]
    with torch.inference_mode():
        out = pipe(**args)
    if hasattr(out, "images"):
        return np.asarray(out.images[0].convert("RGB"), dtype=np.int16)
    if hasattr(out, "frames"):
        frames = np.asarray(out.frames[0])
        if frames.dtype != np.uint8:
            frames = (np.clip(frames, 0.0, 1.0) * 255.0).round()
        return frames.astype(np.int16)
    return np.asarray(out.audios[0].float().numpy(), dtype=np.float64)


def _check_size_warning(request: mg.Request, result: mg.Result) -> None:
    """A picture of another size than the one asked for comes with a warning saying so; one of that size, without."""
    if not isinstance(request, mg.ImageRequest) or request.width is None or request.height is None:
        return
    made = result.artifacts[0]
    assert isinstance(made, mg.Image)
    resized = [w for w in result.warnings if w.type == "compatibility" and "sizes its pictures itself" in w.message]
    if made.to_pil().size == (request.width, request.height):
        assert not resized, resized
    else:
        assert resized, f"made {made.to_pil().size} for {request.width}x{request.height} without a warning"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
async def test_family_batches_like_single_calls_and_matches_diffusers(case: Case, tiny_model: TinyModel) -> None:
    directory = tiny_model(case.model)
    model = f"diffusers:{directory}"
    async with mg.Client(providers={"diffusers": {"batch_window_s": 0.05}}) as client:
        # Two requests at once (seeds 1 and 2): they may share a call.
        first, second = await asyncio.gather(
            client.generate(case.request(1, 1), model=model), client.generate(case.request(2, 1), model=model)
        )
        pair = await client.generate(case.request(1, 2), model=model)
    _check_size_warning(case.request(1, 1), first)
    one, two = _values(first)[0], _values(second)[0]
    both = _values(pair)
    assert len(both) == 2 and pair.seeds == [1, 2]
    assert _same(both[0], one), f"{case.model}: n=2 output 0 differs from a single request with seed 1"
    assert _same(both[1], two), f"{case.model}: n=2 output 1 differs from a single request with seed 2"
    assert not _same(one, two), f"{case.model}: seeds 1 and 2 gave the same output"
    if case.compare_raw:
        raw = await asyncio.to_thread(_raw, directory, case.raw, 1)
        assert _same(raw, one), f"{case.model}: differs from diffusers' own output for the same seed and arguments"
