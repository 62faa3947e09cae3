"""`options={...}` for Replicate: a few settings of our own, and raw model inputs for the rest.

Keys named here are settings of the backend. Any other key is a raw input of the model, passed on as
it is after the model's schema has checked it (`options={"output_quality": 95, "go_fast": False}`).
A raw input whose name collides with a setting goes under `input` instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mediagen.backend import parse_options

from .errors import PROVIDER
from .webhooks import WebhookEvent

__all__ = ["ReplicateOptions"]


class ReplicateOptions(BaseModel):
    """Settings a request can give the Replicate backend through `options`.

    Examples:
        >>> ReplicateOptions.parse({"wait": 10, "go_fast": False}).model_inputs
        {'go_fast': False}
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    webhook: str | None = None
    """URL Replicate POSTs the prediction to as it changes; check deliveries with `verify_webhook`."""
    webhook_events_filter: list[WebhookEvent] | None = None
    """Which changes trigger the webhook: `start`, `output`, `logs`, `completed`."""
    wait: int | bool | None = Field(None)
    """Seconds to hold the create call open for the result (sync mode, 1-60); False polls from the
    start; None uses the backend's `sync_wait_s`."""
    download: bool = False
    """Fetch outputs before returning (streamed, size-capped, type-sniffed) instead of on first use."""
    input: dict[str, Any] = Field(default_factory=dict)
    """Raw model inputs, for names that collide with the settings above."""

    @field_validator("wait")
    @classmethod
    def _wait_range(cls, value: int | bool | None) -> int | bool | None:
        if isinstance(value, bool) or value is None:
            return value
        if not 1 <= value <= 60:
            raise ValueError("wait must be between 1 and 60 seconds (Replicate holds a request at most 60 s)")
        return value

    @field_validator("webhook")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("webhook must be an http(s) URL Replicate can POST to")
        return value

    @property
    def model_inputs(self) -> dict[str, Any]:
        """Raw inputs for the model: unknown keys, then `input` over them."""
        return {**(self.model_extra or {}), **self.input}

    @classmethod
    def parse(cls, options: Mapping[str, Any], *, model: str | None = None) -> ReplicateOptions:
        """Validate a request's `options`.

        Raises:
            InvalidRequestError: A setting has the wrong type or value (the message names it).
        """
        return parse_options(cls, options, label="Replicate", provider=PROVIDER, model=model)
