"""Webhooks: asking Replicate to call an app back, and checking that a callback came from Replicate.

Sending side: `options={"webhook": url, "webhook_events_filter": [...]}` on a request are passed to
the create call as they are (`webhook_fields`).

Receiving side: `verify_webhook(headers, body, secret)` checks a delivery the way Replicate signs it
(Standard Webhooks): `webhook-signature` holds one or more `v1,<base64>` signatures, each an
HMAC-SHA256 keyed with the base64-decoded part of the secret after `whsec_`, over
`"{webhook-id}.{webhook-timestamp}.{body}"`. The secret comes from `GET /v1/webhooks/default/secret`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

__all__ = ["WEBHOOK_EVENTS", "WebhookEvent", "verify_webhook", "webhook_fields"]

WebhookEvent = Literal["start", "output", "logs", "completed"]
WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = ("start", "output", "logs", "completed")
"""What a webhook can be sent for; Replicate's default is output and completed."""


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes | str,
    secret: str,
    tolerance_s: float | None = 300,
    *,
    now: float | None = None,
) -> bool:
    """Check that a webhook delivery was signed by Replicate with `secret`, and is recent.

    Args:
        headers: The delivery's headers (any letter case): `webhook-id`, `webhook-timestamp`,
            `webhook-signature`.
        body: The raw request body, exactly as received (re-serialised JSON will not verify).
        secret: The signing secret, `"whsec_..."` (from `GET /v1/webhooks/default/secret`).
        tolerance_s: Largest accepted difference between the timestamp and now, in seconds, which
            stops replays of old deliveries; None skips the check.
        now: The current time (`time.time()`), for tests.

    Returns:
        True when a signature matches and the timestamp is within tolerance; False otherwise
        (missing headers, a malformed secret or signature included).

    Examples:
        A web handler answering 401 to anything Replicate did not sign::

            from mediagen_replicate import verify_webhook

            async def replicate_hook(request):
                body = await request.body()
                if not verify_webhook(request.headers, body, os.environ["REPLICATE_WEBHOOK_SECRET"]):
                    return Response(status_code=401)
                prediction = json.loads(body)
                ...
    """
    lower = {str(k).lower(): str(v) for k, v in headers.items()}
    webhook_id = lower.get("webhook-id")
    timestamp = lower.get("webhook-timestamp")
    signatures = lower.get("webhook-signature")
    if not webhook_id or not timestamp or not signatures:
        return False
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    if tolerance_s is not None and abs((time.time() if now is None else now) - sent_at) > tolerance_s:
        return False
    key = _secret_key(secret)
    if key is None:
        return False
    payload = body if isinstance(body, bytes) else body.encode()
    expected = hmac.new(key, webhook_id.encode() + b"." + timestamp.encode() + b"." + payload, hashlib.sha256).digest()
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
    return found


def webhook_fields(webhook: str | None, events: Sequence[str] | None) -> dict[str, Any]:
    """The create-body fields that ask Replicate for webhooks.

    Args:
        webhook: The URL Replicate POSTs the prediction to; None for no webhook.
        events: Which events to send (`start`, `output`, `logs`, `completed`); None for Replicate's
            default.

    Returns:
        `{"webhook": ..., "webhook_events_filter": [...]}` with only the fields given.
    """
    fields: dict[str, Any] = {}
    if webhook is not None:
        fields["webhook"] = webhook
    if events is not None:
        fields["webhook_events_filter"] = list(dict.fromkeys(events))
    return fields


def _secret_key(secret: str) -> bytes | None:
    encoded = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
