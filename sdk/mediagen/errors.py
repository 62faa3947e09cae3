"""The errors mediagen raises.

Every error a user should handle is a `MediagenError`::

    MediagenError
    ├── InvalidRequestError        the request itself is wrong (also a ValueError)
    ├── UnsupportedRequestError    valid, but this backend/model cannot serve it
    ├── AuthenticationError        missing or rejected credentials
    ├── RateLimitedError           the provider asked us to slow down (retry_after)
    ├── ProviderError              the provider answered with an error (status, detail)
    │   └── EndpointUnreachableError   no connection at all (refused, unknown host)
    ├── GenerationFailedError      the model ran and failed (or refused)
    ├── DeadlineExceededError      the job's deadline passed (also a TimeoutError)
    ├── ModelNotFoundError         unknown provider, model or version
    ├── DownloadError              an output could not be fetched
    │   └── MediaTooLargeError     media past a configured bound (bytes, outputs, decoded size)
    ├── OutputExistsError          a save would replace a file (also a FileExistsError)
    ├── BudgetExceededError        a configured spending cap would be passed
    ├── ConfigError                mediagen is set up wrongly: a config file, a setting, a secret
    └── AllBackendsFailedError     every member of a fallback chain failed (holds each error)

Cancellation is asyncio's own `CancelledError`. Programmer mistakes (using a closed client, calling
the async client without a loop) are plain `RuntimeError`s outside this tree.

Errors carry `provider`, `model`, `status`, `detail`, `retry_after` and `retryable`, and they
pickle (a job's error may cross a process boundary). Their `message` and `detail` never hold a
known secret: `redact` hides the values given to `register_secret` (providers register their
tokens), those of the usual token variables in the environment (`SECRET_ENV_VARS`), and anything
shaped like a token, whatever text it came in (a server echoing the token in a 401 body included).
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

__all__ = [
    "MediagenError",
    "InvalidRequestError",
    "UnsupportedRequestError",
    "AuthenticationError",
    "RateLimitedError",
    "ProviderError",
    "EndpointUnreachableError",
    "GenerationFailedError",
    "DeadlineExceededError",
    "ModelNotFoundError",
    "DownloadError",
    "BudgetExceededError",
    "AllBackendsFailedError",
    "MediaTooLargeError",
    "OutputExistsError",
    "ConfigError",
    "redact",
]

# Tokens look like `r8_...`, `hf_...` or bearer strings; they never belong in a message.
_SECRET_PATTERNS = [
    re.compile(r"\b(r8|hf|sk)_[A-Za-z0-9]{6,}"),
    re.compile(r"(?i)(bearer|token)\s+[A-Za-z0-9_\-\.]{8,}"),
    re.compile(r"whsec_[A-Za-z0-9+/=]{8,}"),
]


SECRET_ENV_VARS = (
    "REPLICATE_API_TOKEN",
    "OPENAI_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "FAL_KEY",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
)
"""Environment variables whose values are credentials: hidden from every message, like registered secrets."""

# Secrets known by value (a token passed to a constructor); a set of strings for the process's life.
_registered: set[str] = set()
_registered_lock = threading.Lock()
# A registered or environment value shorter than this is not hidden everywhere: replacing a short,
# common string ("test") would garble messages and hide nothing worth hiding.
_MIN_KNOWN_SECRET = 8


def register_secret(value: str | None) -> None:
    """Hide `value` from every later error message, `detail`, log line and CLI JSON output.

    Providers call it with the credentials they are given (a constructor's `api_token`), so that
    text quoted from the network (a server echoing the token in a 401 body) cannot show it.

    Args:
        value: The secret; values shorter than 8 characters are ignored (see `redact` to hide
            those in one text).
    """
    if isinstance(value, str) and len(value) >= _MIN_KNOWN_SECRET:
        with _registered_lock:
            _registered.add(value)


def known_secrets() -> tuple[str, ...]:
    """The secret values `redact` hides in every text: the registered ones and `SECRET_ENV_VARS`'."""
    with _registered_lock:
        found = set(_registered)
    for name in SECRET_ENV_VARS:
        value = os.environ.get(name)
        if value and len(value) >= _MIN_KNOWN_SECRET:
            found.add(value)
    # Longest first, so a secret that contains another is hidden whole.
    return tuple(sorted(found, key=len, reverse=True))


def redact(text: str, *secrets: str | None) -> str:
    """Hide credentials in `text`: the given secrets, the known ones, and anything shaped like a token.

    Args:
        text: The message that may contain a secret.
        *secrets: More secret values to hide wherever they appear (4 characters or more).

    Returns:
        The message with each secret replaced by `***`.
    """
    given = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
    for secret in (*given, *known_secrets()):
        text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(0)[:3] + "***", text)
    return text


class MediagenError(Exception):
    """Base of every error mediagen raises on purpose.

    Attributes:
        message: What happened and what to do about it.
        provider: The provider involved (`"replicate"`), when known.
        model: The model part of the model string, when known.
        status: The HTTP status the provider answered with, when there was one.
        detail: The provider's own words, unconverted.
        retry_after: Seconds the provider asked us to wait before trying again.
        retryable: Whether the same request may succeed if sent again (or elsewhere).
    """

    retryable_default: bool = False

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        model: str | None = None,
        status: int | None = None,
        detail: str | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
    ) -> None:
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.model = model
        self.status = status
        self.detail = redact(detail) if detail else detail
        self.retry_after = retry_after
        self.retryable = self.retryable_default if retryable is None else retryable

    def _kwargs(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "status": self.status,
            "detail": self.detail,
            "retry_after": self.retry_after,
            "retryable": self.retryable,
        }

    def __reduce__(self) -> Any:
        # Keyword-only constructors don't survive the default pickling of exceptions.
        return (_rebuild, (type(self), self.message, self._kwargs(), self._extra()))

    def _extra(self) -> dict[str, Any]:
        return {}

    def __str__(self) -> str:
        where = ":".join(p for p in (self.provider, self.model) if p)
        return f"{self.message} [{where}]" if where and where not in self.message else self.message


