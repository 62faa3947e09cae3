"""Checking webhook deliveries: signed by the provider, recent, and not seen before.

Replicate (and OpenAI, and any sender following the Standard Webhooks spec) signs each delivery
with three headers: `webhook-id` (unique per event, the same on the sender's retries),
`webhook-timestamp` (unix seconds) and `webhook-signature` (one or more `v1,<base64>` values, each
an HMAC-SHA256 keyed with the base64-decoded secret after `whsec_`, over
`"{webhook-id}.{webhook-timestamp}.{body}"`).

`verify_webhook` fails closed:

- a secret that is empty, not base64, or shorter than `MIN_SECRET_BYTES` once decoded is a setup
  mistake and raises `ConfigError` (a delivery "signed" with an empty key must never verify);
- a tolerance that is negative, NaN or infinite raises `ConfigError`;
- anything odd about the delivery (a missing header, a body that is neither bytes nor encodable
  text, a timestamp that is not plain digits) returns False, never raises.

A valid signature within the tolerance still allows a replay inside that window. Pass a
`SeenIdStore` (`MemorySeenIds` for one process, `SQLiteSeenIds` shared by several) as `seen=` and a
delivery whose id was already accepted returns False.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

from .errors import ConfigError

__all__ = [
    "MIN_SECRET_BYTES",
    "sign_webhook",
    "SeenIdStore",
    "MemorySeenIds",
    "SQLiteSeenIds",
    "verify_webhook",
    "webhook_key",
]

MIN_SECRET_BYTES = 16
"""Shortest signing key accepted, in bytes after base64 decoding (Standard Webhooks keys are 24-64)."""

_TIMESTAMP = re.compile(r"[0-9]{1,15}")
_MAX_ID_CHARS = 256


@runtime_checkable
class SeenIdStore(Protocol):
    """Remembers accepted webhook ids so a replayed delivery can be refused.

    Implementations must make `claim` atomic: of two deliveries with one id racing each other,
    exactly one claims it.
    """

    def claim(self, webhook_id: str, *, expires_at: float, now: float) -> bool:
        """Record `webhook_id` as seen until `expires_at` (unix seconds).

        Args:
            webhook_id: The delivery's `webhook-id`.
            expires_at: Until when to remember it: after that the timestamp check refuses it anyway.
            now: The current time on the verifier's clock (records expired by then are forgotten).

        Returns:
            True when the id was not seen (or its record expired); False for a replay.
        """
        ...

    def release(self, webhook_id: str) -> None:
        """Forget `webhook_id`, so the sender's retry of a delivery the app failed to handle is accepted."""
        ...


class MemorySeenIds:
    """A `SeenIdStore` in this process's memory (lost on restart; not shared between workers).

    Records expire with the tolerance window (after that the timestamp check refuses the delivery
    anyway), so the store stays as small as the traffic of one window.
    """

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def claim(self, webhook_id: str, *, expires_at: float, now: float) -> bool:  # noqa: D102
        with self._lock:
            # Prune what expired, so the dictionary only holds one window's worth.
            for key in [k for k, until in self._until.items() if until <= now]:
                del self._until[key]
            if webhook_id in self._until:
                return False
            self._until[webhook_id] = expires_at
            return True

    def release(self, webhook_id: str) -> None:  # noqa: D102
        with self._lock:
            self._until.pop(webhook_id, None)

    def __len__(self) -> int:
        return len(self._until)

    def __repr__(self) -> str:
        return f"MemorySeenIds({len(self)} ids)"


class SQLiteSeenIds:
    """A `SeenIdStore` in a SQLite file, shared by every process (web workers) that opens it.

    Args:
        path: The database file; created (readable by its owner only) when missing.
        timeout_s: How long a claim waits for another process holding the database.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Created private: the ids are not secret, but nobody else should be able to plant some.
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY, expires_at REAL NOT NULL)")

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # One connection per call: safe from any thread and any process; SQLite serialises writers.
        db = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        try:
            yield db
        finally:
            db.close()

    def claim(self, webhook_id: str, *, expires_at: float, now: float) -> bool:  # noqa: D102
        with self._connect() as db:
            # BEGIN IMMEDIATE takes the write lock first: the delete and the insert are one step.
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM seen WHERE expires_at <= ?", (now,))
                cursor = db.execute(
                    "INSERT INTO seen (id, expires_at) VALUES (?, ?) ON CONFLICT(id) DO NOTHING",
                    (webhook_id, expires_at if math.isfinite(expires_at) else 1e300),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return cursor.rowcount == 1

    def release(self, webhook_id: str) -> None:  # noqa: D102
        with self._connect() as db:
            db.execute("DELETE FROM seen WHERE id = ?", (webhook_id,))

    def __repr__(self) -> str:
        return f"SQLiteSeenIds({str(self.path)!r})"


def webhook_key(secret: str) -> bytes:
    """The HMAC key in a `whsec_...` secret, checked.

    Args:
        secret: The signing secret, with or without its `whsec_` prefix.

    Returns:
        The decoded key.

    Raises:
        ConfigError: The secret is not a string, not base64, or shorter than `MIN_SECRET_BYTES`.
    """
    if not isinstance(secret, str):
        raise ConfigError(f"a webhook secret must be a string like 'whsec_...', not {type(secret).__name__}")
    encoded = secret.strip().removeprefix("whsec_")
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(
            "the webhook secret is not a 'whsec_<base64>' value; copy it from GET /v1/webhooks/default/secret"
        ) from None
    if len(key) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"the webhook secret is empty or too short ({len(key)} bytes, at least {MIN_SECRET_BYTES} "
            "needed): a short key lets anyone sign deliveries. Check the value the app was given."
        )
    return key


def _digest(key: bytes, webhook_id: str, timestamp: str, payload: bytes) -> bytes:
    # The Standard Webhooks construction: HMAC-SHA256 over "<id>.<timestamp>.<body>".
    signed = webhook_id.encode("utf-8") + b"." + timestamp.encode("ascii") + b"." + payload
    return hmac.new(key, signed, hashlib.sha256).digest()


def sign_webhook(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value of a delivery, as `verify_webhook` checks it.

    Examples:
        >>> sign_webhook("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
        ...              b'{"test": 2432232314}')
        'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE='

    Raises:
        ConfigError: The secret is malformed or too short (see `webhook_key`).
    """
    return "v1," + base64.b64encode(_digest(webhook_key(secret), webhook_id, str(timestamp), body)).decode()


