"""Who we talk to and as whom: the Gemini API key, the endpoint, and the clients holding them.

The key comes from the constructor, else `GOOGLE_API_KEY`, else `GEMINI_API_KEY` (the official
client's order: when both are set, `GOOGLE_API_KEY` wins). The endpoint comes from the constructor
(`[providers.google] base_url`), else `GOOGLE_GEMINI_BASE_URL` (the official client's variable),
else `https://generativelanguage.googleapis.com`; requests go to its `v1beta` API.

Two clients share them:

- the official `google.genai.Client`, for `generateContent` (Gemini image models), built with no
  retries of its own (mediagen's policy decides what is sent again) and on httpx, never aiohttp,
  whose transport the official client would silently retry;
- a plain `httpx.AsyncClient` for the REST endpoints the official client refuses in Gemini-API mode
  since google-genai 3 (`:predict` for Imagen, `:predictLongRunning` and operations for Veo).

The key travels only to the configured endpoint, in the `x-goog-api-key` header; a generated file
whose URL points elsewhere is fetched without it (see `outputs.py`).
"""

from __future__ import annotations

import functools
import os
import ssl
from typing import TYPE_CHECKING, Any

from mediagen.errors import AuthenticationError
from mediagen.safety import origin_of, register_secret, same_origin

from .errors import PROVIDER

if TYPE_CHECKING:
    from google import genai

__all__ = [
    "ENV_KEYS",
    "ENV_BASE_URL",
    "DEFAULT_BASE_URL",
    "API_VERSION",
    "GoogleConnection",
    "missing_key_error",
]

ENV_KEYS = ("GOOGLE_API_KEY", "GEMINI_API_KEY")
"""Where the key is looked for, in the official client's order."""
ENV_BASE_URL = "GOOGLE_GEMINI_BASE_URL"
DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
API_VERSION = "v1beta"
DEFAULT_TIMEOUT_S = 300.0


def missing_key_error() -> AuthenticationError:
    """The error for a missing key: it names the variables, the argument and the offline alternative."""
    return AuthenticationError(
        "no Gemini API key: set GEMINI_API_KEY (or GOOGLE_API_KEY) in the environment, or pass "
        "GoogleBackend(api_key=...) (secrets never go in mediagen.toml). To try mediagen without an "
        "account, use a 'test:' model, or run the offline server in mediagen_testkit.google_server.",
        provider=PROVIDER,
    )


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every client of the process: loading the CA bundle takes a fifth of a second."""
    return ssl.create_default_context()


def env_key() -> tuple[str | None, str | None]:
    """`(key, variable it came from)` from the environment, in the official client's order."""
    for name in ENV_KEYS:
        value = os.environ.get(name)
        if value:
            return value, name
    return None, None


class GoogleConnection:
    """The endpoint, the key, the official client and a REST client.

    Args:
        api_key: The key; defaults to `$GOOGLE_API_KEY`, else `$GEMINI_API_KEY`.
        base_url: The API root (no version); defaults to `$GOOGLE_GEMINI_BASE_URL`, else Google's.
        client: A ready `google.genai.Client`; used for `generateContent` as is and never closed
            here (its own retry settings then apply too). The REST calls still use `api_key`.
        timeout: Seconds one request may take.
        max_connections: Size of the connection pools built here.

    Raises:
        AuthenticationError: No key anywhere (the message says where a key goes).
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        client: genai.Client | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_connections: int = 128,
    ) -> None:
        import httpx

        key, source = (api_key, "api_key=") if api_key else env_key()
        if not key:
            raise missing_key_error()
        self._secret = key
        # Known to the core by value: every error text and CLI output hides it, wherever it came from.
        register_secret(key)
        self.key_source = source or "api_key="
        """Where the key came from (`GEMINI_API_KEY`, `GOOGLE_API_KEY` or `api_key=`), for error messages."""
        self.base_url = (base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL).rstrip("/")
        self.timeout = timeout
        self._given = client
        self._official: genai.Client | None = client
        self._official_http: Any = None
        self._official_sync: Any = None
        self.rest = httpx.AsyncClient(
            base_url=f"{self.base_url}/{API_VERSION}/",
            headers={"x-goog-api-key": key},
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            follow_redirects=False,  # a redirect must not carry the key to another host
            verify=tls_context(),
        )
        """The REST client: the key in its headers, requests relative to `<base_url>/v1beta/`."""
        self._max_connections = max_connections

    @property
    def official(self) -> genai.Client:
        """The official client, built on first use (only Gemini image models need it)."""
        if self._official is None:
            import httpx2
            from google import genai
            from google.genai import types

            self._official_http = httpx2.AsyncClient(
                timeout=httpx2.Timeout(self.timeout, connect=10.0),
                verify=tls_context(),
                limits=httpx2.Limits(
                    max_connections=self._max_connections, max_keepalive_connections=self._max_connections
                ),
            )
            self._official_sync = httpx2.Client(verify=tls_context())
            self._official = genai.Client(
                api_key=self._secret,
                http_options=types.HttpOptions(
                    base_url=self.base_url + "/",
                    api_version=API_VERSION,
                    timeout=int(self.timeout * 1000),
                    # One try: mediagen's policy decides what is sent again (and it also keeps the
                    # client from silently retrying a dropped connection on its aiohttp transport).
                    retry_options=types.HttpRetryOptions(attempts=1),
                    httpx_async_client=self._official_http,
                    # Never used (mediagen is async), but built by the client when not given: give it
                    # the shared TLS context so it costs nothing.
                    httpx_client=self._official_sync,
                ),
            )
        return self._official

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values to hide from any text that leaves the backend."""
        return (self._secret,)

    def same_origin(self, url: str) -> bool:
        """Whether `url` points at the configured endpoint (scheme, host and port): may it get the key?"""
        return origin_of(url) is not None and same_origin(url, self.base_url)

    async def aclose(self) -> None:
        """Close what was built here; a client passed in stays open for its owner."""
        await self.rest.aclose()
        if self._official_http is not None:
            await self._official_http.aclose()
            self._official_sync.close()
            self._official_http = self._official_sync = None

    def __repr__(self) -> str:
        return f"GoogleConnection(base_url={self.base_url!r}, key from {self.key_source})"

    def __reduce__(self) -> Any:
        raise TypeError("a GoogleConnection cannot be pickled")
