"""OpenAI's models as mediagen sees them: what each does, what sizes it takes, what was retired.

Facts from the official client's `ImageModel` and `SpeechModel` types (openai-python 3.57) and the
parameter docs there: the GPT image models that take any `WIDTHxHEIGHT` (sides multiples of 16,
aspect ratio within 1:3..3:1, at most 3840x2160), the ones that take only the three standard sizes,
and the dates models were retired or shut down.
"""

from __future__ import annotations

from dataclasses import dataclass

from mediagen.backend import Capabilities
from mediagen.errors import ModelNotFoundError, UnsupportedRequestError
from mediagen.requests import Task

from .errors import PROVIDER

__all__ = [
    "ImageModelInfo",
    "SpeechModelInfo",
    "IMAGE_MODELS",
    "SPEECH_MODELS",
    "RETIRED",
    "SPEECH_SHUTDOWN",
    "STANDARD_SIZES",
    "MAX_EDGE",
    "MAX_PIXELS",
    "resolve",
]

STANDARD_SIZES = ((1024, 1024), (1536, 1024), (1024, 1536))
"""The sizes every GPT image model takes."""
MAX_EDGE = 3840
MAX_PIXELS = 3840 * 2160
MAX_IMAGES_PER_CALL = 10
MAX_EDIT_IMAGES = 16
SPEECH_SHUTDOWN = "2027-01-06"
"""The announced shutdown date of every speech model in the official client (3.57)."""

_IMAGE_TASKS: frozenset[Task] = frozenset({"text-to-image", "image-to-image", "inpaint"})
_SPEECH_TASKS: frozenset[Task] = frozenset({"text-to-speech", "text-to-audio"})


@dataclass(frozen=True)
class ImageModelInfo:
    """One GPT image model."""

    name: str
    arbitrary_sizes: bool
    """Takes any `WxH` within the limits; otherwise only `STANDARD_SIZES`."""
    extra_qualities: frozenset[str] = frozenset()
    """Qualities beyond low / medium / high / auto (`xhigh`, `max` on the 2.5 models)."""
    known: bool = True
    """False for a model name outside the table (treated like the standard-size models)."""

    def capabilities(self) -> Capabilities:
        """Tasks and limits for the client's checks."""
        edge = MAX_EDGE if self.arbitrary_sizes else 1536
        return Capabilities(
            tasks=_IMAGE_TASKS, max_outputs_per_call=MAX_IMAGES_PER_CALL, max_width=edge, max_height=edge
        )


@dataclass(frozen=True)
class SpeechModelInfo:
    """One text-to-speech model."""

    name: str
    instructions: bool
    """Takes `instructions` (the tts-1 models do not)."""
    known: bool = True

    def capabilities(self) -> Capabilities:
        """Tasks and limits for the client's checks."""
        return Capabilities(tasks=_SPEECH_TASKS, max_outputs_per_call=1)


_ARBITRARY = (
    "gpt-image-2",
    "gpt-image-2-2026-04-21",
    "gpt-image-2.5-sunburst",
    "gpt-image-2.5-sunburst-2026-09-08",
    "gpt-image-2.5-flare",
    "gpt-image-2.5-flare-2026-09-08",
)
_STANDARD = (
    "gpt-image-1.5",
    "gpt-image-1-mini",
    "chatgpt-image-latest",
    "gpt-image-2.6-sunburst",
    "gpt-image-2.6-flare",
)

IMAGE_MODELS: dict[str, ImageModelInfo] = {
    **{
        name: ImageModelInfo(
            name, True, frozenset({"xhigh", "max"}) if name.startswith("gpt-image-2.5") else frozenset()
        )
        for name in _ARBITRARY
    },
    **{name: ImageModelInfo(name, False) for name in _STANDARD},
}
SPEECH_MODELS: dict[str, SpeechModelInfo] = {
    "gpt-4o-mini-tts": SpeechModelInfo("gpt-4o-mini-tts", True),
    "gpt-4o-mini-tts-2025-12-15": SpeechModelInfo("gpt-4o-mini-tts-2025-12-15", True),
    "tts-1": SpeechModelInfo("tts-1", False),
    "tts-1-hd": SpeechModelInfo("tts-1-hd", False),
}
RETIRED: dict[str, tuple[str, str]] = {
    "dall-e-2": ("was retired on 2026-05-12", "gpt-image-2"),
    "dall-e-3": ("was retired on 2026-05-12", "gpt-image-2"),
    "gpt-image-1": ("was shut down on 2026-10-23", "gpt-image-2.5-sunburst (or gpt-image-2.5-flare)"),
}
"""Model → (what happened, the successor to use)."""


def resolve(model: str, modality: str) -> ImageModelInfo | SpeechModelInfo:
    """What `model` is, or an error that says what to use instead; nothing is sent.

    A name outside the table is taken at its word by the request's modality (a new snapshot need
    not wait for a mediagen release); the backend warns that it is unknown.

    Raises:
        ModelNotFoundError: A retired model (the message names its successor).
        UnsupportedRequestError: A Sora model (the Sora API is shut down) or an unknown model for
            video or 3D.
    """
    if model in RETIRED:
        what, successor = RETIRED[model]
        raise ModelNotFoundError(
            f"openai:{model} {what}; use openai:{successor} instead",
            provider=PROVIDER,
            model=model,
            retryable=False,
        )
    if model.startswith("sora"):
        raise UnsupportedRequestError(
            f"openai:{model}: OpenAI shut the Sora (videos) API down on 2026-09-24; for video use a "
            "google:veo-... or fal: model",
            feature="video",
            supported_by=["google", "fal"],
            provider=PROVIDER,
            model=model,
        )
    if model in IMAGE_MODELS:
        return IMAGE_MODELS[model]
    if model in SPEECH_MODELS:
        return SPEECH_MODELS[model]
    if modality == "image":
        return ImageModelInfo(model, False, known=False)
    if modality == "audio":
        return SpeechModelInfo(model, instructions="tts-1" not in model, known=False)
    raise UnsupportedRequestError(
        f"openai:{model} cannot make {modality}: the OpenAI backend makes images and speech",
        feature=modality,
        supported_by=["google", "fal"] if modality == "video" else ["fal"],
        provider=PROVIDER,
        model=model,
    )
