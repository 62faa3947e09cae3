"""Requests: one typed model per modality, validated before any network or GPU work.

The same request goes to every backend. Provider-specific knobs travel in `options`; a setting a
backend cannot honour comes back as a warning on the result (or an error with `strict=True`).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from ._types import coerce_artifact
from .artifacts import Artifact, Image, Video

__all__ = [
    "ImageRequest",
    "VideoRequest",
    "AudioRequest",
    "MeshRequest",
    "LoRA",
    "Request",
    "Task",
    "Modality",
    "TASKS",
    "request_class",
]

Modality = Literal["image", "video", "audio", "mesh"]
Task = Literal[
    "text-to-image",
    "image-to-image",
    "inpaint",
    "controlnet",
    "text-to-video",
    "image-to-video",
    "text-to-audio",
    "text-to-music",
    "text-to-sound",
    "text-to-speech",
    "text-to-3d",
    "image-to-3d",
]
TASKS: tuple[Task, ...] = Task.__args__  # type: ignore[attr-defined]

_MAX_SIDE = 8192


def _artifact_ref(value: Artifact) -> dict[str, Any]:
    # JSON form of an input: a URL passes by reference; anything in memory by content hash.
    if value.url and not value.url.startswith("data:"):
        return {"kind": value.kind, "url": value.url}
    return {"kind": value.kind, "sha256": value.sha256(), "media_type": value.media_type}


def _validator(cls: type[Artifact]) -> Any:
    def validate(value: Any) -> Any:
        if isinstance(value, dict) and "url" in value:
            value = value["url"]
        try:
            return coerce_artifact(value, cls)
        except TypeError as exc:
            # pydantic turns ValueError into a ValidationError but lets TypeError escape.
            raise ValueError(str(exc)) from exc

    return validate


ImageField = Annotated[Image, BeforeValidator(_validator(Image)), PlainSerializer(_artifact_ref, when_used="json")]
"""An image input: artifact, path, URL, bytes, PIL image or array (see `mediagen.ImageInput`)."""
VideoField = Annotated[Video, BeforeValidator(_validator(Video)), PlainSerializer(_artifact_ref, when_used="json")]


class LoRA(BaseModel):
    """A LoRA adapter applied for one request, then unloaded.

    A plain string is read as `LoRA(path=...)`; a `(path, scale)` pair sets the scale too.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1)
    """Hub id, local directory or file of the adapter weights."""
    scale: float = Field(1.0, ge=-10.0, le=10.0)
    """How strongly the adapter applies (1.0 as trained, 0.0 off)."""
    weight_name: str | None = None
    """The weights file inside `path`, when it holds several."""

    @model_validator(mode="before")
    @classmethod
    def _from_shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"path": value}
        if isinstance(value, (tuple, list)) and len(value) == 2:
            return {"path": value[0], "scale": value[1]}
        return value


def _multiple_of_8(name: str, value: int | None) -> int | None:
    if value is not None and value % 8:
        lower, upper = value - value % 8, value - value % 8 + 8
        hint = f"{lower} or {upper}" if lower >= 8 else str(upper)
        raise ValueError(f"{name} must be a multiple of 8 (latent models work in 8-pixel blocks); try {hint}")
    return value


class _Request(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        arbitrary_types_allowed=True,
        validate_assignment=True,
        str_strip_whitespace=False,
    )

    modality: ClassVar[Modality]

    prompt: str | None = Field(None, max_length=20_000)
    """What to generate (for speech: the text to speak)."""
    negative_prompt: str | None = Field(None, max_length=20_000)
    """What to steer away from."""
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    """Seed of the first output; output `i` uses `seed + i`. None picks one at random."""
    n: int = Field(1, ge=1, le=64)
    """How many outputs to make."""
    steps: int | None = Field(None, ge=1, le=1000)
    """Denoising / sampling steps; None uses the model's default."""
    guidance: float | None = Field(None, ge=0.0, le=100.0)
    """Classifier-free guidance scale; None uses the model's default."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Provider-specific settings, checked by the backend that receives them."""

    @property
    def task(self) -> Task:
        """The task this request asks for (what capability checks look at)."""
        raise NotImplementedError

    def seeds(self) -> list[int | None]:
        """Seeds of each output: `seed + i`, or None each when no seed was given."""
        if self.seed is None:
            return [None] * self.n
        return [(self.seed + i) % 2**32 for i in range(self.n)]

    def _require_prompt(self, why: str) -> None:
        if self.prompt is None or not self.prompt.strip():
            raise ValueError(why)


