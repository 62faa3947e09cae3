"""Translating what OpenAI and the `openai` client raise into mediagen's error tree, and what to retry.

Every error leaves the backend as a `MediagenError`; the vendor exception stays reachable as
`__cause__`. OpenAI answers errors as `{"error": {"message", "type", "param", "code"}}`:

==========================================  ====================================================
OpenAI says                                 mediagen raises
==========================================  ====================================================
401, 403                                    `AuthenticationError` (names `OPENAI_API_KEY`)
400 `moderation_blocked` / content policy   `GenerationFailedError(refused=True)`
400, 413, 422                               `InvalidRequestError` (`errors` names the parameter)
404                                         `ModelNotFoundError`
429 `insufficient_quota`                    `ProviderError` (billing: not retried)
429                                         `RateLimitedError` (`retry-after-ms` / `retry-after`)
5xx                                         `ProviderError` (retryable)
no answer (connection, timeout)             `ProviderError`; retryable only if never sent
==========================================  ====================================================

What is sent again (`safe_to_repeat`): image and speech requests are synchronous and billable, and
OpenAI offers no idempotency key, so a request is repeated only when it provably did not run: a 429
(refused at the door), a 5xx (OpenAI's documented answer to "retry after a brief wait": the request
produced no output), or a connection that failed before the request left this machine. A request
whose connection dropped or timed out after it was sent may have run and been billed; it is never
repeated (the error says so, and is marked not retryable for the client too).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from mediagen import policies
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

__all__ = [
    "PROVIDER",
    "error_for_status",
    "map_errors",
    "never_sent",
    "parse_retry_after",
    "safe_to_repeat",
]

PROVIDER = "openai"

_REFUSAL_CODES = frozenset({"moderation_blocked", "content_policy_violation", "image_generation_user_error"})
# Exception class names, in httpx and httpx2 alike, of failures before any byte was sent.
_NEVER_SENT = frozenset({"ConnectError", "ConnectTimeout", "PoolTimeout", "UnsupportedProtocol", "LocalProtocolError"})


def error_for_status(
    status: int,
    body: Any,
    *,
    headers: Mapping[str, str] | None = None,
    model: str | None = None,
) -> MediagenError:
    """The mediagen error for an HTTP error status from OpenAI.

    Args:
        status: The HTTP status.
        body: The decoded error body (`{"error": {...}}`, or its inner object as the client keeps it).
        headers: The response headers (for `retry-after-ms` / `retry-after`).
        model: The model the call was about.

    Returns:
        The error to raise.
    """
    error = body.get("error", body) if isinstance(body, Mapping) else {}
    if not isinstance(error, Mapping):
        error = {}
    message = str(error.get("message") or "no details given")
    code = error.get("code")
    param = error.get("param")
    said = f"{status}: {message}"
    common: dict[str, Any] = {"provider": PROVIDER, "model": model, "status": status, "detail": message}
    if status in (401, 403):
        return AuthenticationError(
            f"OpenAI rejected the request's credentials ({said}). Check OPENAI_API_KEY, or the api_key= "
            "passed to OpenAIBackend (a 403 may also mean the organization is not verified for this model).",
            **common,
        )
    if status == 400 and (code in _REFUSAL_CODES or "safety system" in message.lower()):
        return GenerationFailedError(f"OpenAI refused the content ({said})", refused=True, retryable=False, **common)
    if status in (400, 413, 415, 422):
        errors = [{"loc": (str(param),) if param else ("request",), "msg": message, "type": str(code or "invalid")}]
        return InvalidRequestError(f"OpenAI refused the request ({said})", errors=errors, **common)
    if status == 404:
        return ModelNotFoundError(f"OpenAI has no such model, or this key cannot use it ({said})", **common)
    if status == 429:
        if code == "insufficient_quota":
            return ProviderError(f"OpenAI says the account is out of quota ({said})", retryable=False, **common)
        retry_after = parse_retry_after(headers)
        wait = f"; retry after {retry_after:g} s" if retry_after is not None else ""
        return RateLimitedError(f"OpenAI is throttling requests ({said}){wait}", retry_after=retry_after, **common)
    if status >= 500:
        return ProviderError(f"OpenAI had a server error ({said})", retryable=True, **common)
    return ProviderError(f"OpenAI answered {said}", **common)


def never_sent(exc: BaseException) -> bool:
    """Whether a failure happened before any byte of the request left this machine.

    Looks through the `__cause__` chain (the official client wraps its transport's exceptions).
    """
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if type(seen).__name__ in _NEVER_SENT:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def safe_to_repeat(error: BaseException) -> bool:
    """Whether a failed image or speech request may be sent again without paying twice (module docs)."""
    if isinstance(error, RateLimitedError):
        return error.retryable
    if isinstance(error, ProviderError):
        # No status: the request got no answer; `map_errors` marked it retryable only if never sent.
        return error.retryable if error.status is None else error.status >= 500
    return False


@contextlib.contextmanager
def map_errors(
    *, model: str | None = None, secrets: Sequence[str | None] = (), deadline_passed: Any = None
) -> Iterator[None]:
    """Turn any `openai` exception raised inside the block into a `MediagenError`.

    Args:
        model: The model, put on the errors.
        secrets: Values to hide should they appear in an exception's text (the API key).
        deadline_passed: A callable telling whether the job's deadline has passed (a timeout then
            becomes `DeadlineExceededError`).

    Raises:
        MediagenError: What the vendor exception means.
    """
    import openai

    try:
        yield
    except MediagenError:
        raise
    except openai.APIStatusError as exc:
        raise error_for_status(exc.status_code, exc.body, headers=dict(exc.response.headers), model=model) from exc
    except openai.APIConnectionError as exc:
        if isinstance(exc.__cause__, MediagenError):
            raise exc.__cause__ from None  # ours, raised while reading the answer (a size cap)
        timed_out = isinstance(exc, openai.APITimeoutError)
        if timed_out and deadline_passed is not None and deadline_passed():
            raise DeadlineExceededError(
                "the job's deadline passed while OpenAI was still working; raise timeout=",
                provider=PROVIDER,
                model=model,
            ) from exc
        sent = not never_sent(exc)
        cause = exc.__cause__ or exc
        text = redact(f"{type(cause).__name__}: {cause}", *secrets)
        if sent:
            raise ProviderError(
                f"lost the connection to OpenAI after the request was sent ({text}); it may have run and "
                "been billed, so it is not sent again",
                provider=PROVIDER,
                model=model,
                retryable=False,
            ) from exc
        raise ProviderError(
            f"could not connect to OpenAI ({text})", provider=PROVIDER, model=model, retryable=True
        ) from exc
    except openai.OpenAIError as exc:
        raise ProviderError(
            f"the OpenAI client failed: {redact(str(exc), *secrets)}", provider=PROVIDER, model=model
        ) from exc


def parse_retry_after(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, else `retry-after` (`mediagen.policies.parse_retry_after`).

    Examples:
        >>> parse_retry_after({"retry-after-ms": "1500"})
        1.5
        >>> parse_retry_after({"retry-after": "2"})
        2.0
        >>> parse_retry_after({}) is None
        True
    """
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    value = lowered.get("retry-after-ms")
    if value is not None:
        try:
            seconds = float(value) / 1000.0
        except ValueError:
            pass
        else:
            if math.isfinite(seconds) and seconds >= 0:
                return seconds
    return policies.parse_retry_after(lowered.get("retry-after"), now=now)
