"""Translating what Replicate, the `replicate` client and httpx raise into mediagen's error tree.

Every error leaves the backend as a `MediagenError`; the vendor exception stays reachable as
`__cause__`. The translation happens at one boundary, `map_errors`, and for answers read directly off
the wire, `error_for_response`:

=================================  ============================================================
Replicate says                     mediagen raises
=================================  ============================================================
401 / 403                          `AuthenticationError`
402 (billing)                      `ProviderError` (not retryable)
404                                `ModelNotFoundError`
413                                `InvalidRequestError` (an input file is too large)
422 "Invalid version"              `ModelNotFoundError`
422 (input validation)             `InvalidRequestError`, one entry per `invalid_fields` item
429                                `RateLimitedError` with `retry_after`
5xx                                `ProviderError` (retryable)
connection trouble, timeouts       `ProviderError` (retryable)
prediction `failed`                `GenerationFailedError` (`refused` for safety filters)
prediction `aborted` / cut by our  `DeadlineExceededError`
deadline
=================================  ============================================================
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mediagen.errors import (
    AuthenticationError,
    DeadlineExceededError,
    EndpointUnreachableError,
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
    "RETRYABLE_STATUSES",
    "map_errors",
    "error_for_response",
    "error_for_status",
    "error_for_prediction",
    "transport_error",
    "parse_retry_after",
]

PROVIDER = "replicate"

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP statuses that may pass if the same request is sent again."""

# Replicate's safety checkers fail a prediction with messages like "NSFW content detected. Try running
# it again, or try a different prompt."; such a refusal is no reason to try another backend.
_REFUSAL_MARKERS = ("nsfw", "safety", "content policy", "flagged", "sensitive")


def error_for_status(
    status: int,
    *,
    title: str | None = None,
    detail: str | None = None,
    invalid_fields: Sequence[Mapping[str, Any]] = (),
    retry_after: float | None = None,
    model: str | None = None,
) -> MediagenError:
    """The mediagen error for an HTTP error status from Replicate.

    Args:
        status: The HTTP status code.
        title: The problem's `title`, if any.
        detail: The problem's `detail`, if any.
        invalid_fields: The problem's `invalid_fields` (422 validation answers).
        retry_after: Seconds from `Retry-After` (429 answers).
        model: The model reference the call was about.

    Returns:
        The error to raise.
    """
    said = ": ".join(part for part in (title, detail) if part) or "no details given"
    common: dict[str, Any] = {"provider": PROVIDER, "model": model, "status": status, "detail": detail or title}
    if status in (401, 403):
        return AuthenticationError(
            f"Replicate rejected the API token ({status}: {said}). Check REPLICATE_API_TOKEN, or the "
            "api_token= passed to ReplicateBackend.",
            **common,
        )
    if status == 402:
        return ProviderError(
            f"Replicate needs billing set up for this account before it runs models (402: {said})",
            retryable=False,
            **common,
        )
    if status == 404:
        return ModelNotFoundError(
            f"Replicate has no such model or prediction, or this token cannot see it (404: {said}). "
            "Model references look like 'owner/name' or 'owner/name:<version>'.",
            **common,
        )
    if status == 413:
        return InvalidRequestError(f"an input file is too large for Replicate (413: {said})", **common)
    if status == 422:
        if title and title.lower().startswith("invalid version"):
            return ModelNotFoundError(
                f"Replicate does not know this model version, or this token may not use it (422: {said})",
                **common,
            )
        errors = [
            {
                "loc": tuple(str(field.get("field") or "input").split(".")),
                "msg": str(field.get("description") or ""),
                "type": str(field.get("type") or "invalid"),
            }
            for field in invalid_fields
        ]
        return InvalidRequestError(f"Replicate refused the request (422: {said.strip()})", errors=errors, **common)
    if status == 429:
        wait = f"; retry after {retry_after:g} s" if retry_after is not None else ""
        return RateLimitedError(
            f"Replicate is throttling requests (429: {said}){wait}", retry_after=retry_after, **common
        )
    if status >= 500:
        return ProviderError(f"Replicate had a server error ({status}: {said})", retryable=True, **common)
    return ProviderError(f"Replicate answered {status}: {said}", **common)


