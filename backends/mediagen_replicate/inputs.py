"""Inputs: the artifacts among a model's inputs, as URLs the model can read.

An artifact that already is an http(s) URL is passed as that URL, so a hosted output goes on to
the next hosted call without a download (pass-by-reference). Small media (256 kB by default) go
inline as `data:` URLs; larger ones are uploaded through `POST /v1/files` first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from mediagen._media import suffix_for_media_type, to_data_url
from mediagen.artifacts import Artifact

__all__ = ["DEFAULT_INLINE_MAX_BYTES", "Upload", "media_to_inputs", "media_url"]

DEFAULT_INLINE_MAX_BYTES = 256 * 1024
"""Largest input sent inline as a data URL; Replicate asks for files above this to be uploaded."""

Upload = Callable[[bytes, str, str], Awaitable[str]]
"""`(data, filename, media type)` → the URL of the uploaded file."""


async def media_to_inputs(inputs: Mapping[str, Any], *, upload: Upload, inline_max_bytes: int) -> dict[str, Any]:
    """Replace the artifacts among inputs (also inside lists) by URLs a model can read.

    Args:
        inputs: Input name → value.
        upload: Uploads bytes and returns the file's URL (`POST /v1/files`).
        inline_max_bytes: Largest file sent inline as a data URL.

    Returns:
        A copy of `inputs` holding strings where artifacts were.
    """
    done: dict[int, str] = {}

    async def one(artifact: Artifact) -> str:
        # One artifact used twice (image and control image) is sent, or uploaded, once.
        if id(artifact) not in done:
            done[id(artifact)] = await media_url(artifact, upload=upload, inline_max_bytes=inline_max_bytes)
        return done[id(artifact)]

    converted: dict[str, Any] = {}
    for name, value in inputs.items():
        if isinstance(value, Artifact):
            converted[name] = await one(value)
        elif isinstance(value, (list, tuple)) and any(isinstance(v, Artifact) for v in value):
            converted[name] = [await one(v) if isinstance(v, Artifact) else v for v in value]
        else:
            converted[name] = value
    return converted


async def media_url(artifact: Artifact, *, upload: Upload, inline_max_bytes: int) -> str:
    """The URL a model reads `artifact` from: its own, a data URL, or an uploaded file's.

    Args:
        artifact: An input artifact.
        upload: Uploads bytes and returns the file's URL.
        inline_max_bytes: Largest file sent inline.

    Returns:
        An http(s) or data URL.
    """
    url = str(artifact.url) if artifact.url else None
    if url and url.startswith(("https://", "http://")):
        return url
    # Reading a path or encoding a PIL image may take a while: not on the event loop.
    data = await asyncio.to_thread(artifact.read)
    media_type = artifact.media_type
    if len(data) <= inline_max_bytes:
        return url if url and url.startswith("data:") else to_data_url(data, media_type)
    name = artifact.path.name if artifact.path is not None else f"input{suffix_for_media_type(media_type) or ''}"
    return await upload(data, name, media_type)
