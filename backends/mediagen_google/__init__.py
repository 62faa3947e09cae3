"""Google: Imagen 4 and Gemini image models for pictures, Veo for video, on the Gemini API.

Use it as `model="google:imagen-4.0-generate-001"`, `"google:gemini-2.5-flash-image"` or
`"google:veo-3.0-generate-001"` with `GEMINI_API_KEY` (or `GOOGLE_API_KEY`) set.

Examples:
    >>> import mediagen as mg
    >>> async with mg.Client() as client:  # doctest: +SKIP
    ...     res = await client.video("waves at dusk", model="google:veo-3.0-generate-001")
"""

from __future__ import annotations

try:
    import httpx as _httpx  # noqa: F401
    from google import genai as _genai  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(f"pip install 'mediagen[google]' to use 'google:' models ({exc})") from exc

from .backend import GoogleBackend
from .options import GoogleOptions
from .outputs import GeminiFileVideo

__all__ = ["GoogleBackend", "GoogleOptions", "GeminiFileVideo"]
