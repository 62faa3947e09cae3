"""Google's models as mediagen sees them: three families, each with its own endpoint and limits.

=================================  ============================  ========================================
family                             endpoint                      mediagen tasks
=================================  ============================  ========================================
Imagen 4 (`imagen-4.0-*`)          `:predict` (REST)             text-to-image
Gemini image (`gemini-*-image*`)   `:generateContent` (client)   text-to-image, image-to-image
Veo (`veo-*`)                      `:predictLongRunning` (REST)  text-to-video, image-to-video
=================================  ============================  ========================================
"""

from __future__ import annotations

from dataclasses import dataclass

from mediagen.backend import Capabilities
from mediagen.errors import UnsupportedRequestError
from mediagen.requests import Task

from .errors import PROVIDER

__all__ = [
    "ImagenModel",
    "GeminiImageModel",
    "VeoModel",
    "GoogleModel",
    "IMAGEN_ASPECTS",
    "GEMINI_ASPECTS",
    "resolve",
]

IMAGEN_ASPECTS: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "3:4": (896, 1280),
    "4:3": (1280, 896),
    "9:16": (768, 1408),
    "16:9": (1408, 768),
}
"""Imagen's aspect ratios and their 1K sizes (2K doubles them)."""
GEMINI_ASPECTS: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "2:3": (832, 1248),
    "3:2": (1248, 832),
    "3:4": (864, 1184),
    "4:3": (1184, 864),
    "4:5": (896, 1152),
    "5:4": (1152, 896),
    "9:16": (768, 1344),
    "16:9": (1344, 768),
    "21:9": (1536, 672),
}
"""Gemini 2.5 Flash Image's aspect ratios and their sizes."""


@dataclass(frozen=True)
class ImagenModel:
    """An Imagen 4 model: text to image, up to `max_images` a call."""

    name: str
    max_images: int
    sizes_2k: bool
    """Takes `imageSize="2K"` (standard and ultra; fast does not)."""
    known: bool = True

    def capabilities(self) -> Capabilities:
        """Tasks and limits for the client's checks."""
        side = 2816 if self.sizes_2k else 1408
        tasks: frozenset[Task] = frozenset({"text-to-image"})
        return Capabilities(tasks=tasks, max_outputs_per_call=self.max_images, max_width=side, max_height=side)


@dataclass(frozen=True)
class GeminiImageModel:
    """A Gemini model that answers with images: generates, and edits the images it is given."""

    name: str
    known: bool = True

    def capabilities(self) -> Capabilities:
        """Tasks and limits: one image a call (`n` becomes several calls)."""
        tasks: frozenset[Task] = frozenset({"text-to-image", "image-to-image"})
        return Capabilities(tasks=tasks, max_outputs_per_call=1, max_width=1536, max_height=1536)


@dataclass(frozen=True)
class VeoModel:
    """A Veo model: text or image to video, as a long-running operation."""

    name: str
    durations: tuple[int, ...]
    """The `durationSeconds` it takes."""
    resolutions: tuple[str, ...]
    max_videos: int
    audio: bool
    """Generates a soundtrack (Veo 3), kept in the MP4."""
    typical_s: float
    """About how long an operation takes, for progress estimates."""
    known: bool = True

    def capabilities(self) -> Capabilities:
        """Tasks and limits for the client's checks."""
        tasks: frozenset[Task] = frozenset({"text-to-video", "image-to-video"})
        return Capabilities(
            tasks=tasks, max_outputs_per_call=self.max_videos, max_duration_s=float(max(self.durations))
        )


GoogleModel = ImagenModel | GeminiImageModel | VeoModel

_TABLE: dict[str, GoogleModel] = {
    "imagen-4.0-generate-001": ImagenModel("imagen-4.0-generate-001", 4, True),
    "imagen-4.0-fast-generate-001": ImagenModel("imagen-4.0-fast-generate-001", 4, False),
    "imagen-4.0-ultra-generate-001": ImagenModel("imagen-4.0-ultra-generate-001", 1, True),
    "gemini-2.5-flash-image": GeminiImageModel("gemini-2.5-flash-image"),
    "veo-3.0-generate-001": VeoModel("veo-3.0-generate-001", (8,), ("720p", "1080p"), 1, True, 60.0),
    "veo-3.0-fast-generate-001": VeoModel("veo-3.0-fast-generate-001", (8,), ("720p", "1080p"), 1, True, 40.0),
    "veo-2.0-generate-001": VeoModel("veo-2.0-generate-001", (5, 6, 7, 8), ("720p",), 2, False, 60.0),
}


def resolve(model: str) -> GoogleModel:
    """What `model` is: from the table, else by family from its name (with `known=False`).

    Raises:
        UnsupportedRequestError: A model of no family mediagen can drive (a text-only Gemini model).
    """
    if model in _TABLE:
        return _TABLE[model]
    if model.startswith("imagen-"):
        return ImagenModel(model, 4, "fast" not in model, known=False)
    if model.startswith("veo-"):
        audio = not model.startswith("veo-2")
        durations = (4, 6, 8) if audio else (5, 6, 7, 8)
        return VeoModel(model, durations, ("720p", "1080p"), 1, audio, 60.0, known=False)
    if model.startswith("gemini-") and "image" in model:
        return GeminiImageModel(model, known=False)
    raise UnsupportedRequestError(
        f"google:{model} is not a media model mediagen can drive: use imagen-4.0-*, gemini-*-image or veo-*",
        feature="model",
        provider=PROVIDER,
        model=model,
    )
