"""Requests: every field and bound, the input coercions, and fuzzing with generated payloads."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import math
import wave
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mediagen as mg
from mediagen.testing import FakeBackend

REQUEST_CLASSES = [mg.ImageRequest, mg.VideoRequest, mg.AudioRequest, mg.MeshRequest]
# A port nothing listens on: an artifact pointing here must never be fetched during validation.
UNREACHABLE_PNG = "http://127.0.0.1:9/never-fetched.png"


def png_bytes(width: int = 16, height: int = 12, color: tuple[int, int, int] = (200, 30, 10)) -> bytes:
    buf = io.BytesIO()
    PIL.Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    PIL.Image.new("RGB", (16, 16), (10, 200, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def wav_bytes() -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x01" * 800)
    return buf.getvalue()


def messages(exc: pydantic.ValidationError) -> str:
    return "\n".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


def locs(exc: pydantic.ValidationError) -> set[str]:
    return {".".join(map(str, e["loc"])) for e in exc.errors()}


def minimal(cls: type[Any]) -> dict[str, Any]:
    return {"prompt": "a red fox"}


# -- common fields ---------------------------------------------------------------------------------

COMMON_BOUNDS = [
    ("seed", 0, True),
    ("seed", 2**32 - 1, True),
    ("seed", -1, False),
    ("seed", 2**32, False),
    ("seed", 10**30, False),
    ("n", 1, True),
    ("n", 64, True),
    ("n", 0, False),
    ("n", 65, False),
    ("n", 1.5, False),
    ("steps", 1, True),
    ("steps", 1000, True),
    ("steps", 0, False),
    ("steps", 1001, False),
    ("guidance", 0.0, True),
    ("guidance", 100.0, True),
    ("guidance", -0.1, False),
    ("guidance", 100.5, False),
    ("guidance", math.nan, False),
    ("guidance", math.inf, False),
    ("prompt", "x" * 20_000, True),
    ("prompt", "x" * 20_001, False),
    ("negative_prompt", "blurry", True),
    ("negative_prompt", "x" * 20_001, False),
    ("options", {"go_fast": True, "nested": {"a": [1, 2]}}, True),
    ("options", "go_fast", False),
]


@pytest.mark.parametrize("cls", REQUEST_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize(("field", "value", "ok"), COMMON_BOUNDS, ids=lambda v: repr(v)[:20])
def test_common_field_bounds(cls: type[Any], field: str, value: Any, ok: bool) -> None:
    fields = {**minimal(cls), field: value}
    if ok:
        req = cls(**fields)
        assert getattr(req, field) == value
    else:
        with pytest.raises(pydantic.ValidationError) as info:
            cls(**fields)
        assert field in locs(info.value)


@pytest.mark.parametrize("cls", REQUEST_CLASSES, ids=lambda c: c.__name__)
def test_defaults(cls: type[Any]) -> None:
    req = cls(prompt="x")
    assert (req.n, req.seed, req.steps, req.guidance, req.negative_prompt, req.options) == (
        1,
        None,
        None,
        None,
        None,
        {},
    )
    assert req.modality == cls.__name__.removesuffix("Request").lower()


@pytest.mark.parametrize("cls", REQUEST_CLASSES, ids=lambda c: c.__name__)
def test_unknown_fields_are_refused_by_name(cls: type[Any]) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        cls(prompt="x", num_outputs=2)
    assert "num_outputs" in locs(info.value)
    assert "extra" in info.value.errors()[0]["type"]


@pytest.mark.parametrize("cls", REQUEST_CLASSES, ids=lambda c: c.__name__)
def test_assignment_is_validated(cls: type[Any]) -> None:
    req = cls(prompt="x")
    with pytest.raises(pydantic.ValidationError):
        req.n = 0
    assert req.n == 1


# -- ImageRequest ----------------------------------------------------------------------------------

IMAGE_BOUNDS = [
    ("width", 8, True),
    ("width", 8192, True),
    ("width", 512, True),
    ("width", 0, False),
    ("width", 8200, False),
    ("height", 1024, True),
    ("height", -8, False),
    ("aspect_ratio", "16:9", True),
    ("aspect_ratio", "1:8", True),
    ("aspect_ratio", "16x9", False),
    ("aspect_ratio", "16:9:1", False),
    ("aspect_ratio", "0:1", False),
    ("aspect_ratio", "1:9", False),
    ("control_model", "lllyasviel/sd-controlnet-canny", True),
    ("loras", ["a"] * 16, True),
    ("loras", ["a"] * 17, False),
    ("output_format", "png", True),
    ("output_format", "jpeg", True),
    ("output_format", "webp", True),
    ("output_format", "gif", False),
    ("output_format", "jpg", False),
]


@pytest.mark.parametrize(("field", "value", "ok"), IMAGE_BOUNDS, ids=lambda v: repr(v)[:20])
def test_image_field_bounds(field: str, value: Any, ok: bool) -> None:
    if ok:
        req = mg.ImageRequest(prompt="x", **{field: value})
        assert getattr(req, field) is not None
    else:
        with pytest.raises(pydantic.ValidationError):
            mg.ImageRequest(prompt="x", **{field: value})


@pytest.mark.parametrize(
    ("value", "hint"),
    [(513, "try 512 or 520"), (12, "try 8 or 16"), (1000 + 4, "try 1000 or 1008"), (8191, "try 8184 or 8192")],
)
@pytest.mark.parametrize("cls", [mg.ImageRequest, mg.VideoRequest], ids=lambda c: c.__name__)
@pytest.mark.parametrize("field", ["width", "height"])
def test_sizes_not_multiple_of_8_suggest_neighbours(cls: type[Any], field: str, value: int, hint: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        cls(prompt="x", **{field: value})
    text = messages(info.value)
    assert f"{field} must be a multiple of 8" in text
    assert hint in text


def test_image_strength_and_guidance_ranges() -> None:
    src = png_bytes()
    assert mg.ImageRequest(prompt="x", image=src, strength=0.0).strength == 0.0
    assert mg.ImageRequest(prompt="x", image=src, strength=1.0).strength == 1.0
    for bad in (-0.01, 1.01, math.nan):
        with pytest.raises(pydantic.ValidationError):
            mg.ImageRequest(prompt="x", image=src, strength=bad)
    assert mg.ImageRequest(prompt="x", control_image=src, control_scale=5.0).control_scale == 5.0
    with pytest.raises(pydantic.ValidationError):
        mg.ImageRequest(prompt="x", control_image=src, control_scale=5.1)


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"prompt": None}, "prompt is required"),
        ({"prompt": "   "}, "prompt is required"),
        ({"prompt": "x", "mask": "IMG"}, "mask needs image"),
        ({"prompt": "x", "strength": 0.5}, "pass image too, or drop strength"),
        ({"prompt": "x", "control_scale": 0.5}, "control_scale needs control_image"),
        ({"prompt": "x", "aspect_ratio": "16:9", "width": 512, "height": 512}, "not both"),
        ({"prompt": "x", "aspect_ratio": "0:9"}, "zero side"),
        ({"prompt": "x", "aspect_ratio": "1:20"}, "1:8 .. 8:1"),
    ],
)
def test_image_consistency_messages_say_what_to_change(fields: dict[str, Any], says: str) -> None:
    fields = {k: (png_bytes() if v == "IMG" else v) for k, v in fields.items()}
    with pytest.raises(pydantic.ValidationError) as info:
        mg.ImageRequest(**fields)
    assert says in messages(info.value)


# -- VideoRequest ----------------------------------------------------------------------------------

VIDEO_BOUNDS = [
    ("frames", 1, True),
    ("frames", 2048, True),
    ("frames", 0, False),
    ("frames", 2049, False),
    ("duration_s", 0.1, True),
    ("duration_s", 600.0, True),
    ("duration_s", 0.0, False),
    ("duration_s", 600.5, False),
    ("duration_s", math.nan, False),
    ("fps", 24.0, True),
    ("fps", 120.0, True),
    ("fps", 0.0, False),
    ("fps", 121.0, False),
    ("width", 832, True),
    ("width", 830, False),
    ("height", 480, True),
    ("height", 8193, False),
]


@pytest.mark.parametrize(("field", "value", "ok"), VIDEO_BOUNDS, ids=lambda v: repr(v)[:20])
def test_video_field_bounds(field: str, value: Any, ok: bool) -> None:
    if ok:
        assert getattr(mg.VideoRequest(prompt="x", **{field: value}), field) == value
    else:
        with pytest.raises(pydantic.ValidationError):
            mg.VideoRequest(prompt="x", **{field: value})


def test_video_consistency() -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        mg.VideoRequest(prompt="x", frames=16, duration_s=2.0)
    assert "either frames or duration_s" in messages(info.value)
    with pytest.raises(pydantic.ValidationError) as info:
        mg.VideoRequest()
    assert "or pass image for image-to-video" in messages(info.value)
    assert mg.VideoRequest(image=png_bytes()).prompt is None  # image-to-video needs no prompt


def test_video_num_frames() -> None:
    assert mg.VideoRequest(prompt="x", frames=10).num_frames(49, 16) == 10
    assert mg.VideoRequest(prompt="x", duration_s=2.0, fps=8).num_frames(49, 16) == 16
    assert mg.VideoRequest(prompt="x", duration_s=2.0).num_frames(49, 16) == 32
    assert mg.VideoRequest(prompt="x", duration_s=0.01).num_frames(49, 16) == 1
    assert mg.VideoRequest(prompt="x").num_frames(49, 16) == 49


# -- AudioRequest ----------------------------------------------------------------------------------

AUDIO_BOUNDS = [
    ("kind", "music", True),
    ("kind", "sound", True),
    ("kind", "speech", True),
    ("kind", "noise", False),
    ("duration_s", 8.0, True),
    ("duration_s", 0.0, False),
    ("duration_s", -1.0, False),
    ("duration_s", 601.0, False),
    ("voice", "alloy", True),
    ("voice", "", False),
    ("sample_rate", 8000, True),
    ("sample_rate", 192_000, True),
    ("sample_rate", 7999, False),
    ("sample_rate", 192_001, False),
]


@pytest.mark.parametrize(("field", "value", "ok"), AUDIO_BOUNDS, ids=lambda v: repr(v)[:20])
def test_audio_field_bounds(field: str, value: Any, ok: bool) -> None:
    if ok:
        assert getattr(mg.AudioRequest(prompt="x", **{field: value}), field) == value
    else:
        with pytest.raises(pydantic.ValidationError):
            mg.AudioRequest(prompt="x", **{field: value})


def test_audio_consistency_messages() -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        mg.AudioRequest(prompt="calm piano", kind="music", voice="alloy")
    assert "set kind='speech'" in messages(info.value)
    with pytest.raises(pydantic.ValidationError) as info:
        mg.AudioRequest(prompt="  ", kind="speech")
    assert "put the words to speak in prompt" in messages(info.value)
    with pytest.raises(pydantic.ValidationError) as info:
        mg.AudioRequest()
    assert "prompt is required" in messages(info.value)
    assert mg.AudioRequest(prompt="hello there", kind="speech", voice="alloy").voice == "alloy"
    assert mg.AudioRequest(prompt="hello", voice="alloy").kind is None  # a TTS model decides


# -- MeshRequest -----------------------------------------------------------------------------------


def test_mesh_fields() -> None:
    assert mg.MeshRequest(prompt="chair").format == "glb"
    for fmt in ("glb", "obj", "ply"):
        assert mg.MeshRequest(prompt="chair", format=fmt).format == fmt
    with pytest.raises(pydantic.ValidationError):
        mg.MeshRequest(prompt="chair", format="stl")
    with pytest.raises(pydantic.ValidationError) as info:
        mg.MeshRequest()
    assert "or pass image for image-to-3D" in messages(info.value)
    assert mg.MeshRequest(image=png_bytes()).task == "image-to-3d"


# -- task, seeds, size -----------------------------------------------------------------------------


def _task_cases() -> list[tuple[Any, str]]:
    img = png_bytes()
    return [
        (lambda: mg.ImageRequest(prompt="x"), "text-to-image"),
        (lambda: mg.ImageRequest(prompt="x", image=img), "image-to-image"),
        (lambda: mg.ImageRequest(prompt="x", image=img, mask=img), "inpaint"),
        (lambda: mg.ImageRequest(prompt="x", control_image=img), "controlnet"),
        (lambda: mg.VideoRequest(prompt="x"), "text-to-video"),
        (lambda: mg.VideoRequest(prompt="x", image=img), "image-to-video"),
        (lambda: mg.AudioRequest(prompt="x"), "text-to-audio"),
        (lambda: mg.AudioRequest(prompt="x", kind="music"), "text-to-music"),
        (lambda: mg.AudioRequest(prompt="x", kind="sound"), "text-to-sound"),
        (lambda: mg.AudioRequest(prompt="x", kind="speech"), "text-to-speech"),
        (lambda: mg.MeshRequest(prompt="x"), "text-to-3d"),
        (lambda: mg.MeshRequest(image=img), "image-to-3d"),
    ]


@pytest.mark.parametrize(("make", "task"), _task_cases(), ids=[t for _, t in _task_cases()])
def test_task(make: Any, task: str) -> None:
    from mediagen.requests import TASKS

    assert make().task == task
    assert task in TASKS


def test_every_task_is_reachable() -> None:
    from mediagen.requests import TASKS

    assert {t for _, t in _task_cases()} == set(TASKS)


@pytest.mark.parametrize(
    ("seed", "n", "expected"),
    [
        (None, 3, [None, None, None]),
        (7, 1, [7]),
        (7, 3, [7, 8, 9]),
        (2**32 - 2, 3, [2**32 - 2, 2**32 - 1, 0]),
    ],
)
def test_seeds(seed: int | None, n: int, expected: list[int | None]) -> None:
    assert mg.AudioRequest(prompt="x", seed=seed, n=n).seeds() == expected


@pytest.mark.parametrize(
    ("fields", "default", "expected"),
    [
        ({}, 1024, (1024, 1024)),
        ({}, 64, (64, 64)),
        ({"width": 512, "height": 768}, 1024, (512, 768)),
        ({"width": 512}, 1024, (512, 512)),
        ({"height": 320}, 1024, (320, 320)),
        ({"aspect_ratio": "1:1"}, 1024, (1024, 1024)),
        ({"aspect_ratio": "16:9"}, 1024, (1024, 576)),
        ({"aspect_ratio": "9:16"}, 1024, (576, 1024)),
        ({"aspect_ratio": "3:2"}, 1000, (1000, 664)),
        ({"aspect_ratio": "8:1"}, 64, (64, 8)),
        # One side plus an aspect ratio: the other side follows the ratio.
        ({"aspect_ratio": "16:9", "width": 1024}, 512, (1024, 576)),
        ({"aspect_ratio": "2:1", "height": 256}, 1024, (512, 256)),
    ],
)
def test_image_size(fields: dict[str, Any], default: int, expected: tuple[int, int]) -> None:
    w, h = mg.ImageRequest(prompt="x", **fields).size(default=default)
    assert (w, h) == expected
    assert w % 8 == 0 and h % 8 == 0


def test_image_size_multiple() -> None:
    w, h = mg.ImageRequest(prompt="x", aspect_ratio="16:9").size(default=1024, multiple=64)
    assert (w, h) == (1024, 576)
    w, h = mg.ImageRequest(prompt="x", aspect_ratio="4:3").size(default=100, multiple=16)
    assert w % 16 == 0 and h % 16 == 0 and abs(w / h - 4 / 3) < 0.2


# -- LoRA ------------------------------------------------------------------------------------------


def test_lora_shorthands() -> None:
    req = mg.ImageRequest(
        prompt="x",
        loras=["owner/style", ("owner/other", 0.5), ["/local/lora.safetensors", -1], {"path": "p", "weight_name": "w"}],
    )
    assert req.loras == [
        mg.LoRA(path="owner/style"),
        mg.LoRA(path="owner/other", scale=0.5),
        mg.LoRA(path="/local/lora.safetensors", scale=-1.0),
        mg.LoRA(path="p", weight_name="w"),
    ]
    assert req.loras[0].scale == 1.0
    assert mg.LoRA.model_validate("a/b") == mg.LoRA(path="a/b")
    hash(req.loras[0])  # frozen: usable as a batching key


@pytest.mark.parametrize("bad", ["", ("a", 11), ("a", "strong"), {"path": "a", "alpha": 1}, ("a", 1, 2), 3])
def test_lora_rejects(bad: Any) -> None:
    with pytest.raises(pydantic.ValidationError):
        mg.ImageRequest(prompt="x", loras=[bad])


# -- inputs ----------------------------------------------------------------------------------------

INPUT_SLOTS = [
    ("ImageRequest.image", lambda v: mg.ImageRequest(prompt="x", image=v), "image"),
    ("ImageRequest.mask", lambda v: mg.ImageRequest(prompt="x", image=png_bytes(), mask=v), "mask"),
    ("ImageRequest.control_image", lambda v: mg.ImageRequest(prompt="x", control_image=v), "control_image"),
    ("VideoRequest.image", lambda v: mg.VideoRequest(prompt="x", image=v), "image"),
    ("MeshRequest.image", lambda v: mg.MeshRequest(image=v), "image"),
]


def _good_inputs(tmp_path: Path) -> dict[str, tuple[Any, tuple[int, int]]]:
    png = png_bytes(16, 12)
    path = tmp_path / "in.png"
    path.write_bytes(png)
    return {
        "artifact": (mg.Image(png), (16, 12)),
        "artifact-from-pil": (mg.Image.from_pil(PIL.Image.new("RGB", (10, 6))), (10, 6)),
        "path-str": (str(path), (16, 12)),
        "path-obj": (path, (16, 12)),
        "bytes-png": (png, (16, 12)),
        "bytes-jpeg": (jpeg_bytes(), (16, 16)),
        "data-url": ("data:image/png;base64," + base64.b64encode(png).decode(), (16, 12)),
        "data-url-undeclared": ("data:;base64," + base64.b64encode(png).decode(), (16, 12)),
        "pil-rgb": (PIL.Image.new("RGB", (20, 10), (1, 2, 3)), (20, 10)),
        "pil-rgba": (PIL.Image.new("RGBA", (8, 8)), (8, 8)),
        "numpy-hwc-uint8": (np.zeros((6, 10, 3), dtype=np.uint8), (10, 6)),
        "numpy-hw": (np.zeros((5, 7), dtype=np.uint8), (7, 5)),
        "numpy-float": (np.full((4, 4, 3), 0.5, dtype=np.float32), (4, 4)),
    }


@pytest.mark.parametrize(("slot", "make", "field"), INPUT_SLOTS, ids=[s for s, _, _ in INPUT_SLOTS])
def test_inputs_accept_every_form(tmp_path: Path, slot: str, make: Any, field: str) -> None:
    for name, (value, size) in _good_inputs(tmp_path).items():
        req = make(value)
        artifact = getattr(req, field)
        assert isinstance(artifact, mg.Image), name
        assert artifact.to_pil().size == size, name


@pytest.mark.parametrize(("slot", "make", "field"), INPUT_SLOTS, ids=[s for s, _, _ in INPUT_SLOTS])
def test_http_url_input_is_lazy(slot: str, make: Any, field: str) -> None:
    req = make(UNREACHABLE_PNG)
    artifact = getattr(req, field)
    assert isinstance(artifact, mg.Image)
    assert artifact.url == UNREACHABLE_PNG
    assert not artifact.is_loaded  # no fetch happened (nothing listens on that port anyway)
    assert artifact.media_type == "image/png"  # guessed from the name, still without a fetch
    req2 = make({"url": UNREACHABLE_PNG})  # the JSON form of a URL input
    assert getattr(req2, field).url == UNREACHABLE_PNG


def test_artifact_input_is_kept_as_is() -> None:
    img = mg.Image(png_bytes())
    assert mg.ImageRequest(prompt="x", image=img).image is img


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Any, str]]:
    wav_file = tmp_path / "sound.wav"
    wav_file.write_bytes(wav_bytes())
    return {
        "wav-bytes": (wav_bytes(), "audio/wav, not a"),
        "wav-data-url": ("data:audio/wav;base64," + base64.b64encode(wav_bytes()).decode(), "audio/wav"),
        "junk-bytes": (b"definitely not an image", "unknown format"),
        "empty-bytes": (b"", "empty bytes"),
        "missing-path": (str(tmp_path / "nope.png"), "no such file"),
        "directory": (str(tmp_path), "no such file"),
        "unknown-user-home": ("~no_such_user_mediagen/x.png", ""),
        "path-too-long": ("x" * 5000 + ".png", ""),
        "nul-in-path": ("a\x00b.png", ""),
        "bad-data-url": ("data:image/png;base64", "data:"),
        "audio-artifact": (mg.Audio(wav_bytes()), "got an Audio artifact"),
        "int": (42, "pass an mg.Image, a path, a URL, bytes, a PIL image or a numpy array"),
        "float": (1.5, "cannot use a float"),
        "list": ([1, 2, 3], "cannot use a list"),
        "dict-without-url": ({"path": "x.png"}, "cannot use a dict"),
        "numpy-4d": (np.zeros((2, 2, 2, 3), dtype=np.uint8), "HxW or HxWxC"),
    }


@pytest.mark.parametrize(("slot", "make", "field"), INPUT_SLOTS, ids=[s for s, _, _ in INPUT_SLOTS])
def test_inputs_reject_wrong_kinds(tmp_path: Path, slot: str, make: Any, field: str) -> None:
    for name, (value, says) in _bad_inputs(tmp_path).items():
        with pytest.raises(pydantic.ValidationError) as info:
            make(value)
        assert field in locs(info.value), name
        assert says in messages(info.value), (name, messages(info.value))


def test_wav_file_path_is_not_an_image(tmp_path: Path) -> None:
    # A local file is cheap to look at: its kind is checked like bytes are.
    wav_file = tmp_path / "sound.png"  # a misleading suffix does not help
    wav_file.write_bytes(wav_bytes())
    with pytest.raises(pydantic.ValidationError) as info:
        mg.ImageRequest(prompt="x", image=wav_file)
    assert "audio/wav" in messages(info.value)


def test_animated_gif_bytes_are_an_image_input() -> None:
    frames = [PIL.Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    assert mg.ImageRequest(prompt="x", image=buf.getvalue()).image.media_type == "image/gif"


# -- JSON ------------------------------------------------------------------------------------------


def test_json_of_a_request_with_inputs() -> None:
    png = png_bytes()
    req = mg.ImageRequest(
        prompt="a fox",
        image=png,
        mask=UNREACHABLE_PNG,
        strength=0.6,
        loras=[("owner/style", 0.8)],
        seed=3,
        options={"scheduler": "euler"},
    )
    dumped = req.model_dump(mode="json")
    assert dumped["image"] == {"kind": "image", "sha256": hashlib.sha256(png).hexdigest(), "media_type": "image/png"}
    assert dumped["mask"] == {"kind": "image", "url": UNREACHABLE_PNG}  # by reference, not fetched
    assert dumped["control_image"] is None
    assert dumped["loras"] == [{"path": "owner/style", "scale": 0.8, "weight_name": None}]
    assert dumped["options"] == {"scheduler": "euler"}
    text = json.dumps(dumped)
    assert json.loads(req.model_dump_json()) == json.loads(text)
    assert not req.mask.is_loaded

    # A URL input survives a JSON round trip.
    again = mg.ImageRequest.model_validate(
        {**json.loads(text), "image": {"kind": "image", "url": UNREACHABLE_PNG}, "mask": None}
    )
    assert again.image.url == UNREACHABLE_PNG
    assert again.strength == 0.6 and again.loras == req.loras


@pytest.mark.parametrize(
    "make",
    [
        lambda: mg.VideoRequest(prompt="x", image=np.zeros((8, 8, 3), dtype=np.uint8)),
        lambda: mg.MeshRequest(image=PIL.Image.new("RGB", (8, 8))),
        lambda: mg.AudioRequest(prompt="x", kind="speech", voice="v"),
    ],
)
def test_json_of_each_request_kind(make: Any) -> None:
    dumped = make().model_dump(mode="json")
    json.dumps(dumped)
    if "image" in dumped:
        assert len(dumped["image"]["sha256"]) == 64


# -- fuzzing ---------------------------------------------------------------------------------------

FIELD_NAMES = sorted({name for cls in REQUEST_CLASSES for name in cls.model_fields})
JUNK_KEYS = ["widht", "num_outputs", "Prompt", "seeds", "", "image_url", "lora", "__class__", "model_config"]
_PNG = png_bytes(8, 8)
DOMAIN_VALUES = [
    "a red fox",
    "",
    "   ",
    "16:9",
    "0:0",
    "1:100",
    "music",
    "speech",
    "sound",
    "glb",
    "png",
    "jpeg",
    "~no_such_user_mediagen/x.png",
    "x" * 5000,
    "a\x00b",
    UNREACHABLE_PNG,
    "ftp://example.invalid/x.png",
    "data:image/png;base64,!!!",
    "data:image/png;base64," + base64.b64encode(_PNG).decode(),
    "data:,",
    8,
    512,
    513,
    2**32,
    -(2**70),
    0.5,
    1e308,
    _PNG,
    wav_bytes(),
    {"url": UNREACHABLE_PNG},
    {"url": 5},
    ["owner/lora", ("a", 0.5)],
    [("a", math.nan)],
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.binary(max_size=30),
    st.sampled_from(DOMAIN_VALUES),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.text(max_size=6), st.sampled_from(["url", "path", "scale"])), inner, max_size=3),
    ),
    max_leaves=6,
)
# Media inputs get their own strategy: path-like strings, URLs and bytes are where coercion can go wrong.
media_inputs = st.one_of(
    st.sampled_from(DOMAIN_VALUES),
    st.text(max_size=20).map(lambda s: "~" + s),
    st.text(max_size=20).map(lambda s: "data:" + s),
    st.text(min_size=250, max_size=600),
    st.text(max_size=30),
    st.binary(max_size=40),
    st.binary(max_size=40).map(lambda b: b"\x89PNG\r\n\x1a\n" + b),
    values,
)
payloads = st.tuples(
    st.dictionaries(st.sampled_from(FIELD_NAMES + JUNK_KEYS), values, max_size=7),
    st.dictionaries(st.sampled_from(["image", "mask", "control_image"]), media_inputs, max_size=2),
).map(lambda parts: {**parts[0], **parts[1]})


@pytest.mark.parametrize("cls", REQUEST_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=payloads)
def test_generated_payloads_only_raise_validation_errors(cls: type[Any], payload: dict[str, Any]) -> None:
    try:
        req = cls.model_validate(payload)
    except pydantic.ValidationError as exc:
        assert exc.errors()  # every failure says where
        return
    # Whatever validated is usable: a task, seeds, and a JSON form (URL inputs are never fetched).
    assert req.task
    assert len(req.seeds()) == req.n


CLIENT_RESERVED = {"model", "timeout", "strict", "on_event"}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(modality=st.sampled_from(["image", "video", "audio", "mesh"]), payload=payloads)
def test_client_refuses_invalid_payloads_before_the_backend(modality: str, payload: dict[str, Any]) -> None:
    from mediagen.requests import request_class

    payload = {k: v for k, v in payload.items() if k and k not in CLIENT_RESERVED}
    try:
        request_class(modality).model_validate(payload)
    except pydantic.ValidationError:
        valid = False
    else:
        valid = True
    if valid:
        return  # valid payloads run elsewhere; here only refusals matter

    async def go() -> None:
        backend = FakeBackend()
        async with mg.Client(backends={"fake": backend}) as client:
            fields = dict(payload)
            prompt = fields.pop("prompt", None)
            with pytest.raises(mg.InvalidRequestError) as info:
                await getattr(client, modality)(prompt, model="fake:m", **fields)
            assert isinstance(info.value, ValueError)
            assert info.value.errors and f"invalid {modality.capitalize()}Request" in str(info.value)
        assert backend.calls == 0

    asyncio.run(go())


async def test_invalid_request_never_reaches_the_backend() -> None:
    backend = FakeBackend()
    async with mg.Client(backends={"fake": backend}) as client:
        with pytest.raises(mg.InvalidRequestError) as info:
            await client.image("a fox", model="fake:m", width=513)
        assert "width: width must be a multiple of 8" in str(info.value)
        assert info.value.errors[0]["loc"] == ("width",)
        with pytest.raises(mg.InvalidRequestError):
            await client.audio("hi", model="fake:m", kind="speech", voice="")
        with pytest.raises(mg.InvalidRequestError):
            client.submit({"prompt": "x"}, model="fake:m")  # type: ignore[arg-type]
    assert backend.calls == 0
