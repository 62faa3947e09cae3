"""`options={...}` for OpenAI: the API's own settings that mediagen's requests have no field for.

Unknown keys are refused (with the list of known ones), so a typo never silently does nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mediagen.backend import parse_options

from .errors import PROVIDER

__all__ = ["OpenAIOptions"]


class OpenAIOptions(BaseModel):
    """Settings a request can give the OpenAI backend through `options`.

    Examples:
        >>> OpenAIOptions.parse({"quality": "high", "background": "transparent"}).quality
        'high'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # -- images ---------------------------------------------------------------------------------------
    quality: Literal["low", "medium", "high", "auto", "xhigh", "max"] | None = None
    """Rendering quality (`xhigh` and `max` on the gpt-image-2.5 models only); None: the model's `auto`."""
    background: Literal["transparent", "opaque", "auto"] | None = None
    """`transparent` needs `output_format` png or webp."""
    output_compression: int | None = Field(None, ge=0, le=100)
    """JPEG / WebP compression, 0-100."""
    moderation: Literal["low", "auto"] | None = None
    """Content-moderation level of generations."""
    input_fidelity: Literal["high", "low"] | None = None
    """How closely edits keep the input images' features (not for gpt-image-2)."""
    size: str | None = Field(None, pattern=r"^(auto|\d{2,4}x\d{2,4})$")
    """The API's `size` as is (`"auto"` or `"WxH"`), instead of width / height / aspect_ratio."""
    safety_identifier: str | None = Field(None, max_length=256)
    """A stable, hashed id of your end user, for OpenAI's abuse monitoring."""

    # -- speech ---------------------------------------------------------------------------------------
    format: Literal["wav", "pcm", "mp3", "flac", "opus", "aac"] = "wav"
    """Speech encoding; `wav` (the default) and `pcm` come back as WAV."""
    speed: float | None = Field(None, ge=0.25, le=4.0)
    """Speaking speed, 0.25-4.0."""
    instructions: str | None = Field(None, max_length=4096)
    """How to speak (tone, accent, pace); gpt-4o-mini-tts only."""

    @classmethod
    def parse(cls, options: Mapping[str, Any], *, model: str | None = None) -> OpenAIOptions:
        """Validate a request's `options`.

        Raises:
            InvalidRequestError: An unknown key, or a setting with the wrong type or value.
        """
        return parse_options(cls, options, label="OpenAI", provider=PROVIDER, model=model)