class ImageRequest(_Request):
    """Generate images: text-to-image, image-to-image, inpainting or ControlNet.

    Examples:
        >>> req = ImageRequest(prompt="a red fox in snow", width=512, height=512, seed=7, n=2)
        >>> req.task
        'text-to-image'
    """

    modality: ClassVar[Modality] = "image"

    width: int | None = Field(None, ge=8, le=_MAX_SIDE)
    """Width in pixels (a multiple of 8)."""
    height: int | None = Field(None, ge=8, le=_MAX_SIDE)
    """Height in pixels (a multiple of 8)."""
    aspect_ratio: str | None = Field(None, pattern=r"^\d{1,3}:\d{1,3}$")
    """`"W:H"` such as `"16:9"`, instead of width and height."""
    image: ImageField | None = None
    """Start from this image (image-to-image), or paint into it with `mask`."""
    mask: ImageField | None = None
    """White where the image is repainted (inpainting); needs `image`."""
    images: list[ImageField] | None = Field(None, min_length=1, max_length=16)
    """Reference images for edit and multi-reference models (several inputs, in order); `image` stays
    the one picture to edit or start from. Backends that cannot take references refuse the request."""
    strength: float | None = Field(None, ge=0.0, le=1.0)
    """How far image-to-image departs from `image` (0 keeps it, 1 ignores it)."""
    control_image: ImageField | None = None
    """Conditioning image for ControlNet (edges, depth, pose ...)."""
    control_model: str | None = None
    """The ControlNet to use (hub id or directory); backends may have a default."""
    control_scale: float | None = Field(None, ge=0.0, le=5.0)
    """How strongly the control image steers (ControlNet conditioning scale)."""
    loras: list[LoRA] = Field(default_factory=list, max_length=16)
    """LoRA adapters applied for this request only."""
    output_format: Literal["png", "jpeg", "webp"] | None = None
    """Encoding of the returned images; None keeps the backend's own."""

    @field_validator("width", "height")
    @classmethod
    def _size(cls, value: int | None, info: Any) -> int | None:
        return _multiple_of_8(info.field_name, value)

    @model_validator(mode="after")
    def _consistent(self) -> ImageRequest:
        self._require_prompt("prompt is required: describe the image to generate")
        if self.aspect_ratio is not None:
            if self.width is not None and self.height is not None:
                raise ValueError("give either aspect_ratio or width and height, not both")
            w, h = (int(x) for x in self.aspect_ratio.split(":"))
            if w == 0 or h == 0:
                raise ValueError(f"aspect_ratio {self.aspect_ratio!r} has a zero side; use e.g. '16:9'")
            if max(w / h, h / w) > 8:
                raise ValueError(f"aspect_ratio {self.aspect_ratio!r} is too extreme; keep it within 1:8 .. 8:1")
        if self.mask is not None and self.image is None:
            raise ValueError("mask needs image: the picture to paint into")
        if self.strength is not None and self.image is None:
            raise ValueError("strength applies to image-to-image; pass image too, or drop strength")
        if self.control_scale is not None and self.control_image is None:
            raise ValueError("control_scale needs control_image (the ControlNet conditioning image)")
        return self

    @property
    def task(self) -> Task:
        """`inpaint`, `controlnet`, `image-to-image` or `text-to-image`."""
        if self.mask is not None:
            return "inpaint"
        if self.control_image is not None:
            return "controlnet"
        if self.image is not None or self.images:
            return "image-to-image"
        return "text-to-image"

    def size(self, default: int = 1024, multiple: int = 8) -> tuple[int, int]:
        """Width and height to generate at, from the fields or the aspect ratio.

        Args:
            default: The side used when nothing is given (the longer side for an aspect ratio).
            multiple: Round sides derived from an aspect ratio to this multiple.
        """
        if self.aspect_ratio and (self.width is None) != (self.height is None):
            # One side given with an aspect ratio: the other side follows the ratio.
            w, h = (int(x) for x in self.aspect_ratio.split(":"))
            if self.width is not None:
                return self.width, max(multiple, round(self.width * h / w / multiple) * multiple)
            assert self.height is not None
            return max(multiple, round(self.height * w / h / multiple) * multiple), self.height
        if self.width is not None or self.height is not None:
            return self.width or self.height or default, self.height or self.width or default
        if self.aspect_ratio:
            w, h = (int(x) for x in self.aspect_ratio.split(":"))
            scale = default / max(w, h)
            return (
                max(multiple, round(w * scale / multiple) * multiple),
                max(multiple, round(h * scale / multiple) * multiple),
            )
        return default, default


