"""Fallback chains: which failures move a request on to the next backend.

A request moves on only for failures another backend can fix: the provider is down or throttling,
the local device ran out of memory, one attempt ran out of time, the backend is not installed or
not authorised here. It never moves on for an invalid request or a content refusal: another
backend would refuse it too, and trying would only cost money.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .errors import (
    AuthenticationError,
    DeadlineExceededError,
    GenerationFailedError,
    InvalidRequestError,
    MediagenError,
    ModelNotFoundError,
    ProviderError,
    RateLimitedError,
    UnsupportedRequestError,
)

__all__ = ["should_fall_back", "Cooldowns"]


def should_fall_back(error: BaseException) -> bool:
    """Whether the next member of a chain might succeed where this one failed.

    Args:
        error: What the backend raised.
    """
    if isinstance(error, ImportError):
        return True  # the provider's extra is missing here; another provider may be installed
    if isinstance(error, (InvalidRequestError,)):
        return False
    if isinstance(error, GenerationFailedError):
        return not error.refused
    if isinstance(
        error,
        (
            RateLimitedError,
            DeadlineExceededError,
            AuthenticationError,
            ModelNotFoundError,
            UnsupportedRequestError,
        ),
    ):
        return True
    if isinstance(error, ProviderError):
        return error.retryable or error.status in (402, 403)
    if isinstance(error, MediagenError):
        return error.retryable
    return False


@dataclass
class Cooldowns:
    """Backends that just failed with an outage are skipped for a while.

    Args:
        seconds: How long a failed backend is skipped.
    """

    seconds: float = 30.0
    _until: dict[str, float] = field(default_factory=dict)

    def trip(self, model: str, error: BaseException, seconds: float | None = None) -> None:
        """Start a cooldown for `model` if `error` looks like an outage, throttling or a hang.

        Args:
            model: The model string (`provider:model`).
            error: What the attempt failed with.
            seconds: The cooldown for this model (its provider's policy); `self.seconds` when None.
        """
        length = self.seconds if seconds is None else seconds
        if length <= 0:
            return
        if isinstance(error, RateLimitedError):
            self._until[model] = time.monotonic() + max(length, error.retry_after or 0.0)
        elif (isinstance(error, ProviderError) and error.retryable) or isinstance(error, DeadlineExceededError):
            # A hung attempt costs every later job its attempt deadline: treat it like an outage.
            self._until[model] = time.monotonic() + length

    def cooling(self, model: str) -> float:
        """Seconds left in `model`'s cooldown (0 when it may be tried)."""
        left = self._until.get(model, 0.0) - time.monotonic()
        if left <= 0:
            self._until.pop(model, None)
            return 0.0
        return left

    def clear(self, model: str) -> None:
        """End `model`'s cooldown (it just succeeded)."""
        self._until.pop(model, None)
