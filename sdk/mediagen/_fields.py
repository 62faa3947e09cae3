"""The request fields of `Client.image/video/audio/mesh`, as TypedDicts for `**fields: Unpack[...]`.

Each TypedDict lists every field of its request model except `prompt` (the methods' first
argument), with the types a caller may pass: media as any `ImageInput`, `options` as any mapping,
LoRAs in their shorthand forms too. `tests/core/test_typed_entry_points.py` keeps them in step
with the pydantic models: a field added to a request and not here fails that test.
"""

# No `from __future__ import annotations`: the test reads these annotations as objects.

import sys
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict

from ._types import ImageInput
from .requests import LoRA

if sys.version_info >= (3, 11):
    from typing import Unpack
else:  # pragma: no cover - Python 3.10
    from typing_extensions import Unpack

__all__ = ["AudioFields", "ImageFields", "LoRAInput", "MeshFields", "Unpack", "VideoFields"]

LoRAInput = LoRA | str | tuple[str, float]
"""A LoRA: `LoRA(...)`, a path or hub id, or a `(path, scale)` pair."""


class _CommonFields(TypedDict, total=False):
    negative_prompt: str | None
    """What to steer away from."""
    seed: int | None
    """Seed of the first output; output `i` uses `seed + i`."""
    n: int
    """How many outputs to make."""
    steps: int | None
    """Denoising / sampling steps."""
    guidance: float | None
    """Classifier-free guidance scale."""
    options: Mapping[str, Any]
    """Provider-specific settings."""


class ImageFields(_CommonFields, total=False):
    """`ImageRequest` fields besides the prompt."""

    width: int | None
    height: int | None
    aspect_ratio: str | None
    image: ImageInput | None
    mask: ImageInput | None
    images: Sequence[ImageInput] | None
    strength: float | None
    control_image: ImageInput | None
    control_model: str | None
    control_scale: float | None
    loras: Sequence[LoRAInput]
    output_format: Literal["png", "jpeg", "webp"] | None


class VideoFields(_CommonFields, total=False):
    """`VideoRequest` fields besides the prompt."""

    width: int | None
    height: int | None
    frames: int | None
    duration_s: float | None
    fps: float | None
    image: ImageInput | None


class AudioFields(_CommonFields, total=False):
    """`AudioRequest` fields besides the prompt."""

    kind: Literal["music", "sound", "speech"] | None
    duration_s: float | None
    voice: str | None
    sample_rate: int | None


class MeshFields(_CommonFields, total=False):
    """`MeshRequest` fields besides the prompt."""

    image: ImageInput | None
    format: Literal["glb", "obj", "ply"]
