"""fal: mediagen requests run as jobs on fal's queue, for any fal app id.

Use it as `model="fal:fal-ai/flux/schnell"` (or any `owner/alias[/path]` app id) with `FAL_KEY` set.
The backend speaks fal's queue REST API with httpx (the official `fal_client` reaches its queue host
over https only, from the environment; see `mediagen_fal.client`).

Examples:
    >>> import mediagen as mg
    >>> async with mg.Client() as client:  # doctest: +SKIP
    ...     res = await client.image("a red fox", model="fal:fal-ai/flux/schnell")
"""

from __future__ import annotations

try:
    import httpx as _httpx  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(f"pip install 'mediagen[fal]' to use 'fal:' models ({exc})") from exc

from .apps import AppId
from .backend import FalBackend
from .mapping import CURATED
from .options import FalOptions

__all__ = ["CURATED", "AppId", "FalBackend", "FalOptions"]
