"""Replicate: mediagen requests run on Replicate's hosted models.

Use it as `model="replicate:owner/name"` (or `owner/name:<version>`) with `REPLICATE_API_TOKEN` set.
Apps that receive Replicate's webhooks check them with `verify_webhook`.

Examples:
    >>> import mediagen as mg
    >>> async with mg.Client() as client:  # doctest: +SKIP
    ...     res = await client.image("a red fox", model="replicate:black-forest-labs/flux-schnell")
"""

from __future__ import annotations

try:
    import httpx as _httpx  # noqa: F401
    import replicate as _replicate  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(f"pip install 'mediagen[replicate]' to use 'replicate:' models ({exc})") from exc

from .backend import ReplicateBackend
from .options import ReplicateOptions
from .webhooks import MemorySeenIds, SQLiteSeenIds, verify_webhook

__all__ = ["ReplicateBackend", "ReplicateOptions", "verify_webhook", "MemorySeenIds", "SQLiteSeenIds"]
