"""Webhooks: asking Replicate to call an app back, and checking that a callback came from Replicate.

Sending side: `options={"webhook": url, "webhook_events_filter": [...]}` on a request are passed to
the create call as they are (`webhook_fields`).

Receiving side: `verify_webhook(headers, body, secret, seen=...)` checks a delivery the way Replicate
signs it (Standard Webhooks). It is mediagen's one verifier, `mediagen.webhooks.verify_webhook`,
re-exported here: it fails closed on an empty or short secret (an error), refuses anything odd about a
delivery (False), and with a `SeenIdStore` (`MemorySeenIds`, `SQLiteSeenIds`) refuses replays. The
secret comes from `GET /v1/webhooks/default/secret`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from mediagen.webhooks import MemorySeenIds, SeenIdStore, SQLiteSeenIds, verify_webhook

__all__ = [
    "WEBHOOK_EVENTS",
    "WebhookEvent",
    "verify_webhook",
    "webhook_fields",
    "SeenIdStore",
    "MemorySeenIds",
    "SQLiteSeenIds",
]

WebhookEvent = Literal["start", "output", "logs", "completed"]
WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = ("start", "output", "logs", "completed")
"""What a webhook can be sent for; Replicate's default is output and completed."""


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
