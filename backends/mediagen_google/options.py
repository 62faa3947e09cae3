"""`options={...}` for Google: API settings that mediagen's requests have no field for.

Unknown keys are refused (with the list of known ones), so a typo never silently does nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mediagen.backend import parse_options

from .errors import PROVIDER

__all__ = ["GoogleOptions"]


class GoogleOptions(BaseModel):
    """Settings a request can give the Google backend through `options`.

    Examples:
        >>> GoogleOptions.parse({"person_generation": "allow_adult"}).person_generation
        'allow_adult'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    person_generation: Literal["dont_allow", "allow_adult", "allow_all"] | None = None
    """Whether people may appear (Imagen, Veo); None: the API's default."""
    image_size: Literal["1K", "2K"] | None = None
    """Imagen's output size (standard and ultra); None: from width / height, else 1K."""
    resolution: Literal["720p", "1080p"] | None = None
    """Veo's output resolution; None: from height, else the model's default (720p)."""
    enhance_prompt: bool | None = None
    """Let Veo rewrite the prompt."""
    system_instruction: str | None = Field(None, max_length=20_000)
    """Gemini image models: standing instructions before the prompt."""
    download: bool = False
    """Veo: fetch the video before returning, instead of on first use."""

    @classmethod
    def parse(cls, options: Mapping[str, Any], *, model: str | None = None) -> GoogleOptions:
        """Validate a request's `options`.

        Raises:
            InvalidRequestError: An unknown key, or a setting with the wrong type or value.
        """
        return parse_options(cls, options, label="Google", provider=PROVIDER, model=model)
