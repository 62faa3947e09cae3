"""OpenAI: GPT Image models (generate, edit with masks and references) and text-to-speech.

Use it as `model="openai:gpt-image-2"` (or `openai:gpt-4o-mini-tts` for speech) with
`OPENAI_API_KEY` set. Video is not offered: OpenAI shut the Sora API down on 2026-09-24.

Examples:
    >>> import mediagen as mg
    >>> async with mg.Client() as client:  # doctest: +SKIP
    ...     res = await client.image("a red fox", model="openai:gpt-image-2", aspect_ratio="3:2")
"""

from __future__ import annotations

try:
    import openai as _openai  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(f"pip install 'mediagen[openai]' to use 'openai:' models ({exc})") from exc

from .backend import OpenAIBackend
from .options import OpenAIOptions

__all__ = ["OpenAIBackend", "OpenAIOptions"]
