"""When a failed call is worth another try, and how long to wait before it.

This module knows nothing about Replicate or httpx: it is the policy (attempts, exponential backoff
with jitter, `Retry-After`) that the transport applies. It is meant to move into mediagen's shared
policy layer later (issue 6) unchanged.

Which calls may be retried at all is the caller's decision, and for Replicate it is a strict one:
reads and cancels are retried freely, but a create is retried only when the prediction provably was
not created, because each create is a billable prediction.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

__all__ = ["RETRYABLE_STATUSES", "RetryPolicy", "parse_retry_after"]

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP statuses that may pass if the same request is sent again."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often to retry, and how long to wait between tries.

    The wait before retry `k` (1-based) is `base_delay_s * 2**(k-1)`, capped at `max_delay_s`, with
    up to `jitter` of it taken off at random so that many clients throttled at the same moment do
    not all come back at the same moment. A `Retry-After` from the server is a floor, never cut.

    Examples:
        >>> policy = RetryPolicy(base_delay_s=0.5, jitter=0.0)
        >>> [policy.delay(k) for k in (1, 2, 3)]
        [0.5, 1.0, 2.0]
        >>> policy.delay(1, retry_after=3.0)
        3.0
    """

    max_attempts: int = 10
    """Tries in all, the first included."""
    base_delay_s: float = 0.2
    """Wait before the first retry (before jitter)."""
    max_delay_s: float = 20.0
    """Longest computed wait; a longer `Retry-After` is still honoured."""
    jitter: float = 0.5
    """Fraction of each computed wait that may be removed at random (0 turns jitter off)."""
    max_retry_after_s: float = 120.0
    """A `Retry-After` longer than this is not waited out: the error is raised instead."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be within [0, 1]")

    def delay(self, attempt: int, retry_after: float | None = None, *, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number `attempt`.

        Args:
            attempt: 1 for the wait after the first failure, 2 after the second, and so on.
            retry_after: What the server asked for (`Retry-After`), if it said.
            rng: Source of jitter (tests pass a seeded one).

        Returns:
            The wait in seconds, never negative.
        """
        exponent = max(0, attempt - 1)
        # 2**exponent overflows a float long before the cap matters; stop growing once capped.
        backoff = self.max_delay_s if exponent > 60 else min(self.max_delay_s, self.base_delay_s * 2.0**exponent)
        backoff *= 1.0 - self.jitter * (rng or random).random()
        if retry_after is not None and retry_after > backoff:
            return retry_after
        return max(0.0, backoff)

    def gives_up_after(self, attempt: int, retry_after: float | None = None) -> bool:
        """Whether to stop after `attempt` tries: they are used up, or the server asks too long a wait."""
        return attempt >= self.max_attempts or (retry_after is not None and retry_after > self.max_retry_after_s)

    @classmethod
    def from_settings(cls, settings: Any) -> RetryPolicy:
        """Read a retry policy from mediagen's shared policy layer (`mediagen.policies.RetryPolicy`).

        Args:
            settings: An object with `attempts`, `backoff_base_s`, `backoff_max_s`, `jitter` and
                `max_retry_after_s` (any missing one keeps this class's default).
        """
        defaults = cls()
        return cls(
            max_attempts=int(getattr(settings, "attempts", defaults.max_attempts)),
            base_delay_s=float(getattr(settings, "backoff_base_s", defaults.base_delay_s)),
            max_delay_s=float(getattr(settings, "backoff_max_s", defaults.max_delay_s)),
            jitter=float(getattr(settings, "jitter", defaults.jitter)),
            max_retry_after_s=float(getattr(settings, "max_retry_after_s", defaults.max_retry_after_s)),
        )


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Read a `Retry-After` header: delta seconds, or an HTTP date (ISO 8601 accepted too).

    Args:
        value: The header value, or None when there was none.
        now: The current time (`time.time()`), for tests.

    Returns:
        Seconds to wait (0 for a date in the past), or None when absent or unreadable.

    Examples:
        >>> parse_retry_after("2")
        2.0
        >>> parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0)
        10.0
        >>> parse_retry_after("soon") is None
        True
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    when: datetime | None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)
