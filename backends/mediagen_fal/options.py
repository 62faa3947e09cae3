"""`options={...}` for fal: a few settings of our own, and raw app inputs for the rest.

Keys named here are settings of the backend. Any other key is an input of the app, sent as it is
(`options={"enable_safety_checker": False, "acceleration": "high"}`); one whose name collides with a
setting goes under `input` instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mediagen.backend import parse_options

from .errors import PROVIDER

__all__ = ["FalOptions"]


class FalOptions(BaseModel):
    """Settings a request can give the fal backend through `options`.

    Examples:
        >>> FalOptions.parse({"priority": "low", "acceleration": "high"}).app_inputs
        {'acceleration': 'high'}
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    webhook: str | None = None
    """URL fal POSTs the outcome to when the job ends (the `fal_webhook` query parameter); the job is
    still polled, so the result comes back here too."""
    priority: Literal["normal", "low"] | None = None
    """Queue priority (`X-Fal-Queue-Priority`)."""
    hint: str | None = Field(None, max_length=200)
    """Runner hint (`X-Fal-Runner-Hint`), for apps that route by it."""
    start_timeout: float | None = Field(None, gt=1.0)
    """Seconds the job may wait in the queue before fal gives up on it (`X-Fal-Request-Timeout`);
    by default the time left before the job's deadline."""
    download: bool = False
    """Fetch outputs before returning (streamed, size-capped) instead of on first use."""
    input: dict[str, Any] = Field(default_factory=dict)
    """Raw app inputs, for names that collide with the settings above."""

    @field_validator("webhook")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("webhook must be an http(s) URL fal can POST to")
        return value

    @property
    def app_inputs(self) -> dict[str, Any]:
        """Raw inputs for the app: unknown keys, then `input` over them."""
        return {**(self.model_extra or {}), **self.input}

    @classmethod
    def parse(cls, options: Mapping[str, Any], *, model: str | None = None) -> FalOptions:
        """Validate a request's `options`.

        Raises:
            InvalidRequestError: A setting has the wrong type or value (the message names it).
        """
        return parse_options(cls, options, label="fal", provider=PROVIDER, model=model)
