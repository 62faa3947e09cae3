"""Media in and out: fal File objects into lazy artifacts, input artifacts into URLs an app reads.

Outputs
    fal apps answer with File objects (`{"url", "content_type", "file_name", "file_size", ...}`) under
    keys such as `images`, `video`, `audio_file`, `model_mesh`. Every File (and any bare media URL)
    becomes a lazy artifact of the kind its content type says, the app's main output first. Nothing is
    fetched until the artifact is read, and then with a size cap; `download_all` fetches them now.

Inputs
    An artifact that already is an http(s) URL goes by that URL (a fal output feeds the next fal job
    without a download). Small media go inline as `data:` URLs (fal's apps accept them); larger ones
    are uploaded through fal's storage API first: `POST {storage}/storage/upload/initiate` with the
    key, then a `PUT` of the bytes to the signed URL it returns, without the key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

from mediagen._download import ByteBudget
from mediagen._media import (
    Kind,
    decode_data_url,
    kind_of_media_type,
    media_type_for_name,
    sniff_media_type,
    suffix_for_media_type,
    to_data_url,
)
from mediagen.artifacts import Artifact, artifact_for_url
from mediagen.errors import GenerationFailedError
from mediagen.hosted import kind_of_output

__all__ = [
    "DEFAULT_INLINE_MAX_BYTES",
    "Upload",
    "artifacts_from_output",
    "media_to_inputs",
    "output_files",
]

DEFAULT_INLINE_MAX_BYTES = 256 * 1024
"""Largest input sent inline as a data URL; larger ones are uploaded (fal advises uploads for big files)."""

Upload = Callable[[bytes, str, str], Awaitable[str]]
"""`(data, file name, media type)` → the URL of the stored file."""

_URL_PREFIXES = ("https://", "http://", "data:")


def output_files(output: Any, order: Sequence[str] = ()) -> Iterator[tuple[str, str, str | None]]:
    """Every media file in an output: `(where, url, declared content type)`, main keys first."""
    yield from _walk(output, "", order)


def _walk(value: Any, where: str, order: Sequence[str]) -> Iterator[tuple[str, str, str | None]]:
    if isinstance(value, Mapping):
        url = value.get("url")
        if isinstance(url, str) and url.startswith(_URL_PREFIXES):
            declared = value.get("content_type")
            yield where, url, declared if isinstance(declared, str) else None
            return
        keys = [k for k in order if k in value] + [k for k in value if k not in order]
        for key in keys:
            yield from _walk(value[key], f"{where}.{key}" if where else str(key), ())
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _walk(item, f"{where}.{i}" if where else str(i), ())
    elif (
        isinstance(value, str)
        and value.startswith(_URL_PREFIXES)
        and where.split(".")[-1] in ("url", "video_url", "audio_url", "image_url")
    ):
        yield where, value, None


def artifacts_from_output(
    output: Any,
    *,
    kind: Kind,
    order: Sequence[str] = (),
    max_bytes: int,
    metadata: Mapping[str, Any] | None = None,
    budget: ByteBudget | None = None,
) -> list[Artifact]:
    """Lazy artifacts for the files in an output, those of `kind` first.

    Args:
        output: The job's result JSON.
        kind: What the request asked for; used when a file's type says nothing.
        order: Output keys holding the main media, in order.
        max_bytes: Size cap of each artifact's download (a `data:` URL's too).
        metadata: Put on every artifact (the file's location is added as `output`).
        budget: The result's total download budget, shared by its artifacts.

    Raises:
        MediaTooLargeError: A `data:` URL passes `max_bytes`.
        GenerationFailedError: A `data:` URL is malformed.
    """
    found: list[Artifact] = []
    for where, url, declared in output_files(output, order):
        info = {**(metadata or {}), "output": where}
        if url.startswith("data:"):
            try:
                data, inline = decode_data_url(url, max_bytes=max_bytes)
            except ValueError as exc:
                raise GenerationFailedError(
                    f"fal output {where or '0'} is a malformed data: URL: {exc}", provider="fal"
                ) from exc
            media_type = inline or sniff_media_type(data) or declared
        else:
            media_type = _usable(declared) or media_type_for_name(url)
        artifact_kind = kind_of_output(media_type, kind)
        extra: dict[str, Any] = {"media_type": media_type} if media_type else {}
        found.append(
            artifact_for_url(url, kind=artifact_kind, metadata=info, max_bytes=max_bytes, budget=budget, **extra)
        )
    # The artifacts asked for lead; previews and extras follow, in output order.
    return sorted(found, key=lambda a: a.kind != kind)


def _usable(content_type: str | None) -> str | None:
    # fal's examples sometimes declare "image/png" for a WAV; only trust a type that names a kind.
    if content_type and kind_of_media_type(content_type.split(";")[0].strip()) is not None:
        return content_type.split(";")[0].strip()
    return None


async def media_to_inputs(inputs: Mapping[str, Any], *, upload: Upload, inline_max_bytes: int) -> dict[str, Any]:
    """Replace the artifacts among inputs (also inside lists) by URLs an app can read."""
    done: dict[int, str] = {}

    async def one(artifact: Artifact) -> str:
        # One artifact used twice (image and reference) is sent, or uploaded, once.
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
    """The URL an app reads `artifact` from: its own, a data URL, or an uploaded file's."""
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
