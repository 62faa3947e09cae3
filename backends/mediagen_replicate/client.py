"""Who we talk to and as whom: the API token, the endpoint, and the official client holding them.

`ReplicateConnection` wraps one `replicate.Client`: either a ready one the caller passes (we use it,
and never close it), or one built here from the token and endpoint (`REPLICATE_API_TOKEN`,
`REPLICATE_BASE_URL`, the official client's own variable names, or the constructor's arguments).

The token is kept in one private attribute, shown nowhere: not in reprs, not in log lines, not in
error messages (`redact` is given it wherever text from the network is quoted).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from mediagen.errors import AuthenticationError
from mediagen.safety import register_secret

from .errors import PROVIDER

if TYPE_CHECKING:
    import httpx
    from replicate.client import Client

__all__ = ["ENV_TOKEN", "ENV_BASE_URL", "DEFAULT_BASE_URL", "ReplicateConnection", "missing_token_error"]

ENV_TOKEN = "REPLICATE_API_TOKEN"
ENV_BASE_URL = "REPLICATE_BASE_URL"
DEFAULT_BASE_URL = "https://api.replicate.com"


def missing_token_error() -> AuthenticationError:
    """The error for a missing token: it names both ways to give one, and the offline alternative."""
    return AuthenticationError(
        f"no Replicate API token: set {ENV_TOKEN}=r8_... in the environment, or pass "
        "ReplicateBackend(api_token=...) (secrets never go in mediagen.toml). To try mediagen without "
        "an account, use a 'test:' model (model='test:fake'), or run the offline server in "
        "mediagen_testkit.replicate_server.",
        provider=PROVIDER,
    )


class ReplicateConnection:
    """The official client plus the pieces of it mediagen uses.

    Args:
        api_token: The API token; defaults to `$REPLICATE_API_TOKEN`.
        base_url: The API endpoint; defaults to `$REPLICATE_BASE_URL`, else Replicate's.
        client: A ready `replicate.Client`; when given, `api_token` and `base_url` are ignored and
            the client is never closed here.
        max_connections: Size of the connection pool of a client built here. Sync-mode creates
            hold a connection for as long as the model runs (up to a minute), so it should be at
            least the number of predictions allowed in flight.
        timeout: Timeouts of a client built here.

    Raises:
        AuthenticationError: No client and no token (the message says where a token goes).
    """

    def __init__(
        self,
        *,
        api_token: str | None = None,
        base_url: str | None = None,
        client: Client | None = None,
        max_connections: int = 256,
        timeout: httpx.Timeout | None = None,
    ) -> None:
        import httpx
        from replicate.client import Client

        self.official: Client
        if client is not None:
            self.official = client
            self.owned = False
            # Only for redaction: a ready client may carry a token we were never told about.
            self._secret: str | None = getattr(client, "_api_token", None) or os.environ.get(ENV_TOKEN)
            register_secret(self._secret)
        else:
            token = api_token or os.environ.get(ENV_TOKEN)
            if not token:
                raise missing_token_error()
            self._secret = token
            # Known to the core by value: every error text and CLI output hides it, wherever it came from.
            register_secret(token)
            self.official = Client(
                api_token=token,
                base_url=base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL,
                timeout=timeout or httpx.Timeout(30.0, connect=10.0, pool=60.0),
                limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            )
            self.owned = True
        self._downloads: httpx.AsyncClient | None = None
        self._max_connections = max_connections

    @property
    def http(self) -> httpx.AsyncClient:
        """The official client's own httpx client: its base URL, auth header and connection pool."""
        http: httpx.AsyncClient = self.official._async_client
        return http

    @property
    def base_url(self) -> str:
        """The endpoint requests go to."""
        return str(self.http.base_url).rstrip("/")

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values to hide from any text that leaves the backend."""
        return (self._secret,) if self._secret else ()

    @property
    def downloads(self) -> httpx.AsyncClient:
        """A separate client for fetching outputs: it carries no token.

        Output URLs point at a file host (`replicate.delivery`), not at the API, and the API token
        has no business travelling there.
        """
        if self._downloads is None:
            import httpx

            self._downloads = httpx.AsyncClient(
                follow_redirects=True,
                timeout=httpx.Timeout(60.0, connect=10.0),
                limits=httpx.Limits(max_connections=self._max_connections, max_keepalive_connections=32),
            )
        return self._downloads

    async def aclose(self) -> None:
        """Close what was created here; a client passed in stays open for its owner."""
        if self._downloads is not None:
            await self._downloads.aclose()
            self._downloads = None
        if self.owned:
            # The official client has no async close of its own; its httpx client is all it holds.
            await self.http.aclose()

    def __repr__(self) -> str:
        token = "set" if self._secret else "unset"
        return f"ReplicateConnection(base_url={self.base_url!r}, token={token}, owned={self.owned})"

    def __reduce__(self) -> Any:
        # A connection holds a live pool (and a secret); neither should be pickled into a job.
        raise TypeError("a ReplicateConnection cannot be pickled")
