"""What every hosted backend does with the output URLs a provider answers: class them, fetch them, count them.

A provider's answer names its outputs by URL. `kind_of_output` says which kind an output is (the
bytes' media type wins over the kind asked for, except that an animated GIF stands for a video);
`download_all` fetches the ones that are only URLs, with the size cap, the remote switch, the
result's byte budget and the backend's retry policy for downloads that failed in transit;
`warn_if_short` tells the caller when a model made fewer outputs than asked. Before any of that,
`check_output_count` refuses an answer naming far more outputs than asked for, and `read_capped`
reads an API answer (the JSON naming the outputs) with a size cap, so no server can make us hold
an unbounded body in memory.

Examples:
    >>> kind_of_output("image/gif", "video"), kind_of_output("audio/wav", "video"), kind_of_output(None, "mesh")
    ('video', 'audio', 'mesh')
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._config import DEFAULT_MAX_OUTPUTS_PER_N
from ._download import adownload
from ._media import Kind, kind_of_media_type, sniff_media_type
from ._remote import check_remote_allowed
from .artifacts import Artifact, artifact_from_bytes
from .errors import DownloadError, MediaTooLargeError
from .results import GenerationWarning

if TYPE_CHECKING:
    import httpx

    from .backend import RunContext
    from .policies import RetryPolicy
    from .requests import Request

__all__ = [
    "MAX_API_BODY_BYTES",
    "RETRYABLE_DOWNLOAD_STATUSES",
    "check_output_count",
    "download_all",
    "kind_of_output",
    "read_capped",
    "warn_if_short",
]

MAX_API_BODY_BYTES = 256 * 1024 * 1024
"""Largest API answer read (one whose outputs are inline `data:` URLs can be large, not this large)."""

RETRYABLE_DOWNLOAD_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""Statuses of a download (a plain GET) that may pass if sent again."""


def kind_of_output(media_type: str | None, wanted: Kind) -> Kind:
    """The kind of an output with this media type, when `wanted` was asked for."""
    found = kind_of_media_type(media_type)
    if found is None:
        return wanted
    if wanted == "video" and media_type == "image/gif":
        return "video"  # an animated GIF is how some video models answer
    return found


def in_transit(error: BaseException) -> bool:
    """Whether a failed download may pass if tried again: a lost connection or a passing status."""
    return isinstance(error, DownloadError) and (
        error.__cause__ is not None or error.status in RETRYABLE_DOWNLOAD_STATUSES
    )


async def download_all(
    artifacts: Sequence[Artifact],
    *,
    client: httpx.AsyncClient | None,
    max_bytes: int,
    retry: RetryPolicy | None = None,
    concurrency: int = 8,
) -> list[Artifact]:
    """Fetch every artifact that is only a URL; re-class one whose bytes are another kind.

    Args:
        artifacts: The artifacts as the backend made them from the provider's answer.
        client: The httpx client whose pool the downloads use (it must carry no API key).
        max_bytes: Largest body accepted (each artifact's byte budget, if it has one, holds too).
        retry: Retries of downloads that failed in transit (`in_transit`); None: none.
        concurrency: Downloads at once.

    Returns:
        The artifacts, loaded, in the same order.

    Raises:
        DownloadError: A download failed, passed the size cap, or was refused by the remote switch.
    """
    gate = asyncio.Semaphore(concurrency)

    async def fetch(artifact: Artifact) -> Artifact:
        if artifact.is_loaded or artifact.url is None:
            return artifact
        url, budget = artifact.url, artifact._budget
        if not url.startswith("data:"):
            check_remote_allowed(url)

        async def once() -> bytes:
            # With a retry policy, one try each: the policy decides about trying again.
            if retry is not None:
                return await adownload(url, max_bytes=max_bytes, client=client, budget=budget, attempts=1)
            return await adownload(url, max_bytes=max_bytes, client=client, budget=budget)

        async with gate:
            data = await (retry.run(once, is_retryable=in_transit) if retry is not None else once())
        sniffed = sniff_media_type(data)
        if kind_of_output(sniffed, artifact.kind) != artifact.kind:
            # The name said one kind, the bytes say another: the bytes win.
            return artifact_from_bytes(
                data, media_type=sniffed, url=url, metadata=artifact.metadata, max_bytes=max_bytes, budget=budget
            )
        return type(artifact)(
            data,
            media_type=sniffed or artifact.media_type,
            url=url,
            metadata=artifact.metadata,
            max_bytes=max_bytes,
            budget=budget,
        )

    return list(await asyncio.gather(*(fetch(a) for a in artifacts)))


def warn_if_short(request: Request, model: str, artifacts: Sequence[Artifact], ctx: RunContext) -> None:
    """Warn (on the result) when the model made fewer outputs of the asked kind than `request.n`."""
    primary = sum(1 for a in artifacts if a.kind == request.modality)
    if primary < request.n:
        ctx.warn(GenerationWarning.other(f"asked for {request.n} {request.modality}(s), {model} made {primary}"))


def check_output_count(count: int, n: int, *, per_n: int = DEFAULT_MAX_OUTPUTS_PER_N, model: str = "") -> None:
    """Refuse an answer that names more outputs than `per_n` for each output asked for.

    A model answers `n=1` with one file and perhaps a few previews; a thousand URLs is a broken or
    hostile server, and fetching them would cost time, disk and money.

    Raises:
        MediaTooLargeError: `count` passes `n * per_n`.
    """
    limit = max(1, n) * per_n
    if count > limit:
        raise MediaTooLargeError(
            f"{model or 'the model'} returned {count} outputs for n={n}; at most {limit} are accepted "
            f"({per_n} per output asked for: the max_outputs_per_n setting)",
            limit=limit,
        )


async def read_capped(response: httpx.Response, max_bytes: int, *, provider: str) -> None:
    """Read a streamed answer into `response` (so `.json()` works), refusing one past `max_bytes`.

    The response is closed in every case.

    Raises:
        MediaTooLargeError: The declared or the received length passes `max_bytes`.
    """
    try:
        declared = response.headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
            raise MediaTooLargeError(
                f"the API answered with {declared} bytes, past the cap of {max_bytes}",
                provider=provider,
                limit=max_bytes,
            )
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > max_bytes:
                raise MediaTooLargeError(
                    f"the API answered with more than {max_bytes} bytes", provider=provider, limit=max_bytes
                )
        response._content = bytes(body)  # what `Response.read()` sets; `.json()` and `.text` read it
    finally:
        await response.aclose()
