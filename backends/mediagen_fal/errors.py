"""Translating what fal's queue and httpx say into mediagen's error tree, at one boundary.

=================================  ============================================================
fal says                           mediagen raises
=================================  ============================================================
401 / 403                          `AuthenticationError` (names `FAL_KEY`)
404 on submit                      `ModelNotFoundError` (no such app id)
404 on status / result / cancel    `ProviderError` (the request id is unknown there)
400 / 422 on submit                `InvalidRequestError` (fal's `detail` list kept in `errors`)
422 from a completed job           `InvalidRequestError` (the app validated the input)
429                                `RateLimitedError` with `retry_after`
5xx                                `ProviderError` (retryable)
connection trouble, timeouts       `ProviderError` (retryable)
a completed job with an error      `GenerationFailedError` (`refused` for content filters)
our deadline                       `DeadlineExceededError`
=================================  ============================================================
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mediagen.errors import (
    AuthenticationError,
    GenerationFailedError,
    InvalidRequestError,
    MediagenError,
    ModelNotFoundError,
    ProviderError,
    RateLimitedError,
    redact,
)
from mediagen.policies import parse_retry_after

if TYPE_CHECKING:
    import httpx

__all__ = [
    "PROVIDER",
    "ENV_KEY",
    "error_for_response",
    "error_for_status",
    "error_for_job",
    "transport_error",
    "parse_retry_after",
]

PROVIDER = "fal"
ENV_KEY = "FAL_KEY"

# fal's content checkers answer with messages like "NSFW content detected" or a
# `content_policy_violation` type; a refusal is no reason to try again or elsewhere.
_REFUSAL_MARKERS = ("nsfw", "content_policy", "content policy", "safety", "flagged")


def error_for_status(
    status: int,
    *,
    detail: Any = None,
    retry_after: float | None = None,
    model: str | None = None,
    kind: str = "submit",
) -> MediagenError:
    """The mediagen error for an HTTP error status from fal.

    Args:
        status: The HTTP status.
        detail: fal's `detail` (a string, or pydantic's list of `{loc, msg, type}`).
        retry_after: Seconds from `Retry-After`.
        model: The app id the call was about.
        kind: Which call: `submit`, `status`, `result`, `cancel`, `upload`.

    Returns:
        The error to raise.
    """
    said = _said(detail)
    common: dict[str, Any] = {"provider": PROVIDER, "model": model, "status": status, "detail": said}
    if status in (401, 403):
        return AuthenticationError(
            f"fal rejected the API key ({status}: {said}). Set {ENV_KEY}=<key id>:<key secret> in the "
            "environment, or pass FalBackend(key=...) (secrets never go in mediagen.toml).",
            **common,
        )
    if status == 404 and kind == "submit":
        return ModelNotFoundError(
            f"fal has no app {model!r}, or this key cannot see it (404: {said}). App ids look like "
            "'fal-ai/flux/schnell' (owner/alias[/path]).",
            **common,
        )
    if status == 404:
        return ProviderError(f"fal does not know this request any more (404 on {kind}: {said})", **common)
    if status in (400, 422) and kind in ("submit", "result"):
        errors = _pydantic_errors(detail)
        return InvalidRequestError(f"fal refused the input of {model} ({status}: {said})", errors=errors, **common)
    if status == 429:
        wait = f"; retry after {retry_after:g} s" if retry_after is not None else ""
        return RateLimitedError(f"fal is throttling requests (429: {said}){wait}", retry_after=retry_after, **common)
    if status >= 500:
        return ProviderError(f"fal had a server error ({status} on {kind}: {said})", retryable=True, **common)
    return ProviderError(f"fal answered {status} on {kind}: {said}", **common)


def error_for_response(response: httpx.Response, *, model: str | None = None, kind: str = "submit") -> MediagenError:
    """The mediagen error for an error response; its body must already be read."""
    detail: Any = None
    try:
        body = response.json()
        detail = body.get("detail", body) if isinstance(body, dict) else body
    except ValueError:
        text = response.text.strip()
        detail = text[:300] if text else None
    return error_for_status(
        response.status_code,
        detail=detail,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
        model=model,
        kind=kind,
    )


def error_for_job(
    status: int, body: Any, *, request_id: str, model: str | None, error_type: str | None = None
) -> MediagenError:
    """The mediagen error for a job that completed with an error (its result answered `status`).

    Args:
        status: The HTTP status of the result call.
        body: The result's JSON body.
        request_id: The job.
        model: The app id.
        error_type: The status's `error_type`, when fal gave one.
    """
    detail = body.get("detail", body) if isinstance(body, dict) else body
    said = _said(detail)
    if status == 422:
        return InvalidRequestError(
            f"fal's app {model} refused the input of request {request_id} (422: {said})",
            errors=_pydantic_errors(detail),
            provider=PROVIDER,
            model=model,
            status=status,
            detail=said,
        )
    text = f"{error_type or ''} {said}".lower()
    refused = any(marker in text for marker in _REFUSAL_MARKERS)
    return GenerationFailedError(
        f"fal request {request_id} failed ({status}: {said})",
        provider=PROVIDER,
        model=model,
        status=status,
        detail=said,
        refused=refused,
        retryable=not refused and status >= 500,
    )


def transport_error(
    exc: BaseException, *, model: str | None = None, secrets: Sequence[str | None] = ()
) -> ProviderError:
    """The mediagen error for a call that got no answer (connection, timeout, protocol)."""
    text = redact(str(exc), *secrets) or "no details"
    return ProviderError(
        f"could not talk to fal ({type(exc).__name__}: {text})", provider=PROVIDER, model=model, retryable=True
    )


def _said(detail: Any) -> str:
    if detail is None:
        return "no details given"
    if isinstance(detail, str):
        return detail[:500]
    if isinstance(detail, list):
        parts = []
        for item in detail[:5]:
            if isinstance(item, Mapping):
                loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                parts.append(f"{loc}: {item.get('msg')}" if loc else str(item.get("msg")))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return json.dumps(detail)[:500]


def _pydantic_errors(detail: Any) -> list[dict[str, Any]]:
    if not isinstance(detail, list):
        return []
    return [
        {
            "loc": ("input", *(str(p) for p in item.get("loc", ()) if p != "body")),
            "msg": str(item.get("msg", "")),
            "type": str(item.get("type", "invalid")),
        }
        for item in detail
        if isinstance(item, Mapping)
    ]