def error_for_response(response: httpx.Response, *, model: str | None = None) -> MediagenError:
    """The mediagen error for an error response, read as an RFC 7807 problem (or whatever came).

    Args:
        response: A response with a 4xx or 5xx status; its body must already be read.
        model: The model reference the call was about.

    Returns:
        The error to raise.
    """
    problem: dict[str, Any] = {}
    try:
        body = response.json()
        if isinstance(body, dict):
            problem = body
    except (ValueError, json.JSONDecodeError):
        text = response.text.strip()
        if text:
            problem = {"detail": text[:500]}
    invalid = problem.get("invalid_fields")
    return error_for_status(
        response.status_code,
        title=_text(problem.get("title")),
        detail=_text(problem.get("detail")),
        invalid_fields=invalid if isinstance(invalid, list) else (),
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
        model=model,
    )


def error_for_prediction(
    prediction: Mapping[str, Any], *, model: str | None = None, deadline_passed: bool = False
) -> MediagenError:
    """The mediagen error for a prediction that ended without succeeding.

    Args:
        prediction: The prediction object, in a terminal state other than `succeeded`.
        model: The model reference.
        deadline_passed: Whether our own deadline has passed (then `canceled` was our `Cancel-After`).

    Returns:
        The error to raise.
    """
    status = prediction.get("status")
    pid = prediction.get("id", "?")
    error = _text(prediction.get("error"))
    if status == "aborted" or (status == "canceled" and (deadline_passed or _cut_by_deadline(prediction))):
        return DeadlineExceededError(
            f"prediction {pid} was stopped by its deadline ({status}); raise timeout= or use a faster model",
            provider=PROVIDER,
            model=model,
            detail=error,
        )
    if status == "canceled":
        return GenerationFailedError(
            f"prediction {pid} was canceled outside this client (on replicate.com or by another API call)",
            provider=PROVIDER,
            model=model,
            detail=error,
            retryable=False,
        )
    refused = error is not None and any(marker in error.lower() for marker in _REFUSAL_MARKERS)
    return GenerationFailedError(
        f"prediction {pid} failed: {error or 'the model reported no error message'}",
        provider=PROVIDER,
        model=model,
        detail=error,
        refused=refused,
        # A model crash may not repeat; a refusal will.
        retryable=not refused,
    )


def transport_error(
    exc: BaseException, *, model: str | None = None, secrets: Sequence[str | None] = ()
) -> ProviderError:
    """The mediagen error for a request that got no HTTP answer (connection, timeout, protocol).

    Args:
        exc: The httpx exception.
        model: The model reference.
        secrets: Values to hide should they appear in the exception's text.

    Returns:
        A retryable `ProviderError`; an `EndpointUnreachableError` when no connection could be made
        at all (refused, unknown host, no answer to connect), so a fallback chain can move on fast.
    """
    import httpx

    text = redact(str(exc), *secrets) or "no details"
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return EndpointUnreachableError(
            f"could not connect to Replicate ({type(exc).__name__}: {text}); nothing was sent",
            provider=PROVIDER,
            model=model,
            retryable=True,
        )
    return ProviderError(
        f"could not talk to Replicate ({type(exc).__name__}: {text})",
        provider=PROVIDER,
        model=model,
        retryable=True,
    )


@contextlib.contextmanager
def map_errors(*, model: str | None = None, secrets: Sequence[str | None] = ()) -> Iterator[None]:
    """Turn any `replicate` or httpx exception raised inside the block into a `MediagenError`.

    Args:
        model: The model reference, put on the errors.
        secrets: Values to hide should they appear in an exception's text (the API token).

    Raises:
        MediagenError: What the vendor exception means.

    Examples:
        >>> with map_errors(model="owner/name"):  # doctest: +SKIP
        ...     version = await client.models.versions.async_get(version_id)
    """
    import httpx
    from replicate.exceptions import ModelError, ReplicateError

    try:
        yield
    except MediagenError:
        raise
    except ReplicateError as exc:
        raise error_for_status(exc.status or 500, title=exc.title, detail=exc.detail, model=model) from exc
    except ModelError as exc:
        raise GenerationFailedError(
            f"the model failed: {redact(str(exc), *secrets)}", provider=PROVIDER, model=model
        ) from exc
    except httpx.HTTPError as exc:
        raise transport_error(exc, model=model, secrets=secrets) from exc


def _cut_by_deadline(prediction: Mapping[str, Any]) -> bool:
    # `deadline` is set when the create carried Cancel-After; both times are on the server's clock.
    deadline, ended = prediction.get("deadline"), prediction.get("completed_at")
    return isinstance(deadline, str) and isinstance(ended, str) and ended[:19] >= deadline[:19]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)
