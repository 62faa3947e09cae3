"""Webhooks: POSTing a prediction to the URL its creator gave, signed the way Replicate signs.

Each delivery carries `webhook-id` (the same on retries), `webhook-timestamp` (unix seconds) and
`webhook-signature: v1,<base64 HMAC-SHA256>` over `"{id}.{timestamp}.{body}"`, keyed with the
base64-decoded part of the secret after `whsec_`. So `mediagen_replicate.verify_webhook` and
`replicate.webhooks.validate` accept them with the secret from `GET /v1/webhooks/default/secret`.

Every token gets its own secret, derived from the server's master secret: one tenant cannot forge
deliveries for another. Deliveries of one prediction go out in order; `logs` deliveries at most
every 0.5 s. A webhook URL must be https (or http to a loopback address, for local relays and
tests), and may not name a private or link-local address: the server is not a proxy into its own
network. Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

from .._download import address_class
from .._remote import is_loopback_host
from ..webhooks import sign_webhook

if TYPE_CHECKING:
    import httpx

__all__ = ["WEBHOOK_EVENTS", "WebhookSender", "sign"]

logger = logging.getLogger("mediagen.serve")

WEBHOOK_EVENTS = ("start", "output", "logs", "completed")
_DEFAULT_EVENTS = ("output", "completed")
_LOGS_INTERVAL_S = 0.5
_ATTEMPTS = 3


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value for a delivery.

    Examples:
        >>> sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
        ...      b'{"test": 2432232314}')
        'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE='
    """
    return sign_webhook(secret, webhook_id, timestamp, body)


class WebhookSender:
    """Delivers webhooks in the background.

    Args:
        master_secret: The server's secret; each token's signing secret is derived from it.
        allow_http: `"loopback"` lets plain-http URLs name loopback addresses; `"never"` refuses them.
        client: The httpx client to send with (one is made, and closed, when None).
    """

    def __init__(
        self,
        master_secret: bytes,
        *,
        allow_http: Literal["loopback", "never"] = "loopback",
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._master = master_secret
        self._allow_http = allow_http
        self._client = client
        self._owned = client is None
        self._order: dict[str, asyncio.Lock] = {}
        self._last_logs: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_outcome: Callable[[Literal["delivered", "failed"]], None] | None = None
        """Told of each delivery's end (the server counts them in `/metrics`)."""

    def secret_for(self, token_name: str) -> str:
        """The signing secret of a token's webhooks (`whsec_...`)."""
        key = hmac.new(self._master, b"webhook-secret:" + token_name.encode(), hashlib.sha256).digest()[:24]
        return "whsec_" + base64.b64encode(key).decode()

    def check_url(self, url: str) -> str | None:
        """Why a webhook URL is refused, or None when it is acceptable."""
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if parts.scheme not in ("http", "https") or not host:
            return "webhook must be an https:// URL"
        if parts.username or parts.password:
            return "webhook URLs may not carry credentials"
        try:
            # The download layer's classification: carrier-grade NAT, IPv4-mapped and zoned
            # addresses included.
            kind: str | None = address_class(host)
        except ValueError:
            kind = None  # a host name
        loopback = is_loopback_host(host)
        if parts.scheme == "http" and not (loopback and self._allow_http == "loopback"):
            return "webhook must be an https:// URL (plain http goes only to loopback addresses)"
        if kind not in (None, "public") and not loopback:
            return "webhook may not name a private, link-local or reserved address"
        return None

    @staticmethod
    def wants(events: Sequence[str] | None, event: str) -> bool:
        """Whether a prediction with this filter gets a delivery for `event`.

        Outputs appear when a prediction completes, so with both `output` and `completed` wanted
        one delivery (the completed one) carries them.
        """
        chosen = set(events) if events is not None else set(_DEFAULT_EVENTS)
        if event == "output":
            return "output" in chosen and "completed" not in chosen
        return event in chosen

    def notify(
        self, prediction_id: str, url: str, events: Sequence[str] | None, event: str, token: str, body: bytes
    ) -> None:
        """Queue a delivery of `body` for `event`, if the prediction's filter asks for it."""
        if not self.wants(events, event):
            return
        if event == "logs":
            now = time.monotonic()
            if now - self._last_logs.get(prediction_id, 0.0) < _LOGS_INTERVAL_S:
                return
            self._last_logs[prediction_id] = now
        lock = self._order.setdefault(prediction_id, asyncio.Lock())
        task = asyncio.ensure_future(self._deliver(lock, url, self.secret_for(token), body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if event == "completed":
            task.add_done_callback(lambda _: self._forget(prediction_id))

    def _forget(self, prediction_id: str) -> None:
        self._last_logs.pop(prediction_id, None)
        lock = self._order.get(prediction_id)
        if lock is not None and not lock.locked():
            self._order.pop(prediction_id, None)

    async def _deliver(self, lock: asyncio.Lock, url: str, secret: str, body: bytes) -> None:
        import httpx

        async with lock:
            if self._client is None:
                self._client = httpx.AsyncClient(timeout=httpx.Timeout(10.0), follow_redirects=False)
            webhook_id = "msg_" + secrets.token_urlsafe(18)
            for attempt in range(1, _ATTEMPTS + 1):
                timestamp = int(time.time())
                headers = {
                    "content-type": "application/json",
                    "webhook-id": webhook_id,
                    "webhook-timestamp": str(timestamp),
                    "webhook-signature": sign(secret, webhook_id, timestamp, body),
                    "user-agent": "mediagen-serve",
                }
                try:
                    response = await self._client.post(url, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    why = f"{type(exc).__name__}"
                else:
                    if response.status_code < 300:
                        self._ended("delivered")
                        return
                    if response.status_code < 500 and response.status_code != 429:
                        why = f"HTTP {response.status_code}"
                        break  # the receiver refused it; sending it again will not change that
                    why = f"HTTP {response.status_code}"
                if attempt < _ATTEMPTS:
                    await asyncio.sleep(0.5 * 2 ** (attempt - 1))
            self._ended("failed")
            # The URL's path may hold the receiver's own secret: log only its host.
            logger.warning("webhook to %s failed (%s); giving up", urllib.parse.urlsplit(url).hostname, why)

    def _ended(self, outcome: Literal["delivered", "failed"]) -> None:
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    async def drain(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for queued deliveries."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def aclose(self) -> None:
        """Stop delivering; close the client if it was made here."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        if self._owned and self._client is not None:
            await self._client.aclose()
