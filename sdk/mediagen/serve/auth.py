"""Who is calling: bearer tokens, and the errors each API answers with.

Tokens are kept only as SHA-256 digests and compared in constant time, every one of them on every
request (no early exit that would time which token matched). `Authorization: Bearer <token>` and
Replicate's older `Token <token>` both work. Without configured tokens, authentication is off, which
`mediagen serve` allows only on a loopback address.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

from starlette.responses import JSONResponse

from .settings import TokenSpec

__all__ = ["Authenticator", "Unauthenticated", "is_openai_path", "error_response"]


class Unauthenticated(Exception):
    """No token, or one that is not known."""


class Authenticator:
    """Checks `Authorization` headers against the configured tokens."""

    def __init__(self, tokens: Sequence[TokenSpec]) -> None:
        self._tokens = [(bytes.fromhex(t.sha256), t) for t in tokens]

    @property
    def enabled(self) -> bool:
        """Whether any token is configured (otherwise every caller is let in)."""
        return bool(self._tokens)

    def check(self, authorization: str | None) -> TokenSpec | None:
        """The token spec of a request, None when authentication is off.

        Raises:
            Unauthenticated: Authentication is on and the header is missing or wrong.
        """
        if not self._tokens:
            return None
        if not authorization:
            raise Unauthenticated("You did not pass an authentication token")
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() not in ("bearer", "token") or not value.strip():
            raise Unauthenticated("You did not pass a valid authentication token")
        digest = hashlib.sha256(value.strip().encode()).digest()
        found: TokenSpec | None = None
        for expected, spec in self._tokens:
            if hmac.compare_digest(digest, expected):
                found = spec
        if found is None:
            raise Unauthenticated("You did not pass a valid authentication token")
        return found


def is_openai_path(path: str) -> bool:
    """Whether a path belongs to the OpenAI-compatible API (its own error shape)."""
    return path.startswith(("/v1/images/", "/v1/audio/"))


_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_response(
    path: str,
    status: int,
    detail: str,
    *,
    title: str | None = None,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    """An error in the shape of the API `path` belongs to.

    Replicate's is an RFC 7807 problem (`title`, `detail`, `status`); OpenAI's is
    `{"error": {"message", "type", "param", "code"}}`.
    """
    if is_openai_path(path):
        body: dict[str, Any] = {
            "error": {
                "message": detail,
                "type": _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error"),
                "param": param,
                "code": code,
            }
        }
        return JSONResponse(body, status_code=status, headers=headers)
    problem: dict[str, Any] = {"title": title or _TITLES.get(status, "Error"), "detail": detail, "status": status}
    problem.update(extra or {})
    return JSONResponse(problem, status_code=status, headers=headers, media_type="application/problem+json")


_TITLES = {
    400: "Bad request",
    401: "Unauthenticated",
    404: "Not found",
    413: "Request too large",
    422: "Input validation failed",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}
