"""Who we talk to and as whom: the API key, the endpoint, and the official client holding them.

`OpenAIConnection` wraps one `openai.AsyncOpenAI`: either a ready one the caller passes (used as is,
never closed here), or one built from the key and endpoint (`OPENAI_API_KEY`, `OPENAI_BASE_URL`: the
official client's own variable names; or the constructor's arguments). A client built here has
`max_retries=0`: mediagen's retry policy decides what is sent again, because only it knows that an
image request whose connection dropped may already have been paid for.

The key is kept in one private attribute, shown nowhere: not in reprs, log lines or error messages.

A client built here reads every answer through `CappedTransport`: an answer (JSON holding base64
images or audio) larger than `max_body_bytes` is refused while it streams in, so no server can make
us hold an unbounded body in memory. A client passed in is the caller's, with the caller's limits.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx2 as httpx  # the official client (openai>=3) speaks httpx2, the fork of httpx it ships with

from mediagen.errors import AuthenticationError, MediaTooLargeError
from mediagen.hosted import MAX_API_BODY_BYTES
from mediagen.safety import register_secret

from .errors import PROVIDER

if TYPE_CHECKING:
    from openai import AsyncOpenAI

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT_S",
    "ENV_BASE_URL",
    "ENV_KEY",
    "CappedTransport",
    "OpenAIConnection",
    "missing_key_error",
]

ENV_KEY = "OPENAI_API_KEY"
ENV_BASE_URL = "OPENAI_BASE_URL"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_TIMEOUT_S = 600.0
"""Longest a single request may take: a high-quality 4K image can take minutes."""


class CappedTransport(httpx.AsyncBaseTransport):
    """An httpx transport whose answers stop being read past `max_bytes` (`MediaTooLargeError`)."""

    def __init__(self, max_bytes: int = MAX_API_BODY_BYTES, *, limits: httpx.Limits) -> None:
        self.max_bytes = max_bytes
        self._inner = httpx.AsyncHTTPTransport(limits=limits)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        cap = self.max_bytes
        declared = response.headers.get("content-length", "").strip()
        if declared.isdigit() and int(declared) > cap:
            await response.aclose()
            raise _too_large(f"{declared} bytes, past the cap of {cap}", cap)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_CappedStream(response.stream, cap),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


class _CappedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream | httpx.AsyncByteStream, cap: int) -> None:
        assert isinstance(inner, httpx.AsyncByteStream)  # an async transport answers with async streams
        self._inner, self._cap = inner, cap

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._cap:
                raise _too_large(f"more than {self._cap} bytes", self._cap)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def _too_large(what: str, cap: int) -> MediaTooLargeError:
    return MediaTooLargeError(f"the API answered with {what}", provider=PROVIDER, limit=cap)


def missing_key_error() -> AuthenticationError:
    """The error for a missing key: it names both ways to give one, and the offline alternative."""
    return AuthenticationError(
        f"no OpenAI API key: set {ENV_KEY}=sk-... in the environment, or pass OpenAIBackend(api_key=...) "
        "(secrets never go in mediagen.toml). To try mediagen without an account, use a 'test:' model, "
        "or run the offline server in mediagen_testkit.openai_server.",
        provider=PROVIDER,
    )


class OpenAIConnection:
    """The official async client, built here or given.

    Args:
        api_key: The API key; defaults to `$OPENAI_API_KEY`.
        base_url: The API root (ending in `/v1`); defaults to `$OPENAI_BASE_URL`, else OpenAI's.
        client: A ready `openai.AsyncOpenAI`; when given, `api_key` and `base_url` are ignored and the
            client is never closed here. Its own `max_retries` then applies on top of mediagen's.
        timeout: Seconds a request may take, for a client built here.

    Raises:
        AuthenticationError: No client and no key (the message says where a key goes).
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        client: AsyncOpenAI | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        from openai import AsyncOpenAI

        self.official: AsyncOpenAI
        if client is not None:
            self.official = client
            self.owned = False
            self.capped: CappedTransport | None = None
            # Only for redaction: a ready client may carry a key we were never told about.
            self._secret: str | None = getattr(client, "api_key", None) or os.environ.get(ENV_KEY)
            register_secret(self._secret)
        else:
            key = api_key or os.environ.get(ENV_KEY)
            if not key:
                raise missing_key_error()
            self._secret = key
            # Known to the core by value: every error text and CLI output hides it, wherever it came from.
            register_secret(key)
            from openai import DefaultAsyncHttpxClient
            from openai._constants import DEFAULT_CONNECTION_LIMITS

            # The official client's own defaults (redirects, timeouts), reading through the cap.
            self.capped = CappedTransport(limits=DEFAULT_CONNECTION_LIMITS)
            self.official = AsyncOpenAI(
                api_key=key,
                base_url=base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL,
                max_retries=0,
                timeout=timeout,
                http_client=DefaultAsyncHttpxClient(transport=self.capped, timeout=timeout),
            )
            self.owned = True

    @property
    def base_url(self) -> str:
        """The endpoint requests go to."""
        return str(self.official.base_url).rstrip("/")

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values to hide from any text that leaves the backend."""
        return (self._secret,) if self._secret else ()

    async def aclose(self) -> None:
        """Close the client if it was built here; a client passed in stays open for its owner."""
        if self.owned:
            await self.official.close()

    def __repr__(self) -> str:
        key = "set" if self._secret else "unset"
        return f"OpenAIConnection(base_url={self.base_url!r}, key={key}, owned={self.owned})"

    def __reduce__(self) -> Any:
        # A connection holds a live pool (and a secret); neither should be pickled into a job.
        raise TypeError("an OpenAIConnection cannot be pickled")
