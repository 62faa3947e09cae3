"""Who we talk to and as whom: the key, the queue endpoint, the storage endpoint, the HTTP pools.

fal's official Python client (`fal_client`) builds `https://` URLs only and reads its queue host
once, at import, from the environment (`FAL_QUEUE_RUN_HOST`); it cannot be pointed at an endpoint
per backend (`[providers.fal] base_url`), nor at a plain-http loopback server, and its submit retries
on 408/409/429 and on any transport error, which may queue one job twice. So this backend speaks
fal's documented queue REST API with httpx, and keeps the official client's conventions: the key
comes from `FAL_KEY` (or `FAL_KEY_ID` + `FAL_KEY_SECRET`), is sent as `Authorization: Key <key>`,
and the queue host from `FAL_QUEUE_RUN_HOST` is honoured when nothing else names an endpoint.

The key goes to two hosts only: the queue endpoint and the storage endpoint. Status, result and
cancel URLs are built here from the queue endpoint, never taken from an answer (a `status_url` that
pointed elsewhere would otherwise carry the key there). Output files and signed upload URLs are
fetched through a second pool that carries no key.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from mediagen.errors import AuthenticationError
from mediagen.safety import register_secret

from .errors import ENV_KEY, PROVIDER

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_STORAGE_URL",
    "ENV_KEY",
    "ENV_QUEUE_HOST",
    "FalConnection",
    "find_key",
    "missing_key_error",
]

ENV_QUEUE_HOST = "FAL_QUEUE_RUN_HOST"
DEFAULT_BASE_URL = "https://queue.fal.run"
"""fal's queue root."""
DEFAULT_STORAGE_URL = "https://rest.fal.ai"
"""fal's REST root, where storage uploads are initiated."""
_USER_AGENT = "mediagen-fal"


def find_key() -> str | None:
    """The key from the environment, as the official client reads it: `FAL_KEY`, else `FAL_KEY_ID:FAL_KEY_SECRET`."""
    key = os.environ.get(ENV_KEY)
    if key:
        return key
    key_id, secret = os.environ.get("FAL_KEY_ID"), os.environ.get("FAL_KEY_SECRET")
    return f"{key_id}:{secret}" if key_id and secret else None


def missing_key_error() -> AuthenticationError:
    """The error for a missing key: where a key goes, and the offline alternative."""
    return AuthenticationError(
        f"no fal API key: set {ENV_KEY}=<key id>:<key secret> in the environment (or FAL_KEY_ID and "
        "FAL_KEY_SECRET), or pass FalBackend(key=...) (secrets never go in mediagen.toml). To try "
        "mediagen without an account, use a 'test:' model, or run mediagen_testkit.fal_server.",
        provider=PROVIDER,
    )


class FalConnection:
    """The key, the endpoints and two httpx pools (one with the key, one without).

    Args:
        key: The API key; defaults to `$FAL_KEY` (or `$FAL_KEY_ID:$FAL_KEY_SECRET`).
        base_url: The queue root; defaults to `https://$FAL_QUEUE_RUN_HOST`, else fal's.
        storage_url: Where uploads are initiated; defaults to fal's REST root.
        max_connections: Pool size of each client.
        timeout: Timeouts of the keyed client.

    Raises:
        AuthenticationError: No key anywhere (the message says where one goes).
    """

    def __init__(
        self,
        *,
        key: str | None = None,
        base_url: str | None = None,
        storage_url: str | None = None,
        max_connections: int = 100,
        timeout: httpx.Timeout | None = None,
    ) -> None:
        import httpx

        secret = key or find_key()
        if not secret:
            raise missing_key_error()
        self._secret = secret
        # Known to the core by value: every error text and CLI output hides it, wherever it came from.
        register_secret(secret)
        register_secret(secret.partition(":")[2])  # the secret half of `<key id>:<secret>`, alone
        host = os.environ.get(ENV_QUEUE_HOST)
        self.base_url = (base_url or (f"https://{host}" if host else DEFAULT_BASE_URL)).rstrip("/")
        self.storage_url = (storage_url or DEFAULT_STORAGE_URL).rstrip("/")
        # Few idle sockets kept: httpcore scans every pooled connection for each request.
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=20)
        self.http = httpx.AsyncClient(
            headers={"Authorization": f"Key {secret}", "User-Agent": _USER_AGENT},
            timeout=timeout or httpx.Timeout(30.0, connect=10.0, pool=60.0),
            limits=limits,
            # A redirect could carry the key to another host; fal's queue answers without them.
            follow_redirects=False,
        )
        self._max_connections = max_connections
        self._downloads: httpx.AsyncClient | None = None

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values to hide from any text that leaves the backend."""
        return (self._secret,)

    @property
    def downloads(self) -> httpx.AsyncClient:
        """A pool that carries no key: output files (fal's CDN) and signed upload URLs."""
        if self._downloads is None:
            import httpx

            self._downloads = httpx.AsyncClient(
                follow_redirects=True,
                timeout=httpx.Timeout(60.0, connect=10.0),
                limits=httpx.Limits(max_connections=self._max_connections, max_keepalive_connections=20),
            )
        return self._downloads

    def keyed(self, url: str) -> bool:
        """Whether `url` is on an endpoint the key may be sent to."""
        return any(url == root or url.startswith(root + "/") for root in (self.base_url, self.storage_url))

    async def aclose(self) -> None:
        """Close both pools."""
        await self.http.aclose()
        if self._downloads is not None:
            await self._downloads.aclose()
            self._downloads = None

    def __repr__(self) -> str:
        return f"FalConnection(base_url={self.base_url!r}, storage_url={self.storage_url!r}, key=set)"

    def __reduce__(self) -> Any:
        # A connection holds live pools and a secret; neither belongs in a pickled job.
        raise TypeError("a FalConnection cannot be pickled")