def _check_tolerance(tolerance_s: float | None) -> None:
    if tolerance_s is None:
        return
    if isinstance(tolerance_s, bool) or not isinstance(tolerance_s, (int, float)):
        raise ConfigError(f"tolerance_s must be a number of seconds or None, not {type(tolerance_s).__name__}")
    if not math.isfinite(tolerance_s) or tolerance_s < 0:
        raise ConfigError(
            f"tolerance_s must be a finite number of seconds >= 0 (got {tolerance_s!r}); None turns the check off"
        )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == name:
            return value if isinstance(value, str) else None
    return None


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes | str,
    secret: str,
    tolerance_s: float | None = 300,
    *,
    now: float | None = None,
    seen: SeenIdStore | None = None,
) -> bool:
    """Check that a webhook delivery was signed with `secret`, is recent, and (with `seen`) is new.

    Args:
        headers: The delivery's headers (any letter case): `webhook-id`, `webhook-timestamp`,
            `webhook-signature`.
        body: The raw request body, exactly as received (re-serialised JSON will not verify).
        secret: The signing secret, `"whsec_..."` (Replicate's: `GET /v1/webhooks/default/secret`).
        tolerance_s: Largest accepted difference between the timestamp and now, in seconds; None
            skips the check (then only `seen` stops replays).
        now: The current time (`time.time()`), for tests.
        seen: Where accepted ids are recorded; a delivery whose id is there returns False. The id
            is recorded only once the signature and the timestamp have passed.

    Returns:
        True when a signature matches, the timestamp is within tolerance and the id is new; False
        for anything else about the delivery (missing or malformed headers, an odd body).

    Raises:
        ConfigError: The secret is empty, malformed or too short, or `tolerance_s` is negative
            or not finite: mistakes in the app's setup, never a reason to accept or refuse quietly.

    Examples:
        A web handler answering 401 to anything not signed, and 200 once to each event::

            from mediagen.webhooks import SQLiteSeenIds, verify_webhook

            SEEN = SQLiteSeenIds("/var/lib/app/webhook-ids.sqlite")

            async def replicate_hook(request):
                body = await request.body()
                if not verify_webhook(request.headers, body, os.environ["REPLICATE_WEBHOOK_SECRET"], seen=SEEN):
                    return Response(status_code=401)
                ...
    """
    # 1. The app's own settings: a mistake there raises, whatever the delivery looks like.
    key = webhook_key(secret)
    _check_tolerance(tolerance_s)
    # 2. The delivery: anything odd is simply not verified.
    try:
        if isinstance(body, str):
            payload = body.encode("utf-8")  # a lone surrogate raises here
        elif isinstance(body, (bytes, bytearray, memoryview)):
            payload = bytes(body)
        else:
            return False
        webhook_id = _header(headers, "webhook-id")
        timestamp = _header(headers, "webhook-timestamp")
        signatures = _header(headers, "webhook-signature")
        if not webhook_id or not timestamp or not signatures or len(webhook_id) > _MAX_ID_CHARS:
            return False
        if _TIMESTAMP.fullmatch(timestamp) is None:
            return False
        sent_at = int(timestamp)
        current = time.time() if now is None else now
        if tolerance_s is not None and not abs(current - sent_at) <= tolerance_s:
            return False
        expected = _digest(key, webhook_id, timestamp, payload)
    except (UnicodeError, AttributeError, TypeError, ValueError):
        return False
    found = False
    for candidate in signatures.split():
        version, _, encoded = candidate.partition(",")
        if version != "v1" or not encoded:
            continue
        try:
            signature = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        # Check every signature (no early exit), each in constant time.
        found = hmac.compare_digest(signature, expected) or found
    if not found:
        return False
    # 3. Signed and recent: refuse it if it was accepted before.
    if seen is not None:
        # Keep the id for as long as a delivery with this timestamp can pass the time check.
        expires_at = math.inf if tolerance_s is None else sent_at + tolerance_s + 1.0
        return bool(seen.claim(webhook_id, expires_at=expires_at, now=current))
    return True