def _rebuild(cls: type[MediagenError], message: str, kwargs: dict[str, Any], extra: dict[str, Any]) -> Any:
    err = cls.__new__(cls)
    MediagenError.__init__(err, message, **kwargs)
    err.__dict__.update(extra)
    return err


class InvalidRequestError(MediagenError, ValueError):
    """The request is invalid: fix the request, sending it again will not help.

    Attributes:
        errors: pydantic-style error dicts (`loc`, `msg`, `type`) when validation produced them.
    """

    def __init__(self, message: str, *, errors: list[dict[str, Any]] | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.errors = errors or []

    def _extra(self) -> dict[str, Any]:
        return {"errors": self.errors}


class UnsupportedRequestError(MediagenError):
    """The request is valid but this backend or model cannot serve it.

    Attributes:
        feature: The request field or task that cannot be honoured.
        supported_by: Providers that could serve it.
    """

    def __init__(
        self, message: str, *, feature: str | None = None, supported_by: list[str] | None = None, **kw: Any
    ) -> None:
        super().__init__(message, **kw)
        self.feature = feature
        self.supported_by = supported_by or []

    def _extra(self) -> dict[str, Any]:
        return {"feature": self.feature, "supported_by": self.supported_by}


class AuthenticationError(MediagenError):
    """Credentials are missing or were rejected."""


class RateLimitedError(MediagenError):
    """The provider is throttling us; wait `retry_after` seconds."""

    retryable_default = True


class ProviderError(MediagenError):
    """The provider answered with an error; `status` and `detail` say which."""

    def __init__(self, message: str, **kw: Any) -> None:
        status = kw.get("status")
        if kw.get("retryable") is None:
            # Server-side trouble may pass; a 4xx will not change by sending it again.
            kw["retryable"] = status is None or status >= 500 or status in (408, 409)
        super().__init__(message, **kw)


class EndpointUnreachableError(ProviderError):
    """The provider's endpoint could not be reached at all: connection refused, unknown host.

    Nothing was sent, so trying again is safe; but an endpoint that is down usually stays down for
    a while, so inside a fallback chain the member gives way after one quick retry (see
    `mediagen.policies.fast_failover`) instead of riding out its whole retry budget.
    """


class GenerationFailedError(MediagenError):
    """The model ran but produced no result (an error in the model, out of memory, a refusal).

    Attributes:
        refused: True when the provider refused the content (never worth a fallback).
    """

    def __init__(self, message: str, *, refused: bool = False, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.refused = refused

    def _extra(self) -> dict[str, Any]:
        return {"refused": self.refused}


class DeadlineExceededError(MediagenError, TimeoutError):
    """The job's deadline passed before it finished; the work was cancelled."""

    retryable_default = True


class ModelNotFoundError(MediagenError):
    """The provider, model or version does not exist (or is not visible to you)."""


class DownloadError(MediagenError):
    """An artifact could not be downloaded (network, size cap, unexpected content)."""

    def __init__(self, message: str, **kw: Any) -> None:
        if kw.get("retryable") is None:
            # A dropped connection or a 5xx may pass; a 404 or an oversized body will not.
            status = kw.get("status")
            kw["retryable"] = status is None or status >= 500 or status in (408, 429)
        super().__init__(message, **kw)


class BudgetExceededError(MediagenError):
    """Running this job would pass the configured budget."""


class AllBackendsFailedError(MediagenError):
    """Every backend of a fallback chain failed.

    Attributes:
        errors: `(model string, error)` for each attempt, in order.
    """

    def __init__(self, message: str, *, errors: list[tuple[str, BaseException]] | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.errors = errors or []

    def _extra(self) -> dict[str, Any]:
        return {"errors": self.errors}


class MediaTooLargeError(DownloadError):
    """Media passed a configured bound (bytes, outputs, decoded size); never retryable.

    The bounds: a body's bytes, a result's outputs or total bytes, the decoded size of an image,
    a video or a sound. Sending the same request again gives media just as large.

    Attributes:
        limit: The bound that was passed, in its own unit (bytes or outputs).
    """

    def __init__(self, message: str, *, limit: int | None = None, **kw: Any) -> None:
        kw.setdefault("retryable", False)
        super().__init__(message, **kw)
        self.limit = limit

    def _extra(self) -> dict[str, Any]:
        return {"limit": self.limit}


class OutputExistsError(MediagenError, FileExistsError):
    """A save would replace an existing file; pass `overwrite=True` (`--overwrite`) to allow it.

    Attributes:
        path: The file that is already there.
    """

    def __init__(self, message: str, *, path: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.path = path

    def _extra(self) -> dict[str, Any]:
        return {"path": self.path}


class ConfigError(MediagenError, ValueError):
    """mediagen is set up wrongly: a config file it may not trust, an invalid setting, a bad secret.

    Raised before anything is sent; the message says what to change.
    """