class VideoRequest(_Request):
    """Generate a video: text-to-video, or image-to-video with `image`.

    Examples:
        >>> VideoRequest(prompt="the fox runs", frames=49, fps=16).task
        'text-to-video'
    """

    modality: ClassVar[Modality] = "video"

    width: int | None = Field(None, ge=8, le=_MAX_SIDE)
    """Width in pixels (a multiple of 8)."""
    height: int | None = Field(None, ge=8, le=_MAX_SIDE)
    """Height in pixels (a multiple of 8)."""
    frames: int | None = Field(None, ge=1, le=2048)
    """How many frames; or give `duration_s`."""
    duration_s: float | None = Field(None, gt=0.0, le=600.0)
    """Length in seconds; or give `frames`."""
    fps: float | None = Field(None, gt=0.0, le=120.0)
    """Frames per second of the output."""
    image: ImageField | None = None
    """First frame / conditioning image (image-to-video)."""

    @field_validator("width", "height")
    @classmethod
    def _size(cls, value: int | None, info: Any) -> int | None:
        return _multiple_of_8(info.field_name, value)

    @model_validator(mode="after")
    def _consistent(self) -> VideoRequest:
        if self.image is None:
            self._require_prompt("prompt is required for text-to-video (or pass image for image-to-video)")
        if self.frames is not None and self.duration_s is not None:
            raise ValueError("give either frames or duration_s, not both")
        return self

    @property
    def task(self) -> Task:
        """`image-to-video` or `text-to-video`."""
        return "image-to-video" if self.image is not None else "text-to-video"

    def num_frames(self, default_frames: int, default_fps: float) -> int:
        """Frames to generate: `frames`, else `duration_s * fps`, else the model's default."""
        if self.frames is not None:
            return self.frames
        if self.duration_s is not None:
            return max(1, math.ceil(self.duration_s * (self.fps or default_fps)))
        return default_frames


class AudioRequest(_Request):
    """Generate sound: music, sound effects or speech (`kind`).

    For speech the prompt is the text to speak; `voice` picks a speaker where the model has them.

    Examples:
        >>> AudioRequest(prompt="calm piano", kind="music", duration_s=8).task
        'text-to-music'
    """

    modality: ClassVar[Modality] = "audio"

    kind: Literal["music", "sound", "speech"] | None = None
    """What to make; None lets the model decide (a TTS model speaks, MusicGen plays)."""
    duration_s: float | None = Field(None, gt=0.0, le=600.0)
    """Length in seconds (speech takes as long as the text needs)."""
    voice: str | None = Field(None, min_length=1)
    """Speaker or voice name, for speech."""
    sample_rate: int | None = Field(None, ge=8000, le=192_000)
    """Resample the output to this rate; None keeps the model's."""

    @model_validator(mode="after")
    def _consistent(self) -> AudioRequest:
        if self.kind == "speech":
            self._require_prompt("speech needs text: put the words to speak in prompt")
        else:
            self._require_prompt("prompt is required: describe the sound or music to generate")
        if self.voice is not None and self.kind not in (None, "speech"):
            raise ValueError(f"voice applies to speech; drop it or set kind='speech' (kind is {self.kind!r})")
        return self

    @property
    def task(self) -> Task:
        """`text-to-speech`, `text-to-music`, `text-to-sound`, or `text-to-audio` when `kind` is None."""
        return {
            "speech": "text-to-speech",
            "music": "text-to-music",
            "sound": "text-to-sound",
            None: "text-to-audio",
        }[self.kind]  # type: ignore[return-value]


class MeshRequest(_Request):
    """Generate a 3D mesh: text-to-3D, or image-to-3D with `image`.

    Examples:
        >>> MeshRequest(prompt="a wooden chair", format="glb").task
        'text-to-3d'
    """

    modality: ClassVar[Modality] = "mesh"

    image: ImageField | None = None
    """Reconstruct this object (image-to-3D)."""
    format: Literal["glb", "obj", "ply"] = "glb"
    """File format of the returned meshes."""

    @model_validator(mode="after")
    def _consistent(self) -> MeshRequest:
        if self.image is None:
            self._require_prompt("prompt is required for text-to-3D (or pass image for image-to-3D)")
        return self

    @property
    def task(self) -> Task:
        """`image-to-3d` or `text-to-3d`."""
        return "image-to-3d" if self.image is not None else "text-to-3d"


Request = Union[ImageRequest, VideoRequest, AudioRequest, MeshRequest]
"""Any of the four request types."""

_BY_MODALITY: dict[str, type[_Request]] = {
    "image": ImageRequest,
    "video": VideoRequest,
    "audio": AudioRequest,
    "mesh": MeshRequest,
}


def request_class(modality: str) -> type[_Request]:
    """The request model of a modality (`"image"` → `ImageRequest`).

    Raises:
        ValueError: Not one of image, video, audio, mesh.
    """
    try:
        return _BY_MODALITY[modality]
    except KeyError:
        raise ValueError(f"unknown modality {modality!r}; use one of {', '.join(_BY_MODALITY)}") from None
