"""Outputs: a prediction's output URLs into artifacts, fetched lazily or all at once.

A prediction's output is a URL, a list of URLs, or an object of them (TRELLIS: a GLB and preview
videos). Every `https:`, `http:` or `data:` URL in it becomes a lazy artifact of the kind its name
says (the request's kind when the name says nothing), the main kind first. Nothing is fetched
until the artifact is read; `download_all` fetches them now, streamed with a size cap, and
re-sniffs each type from its bytes. Input media go the other way in `inputs.py`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from mediagen._download import ByteBudget
from mediagen._media import (
    Kind,
    decode_data_url,
    kind_of_media_type,
    media_type_for_name,
    sniff_media_type,
)
from mediagen.artifacts import Artifact, artifact_for_url
from mediagen.errors import GenerationFailedError
from mediagen.hosted import kind_of_output

__all__ = ["artifacts_from_output", "output_urls"]

_URL_PREFIXES = ("https://", "http://", "data:")


# -- outputs ------------------------------------------------------------------------------------


def output_urls(output: Any, order: Sequence[str] = ()) -> Iterator[tuple[str, str]]:
    """Every media URL in an output, with where it was found (`""`, `"0"`, `"model_file"` ...).

    Args:
        output: The prediction's `output`.
        order: Keys of an object output to visit first, in this order.

    Yields:
        `(location, url)` pairs, in output order.
    """
    yield from _walk(output, "", order)


def _walk(value: Any, where: str, order: Sequence[str]) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        if value.startswith(_URL_PREFIXES):
            yield where, value
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _walk(item, f"{where}.{i}" if where else str(i), order)
    elif isinstance(value, Mapping):
        keys = [k for k in order if k in value] + [k for k in value if k not in order]
        for key in keys:
            yield from _walk(value[key], f"{where}.{key}" if where else str(key), order)


def artifacts_from_output(
    output: Any,
    *,
    kind: Kind,
    order: Sequence[str] = (),
    max_bytes: int,
    metadata: Mapping[str, Any] | None = None,
    budget: ByteBudget | None = None,
) -> list[Artifact]:
    """Lazy artifacts for the media URLs in an output, those of `kind` first.

    Args:
        output: The prediction's `output`.
        kind: What the request asked for; used when a URL's name tells nothing.
        order: Keys of an object output, the main one first.
        max_bytes: Size cap of each artifact's download (a `data:` URL's too).
        metadata: Put on every artifact (the output's location is added as `output`).
        budget: The result's total download budget, shared by its artifacts.

    Returns:
        The artifacts; empty when the output holds no media URL.

    Raises:
        MediaTooLargeError: A `data:` URL passes `max_bytes`, or the data URLs the budget.
        GenerationFailedError: A `data:` URL is malformed or holds no media.
    """
    found: list[Artifact] = []
    for where, url in output_urls(output, order):
        info = {**(metadata or {}), "output": where}
        if url.startswith("data:"):
            try:
                data, declared = decode_data_url(url, max_bytes=max_bytes)
            except ValueError as exc:
                raise GenerationFailedError(f"output {where or '0'} is a malformed data: URL: {exc}") from exc
            sniffed = sniff_media_type(data)
            if sniffed is None:
                raise GenerationFailedError(f"output {where or '0'} is a data: URL that holds no media ({declared})")
            media_type = declared if kind_of_media_type(declared) == kind_of_media_type(sniffed) else sniffed
            found.append(
                artifact_for_url(
                    url,
                    kind=kind_of_output(media_type, kind),
                    media_type=media_type,
                    metadata=info,
                    max_bytes=max_bytes,
                    budget=budget,
                )
            )
        else:
            found.append(
                artifact_for_url(
                    url,
                    kind=kind_of_output(media_type_for_name(url), kind),
                    metadata=info,
                    max_bytes=max_bytes,
                    budget=budget,
                )
            )
    # The artifacts asked for lead; previews (a mesh's turntable video) follow, in output order.
    return sorted(found, key=lambda a: a.kind != kind)
