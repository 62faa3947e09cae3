"""Translating what the Gemini API, `google-genai` and httpx raise into mediagen's error tree.

The Gemini API answers errors as `{"error": {"code", "message", "status", "details": [...]}}`:

==============================================  ===================================================
Gemini API says                                 mediagen raises
==============================================  ===================================================
400 `INVALID_ARGUMENT`, reason `API_KEY_INVALID`  `AuthenticationError` (a wrong key is a 400 here)
401, 403 `PERMISSION_DENIED`                    `AuthenticationError`
400 `FAILED_PRECONDITION` (billing, region)     `ProviderError` (not retryable)
400 `INVALID_ARGUMENT`                          `InvalidRequestError`
404 `NOT_FOUND`                                 `ModelNotFoundError`
429 `RESOURCE_EXHAUSTED`                        `RateLimitedError` (`RetryInfo.retryDelay`, or
                                                `Retry-After`)
5xx (`INTERNAL`, `UNAVAILABLE`)                 `ProviderError` (retryable)
no answer                                       `ProviderError`; retryable only if never sent
==============================================  ===================================================

What is sent again (`safe_to_repeat`) follows the OpenAI backend's rule: a 429, a 5xx (Google's
documented advice for both is to retry; the request produced nothing), or a connection that never
carried the request. A create whose connection dropped after it was sent is never repeated: the
Gemini API offers no way to find a Veo operation whose answer was lost, nor an idempotency key.
Reads (operation polls, downloads) are retried on any transient failure.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from mediagen.errors import (
    AuthenticationError,
    DeadlineExceededError,
    GenerationFailedError,
    InvalidRequestError,
    MediagenError,
    ModelNotFoundError,
    ProviderError,
    RateLimitedError,
    redact,
)
from mediagen.policies import parse_retry_after

__all__ = [
    "PROVIDER",
    "error_for_status",
    "error_for_body",
    "map_errors",
    "never_sent",
    "safe_to_repeat",
    "transient",
]

PROVIDER = "google"

_NEVER_SENT = frozenset({"ConnectError", "ConnectTimeout", "PoolTimeout", "UnsupportedProtocol", "LocalProtocolError"})
_TRANSPORT = frozenset(
    {
        "ConnectError",
        "ConnectTimeout",
        "PoolTimeout",
        "ReadTimeout",
        "WriteTimeout",
        "ReadError",
        "WriteError",
        "RemoteProtocolError",
        "LocalProtocolError",
        "NetworkError",
        "TimeoutException",
        "TransportError",
        "ProtocolError",
        "UnsupportedProtocol",
    }
)


def error_for_status(
    status: int,
    body: Any,
    *,
    headers: Mapping[str, str] | None = None,
    model: str | None = None,
    key_source: str = "GEMINI_API_KEY",
) -> MediagenError:
    """The mediagen error for an HTTP error status from the Gemini API.

    Args:
        status: The HTTP status.
        body: The decoded body (`{"error": {...}}`), or None.
        headers: The response headers (`Retry-After`).
        model: The model the call was about.
        key_source: Where the key came from, named in authentication errors.

    Returns:
        The error to raise.
    """
    error = body.get("error", body) if isinstance(body, Mapping) else {}
    if not isinstance(error, Mapping):
        error = {}
    message = str(error.get("message") or "no details given")
    code = str(error.get("status") or "")
    found = error.get("details")
    details: list[Any] = found if isinstance(found, list) else []
    reasons = {str(d.get("reason")) for d in details if isinstance(d, Mapping) and d.get("reason")}
    said = f"{status} {code}: {message}".replace(" :", ":")
    common: dict[str, Any] = {"provider": PROVIDER, "model": model, "status": status, "detail": message}
    if status in (401, 403) or "API_KEY_INVALID" in reasons or code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        return AuthenticationError(
            f"the Gemini API rejected the key ({said}). Check GEMINI_API_KEY (or GOOGLE_API_KEY, which wins "
            f"when both are set; this key came from {key_source}), or the api_key= passed to GoogleBackend.",
            **common,
        )
    if code == "FAILED_PRECONDITION":
        return ProviderError(
            f"the Gemini API cannot serve this account here ({said}): billing or region", retryable=False, **common
        )
    if status == 404 or code == "NOT_FOUND":
        return ModelNotFoundError(f"the Gemini API has no such model, or this key cannot use it ({said})", **common)
    if status == 429 or code == "RESOURCE_EXHAUSTED":
        retry_after = _retry_delay(details, headers)
        wait = f"; retry after {retry_after:g} s" if retry_after is not None else ""
        return RateLimitedError(
            f"the Gemini API is throttling requests ({said}){wait}", retry_after=retry_after, **common
        )
    if 400 <= status < 500:
        return InvalidRequestError(
            f"the Gemini API refused the request ({said})",
            errors=[{"loc": ("request",), "msg": message, "type": code or "invalid"}],
            **common,
        )
    if status >= 500:
        return ProviderError(f"the Gemini API had a server error ({said})", retryable=True, **common)
    return ProviderError(f"the Gemini API answered {said}", **common)


def error_for_body(status: int, text: str, headers: Mapping[str, str], **kw: Any) -> MediagenError:
    """`error_for_status` for a raw response body (JSON or not)."""
    try:
        body: Any = json.loads(text) if text else None
    except ValueError:
        body = {"error": {"message": text[:500]}}
    return error_for_status(status, body, headers=headers, **kw)


def _retry_delay(details: Sequence[Any], headers: Mapping[str, str] | None) -> float | None:
    for detail in details:
        if isinstance(detail, Mapping) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)s\s*", str(detail.get("retryDelay", "")))
            if match:
                return float(match[1])
    return parse_retry_after({k.lower(): v for k, v in (headers or {}).items()}.get("retry-after"))


def _names(exc: BaseException) -> Iterator[str]:
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return
        for cls in type(seen).__mro__:
            yield cls.__name__
        seen = seen.__cause__ or seen.__context__


def never_sent(exc: BaseException) -> bool:
    """Whether a failure happened before any byte of the request left this machine (httpx or httpx2)."""
    return any(name in _NEVER_SENT for name in _names(exc))


def _is_transport(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "aiohttp") and any(
        name in _TRANSPORT for name in _names(exc)
    )


def transport_error(exc: BaseException, *, model: str | None, secrets: Sequence[str | None]) -> ProviderError:
    """The error for a request that got no answer; retryable only when it was never sent."""
    text = redact(f"{type(exc).__name__}: {exc}", *secrets)
    if never_sent(exc):
        return ProviderError(
            f"could not connect to the Gemini API ({text})", provider=PROVIDER, model=model, retryable=True
        )
    return ProviderError(
        f"lost the connection to the Gemini API after the request was sent ({text})",
        provider=PROVIDER,
        model=model,
        retryable=False,
    )


def safe_to_repeat(error: BaseException) -> bool:
    """Whether a failed billable request may be sent again without paying twice (module docs)."""
    if isinstance(error, RateLimitedError):
        return error.retryable
    if isinstance(error, ProviderError):
        return error.retryable if error.status is None else error.status >= 500
    return False


def transient(error: BaseException) -> bool:
    """Whether a failed read (a poll, a download) may pass if tried again: any lost answer too."""
    if isinstance(error, ProviderError) and error.status is None:
        return True  # a read repeated costs nothing
    return safe_to_repeat(error)


@contextlib.contextmanager
def map_errors(
    *,
    model: str | None = None,
    secrets: Sequence[str | None] = (),
    key_source: str = "GEMINI_API_KEY",
    deadline_passed: Callable[[], bool] | None = None,
) -> Iterator[None]:
    """Turn `google-genai`, httpx and httpx2 exceptions raised inside the block into `MediagenError`s.

    Raises:
        MediagenError: What the vendor exception means.
    """
    try:
        yield
    except MediagenError:
        raise
    except Exception as exc:
        from google.genai import errors as genai_errors

        if isinstance(exc, genai_errors.APIError):
            response = getattr(exc, "response", None)
            headers = dict(getattr(response, "headers", None) or {})
            raise error_for_status(
                int(exc.code or 500), exc.details, headers=headers, model=model, key_source=key_source
            ) from exc
        if _is_transport(exc):
            if "Timeout" in type(exc).__name__ and deadline_passed is not None and deadline_passed():
                raise DeadlineExceededError(
                    "the job's deadline passed while the Gemini API was still working; raise timeout=",
                    provider=PROVIDER,
                    model=model,
                ) from exc
            raise transport_error(exc, model=model, secrets=secrets) from exc
        raise


def refusal(reason: str, *, model: str, detail: str | None = None) -> GenerationFailedError:
    """The error for content Google's filters blocked (never worth a retry or a fallback)."""
    return GenerationFailedError(
        f"Google's safety filters blocked the output ({reason})",
        refused=True,
        retryable=False,
        provider=PROVIDER,
        model=model,
        detail=detail,
    )
