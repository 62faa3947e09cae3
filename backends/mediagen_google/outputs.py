"""Google's answers into artifacts: inline images, and Veo videos fetched lazily with the key.

Imagen answers `predictions[i].bytesBase64Encoded`; Gemini image models answer `inlineData` parts;
both arrive in memory. Veo answers a file URI on the API's own file service, which needs the key:
`GeminiFileVideo` holds that URI and fetches it on first read. The key goes only to the configured
endpoint (scheme, host and port must match), and only on the first request: redirects (the file
service sends the bytes from storage) are followed by hand, without the key, wherever they lead. The video is kept as Veo made it, soundtrack and all.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Mapping
from typing import Any

from mediagen._config import DEFAULT_MAX_DOWNLOAD_BYTES
from mediagen._media import sniff_media_type
from mediagen.artifacts import Image, Video
from mediagen.backend import check_remote_allowed
from mediagen.errors import DownloadError, GenerationFailedError

from .client import tls_context
from .errors import PROVIDER

__all__ = ["GeminiFileVideo", "image_from_base64", "imagen_images", "gemini_images", "veo_uris"]

_MAX_REDIRECTS = 5
_ATTEMPTS = 6
"""Tries of a video download (it is a read: repeating it costs nothing)."""


def image_from_base64(encoded: Any, *, where: str, model: str, metadata: Mapping[str, Any]) -> Image:
    """One image from base64 (or raw bytes, as the official client decodes them).

    Raises:
        GenerationFailedError: The data is missing, not base64, or not an image.
    """
    if isinstance(encoded, (bytes, bytearray)):
        raw = bytes(encoded)
    elif isinstance(encoded, str):
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise GenerationFailedError(f"{where} is not valid base64", provider=PROVIDER, model=model) from exc
    else:
        raise GenerationFailedError(f"{where} holds no image data", provider=PROVIDER, model=model)
    media_type = sniff_media_type(raw)
    if media_type is None or not media_type.startswith("image/"):
        raise GenerationFailedError(
            f"{where} is not an image ({media_type or 'unknown bytes'})", provider=PROVIDER, model=model
        )
    return Image(raw, media_type=media_type, metadata=dict(metadata))


def imagen_images(answer: Mapping[str, Any], *, model: str) -> tuple[list[Image], list[str]]:
    """The images of a `:predict` answer, and the reasons given for any filtered out."""
    images: list[Image] = []
    filtered: list[str] = []
    for i, prediction in enumerate(answer.get("predictions") or []):
        if not isinstance(prediction, Mapping):
            continue
        if prediction.get("raiFilteredReason"):
            filtered.append(str(prediction["raiFilteredReason"]))
            continue
        if "bytesBase64Encoded" not in prediction:
            continue  # e.g. the positive-prompt safety attributes entry
        images.append(
            image_from_base64(
                prediction["bytesBase64Encoded"],
                where=f"predictions[{i}]",
                model=model,
                metadata={"provider": PROVIDER, "model": model, "output": i},
            )
        )
    return images, filtered


def gemini_images(response: Any, *, model: str) -> tuple[list[Image], list[str], str | None]:
    """The images of a `generate_content` answer, its text parts, and why it stopped if not normally."""
    images: list[Image] = []
    texts: list[str] = []
    stopped: str | None = None
    feedback = getattr(response, "prompt_feedback", None)
    if feedback is not None and getattr(feedback, "block_reason", None):
        return [], [], str(feedback.block_reason)
    for c, candidate in enumerate(getattr(response, "candidates", None) or []):
        reason = getattr(candidate, "finish_reason", None)
        if reason is not None and str(getattr(reason, "value", reason)) not in (
            "STOP",
            "MAX_TOKENS",
            "FINISH_REASON_UNSPECIFIED",
        ):
            stopped = str(getattr(reason, "value", reason))
        content = getattr(candidate, "content", None)
        for p, part in enumerate(getattr(content, "parts", None) or []):
            inline = getattr(part, "inline_data", None)
            if inline is not None and inline.data:
                images.append(
                    image_from_base64(
                        inline.data,
                        where=f"candidates[{c}].content.parts[{p}]",
                        model=model,
                        metadata={"provider": PROVIDER, "model": model, "output": len(images)},
                    )
                )
            elif getattr(part, "text", None):
                texts.append(str(part.text))
    return images, texts, stopped


def veo_uris(operation: Mapping[str, Any]) -> tuple[list[str], int, list[str]]:
    """`(video URIs, videos filtered, filter reasons)` of a finished Veo operation."""
    response = operation.get("response") or {}
    answer = response.get("generateVideoResponse") or {}
    uris = []
    for sample in answer.get("generatedSamples") or []:
        uri = ((sample or {}).get("video") or {}).get("uri")
        if isinstance(uri, str):
            uris.append(uri)
    reasons = [str(r) for r in answer.get("raiMediaFilteredReasons") or []]
    return uris, int(answer.get("raiMediaFilteredCount") or 0), reasons


class GeminiFileVideo(Video):
    """A Veo video on the Gemini API's file service, fetched on first read.

    It has no `url` on purpose: the URI needs the key, so it must not be handed on to another
    provider by reference (it is in `metadata["uri"]`). It pickles as a plain, loaded `Video`.

    Args:
        uri: The file's URI, as the operation named it.
        key: The API key, sent only when `same_origin(uri)`.
        same_origin: Whether a URL is on the configured endpoint.
        max_bytes: Size cap of the download.
        metadata: Facts about the video.
        attempts: Tries of the download (a dropped connection, a 429 or a 5xx is tried again).
    """

    def __init__(
        self,
        uri: str,
        *,
        key: str,
        same_origin: Callable[[str], bool],
        max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
        metadata: Mapping[str, Any] | None = None,
        attempts: int = _ATTEMPTS,
    ) -> None:
        super().__init__(media_type="video/mp4", metadata={**(metadata or {}), "uri": uri}, max_bytes=max_bytes)
        self._attempts = max(1, attempts)
        self._uri = uri
        self.__key = key
        self._same_origin = same_origin

    def read(self) -> bytes:
        """The MP4, downloaded on first use (blocking)."""
        if self._data is None:
            self._data = _fetch_sync(self._uri, self._headers, max_bytes=self.max_bytes, attempts=self._attempts)
        return self._data

    async def aread(self, *, client: object | None = None) -> bytes:
        """The MP4, downloaded on first use without blocking the event loop."""
        if self._data is None:
            self._data = await _fetch_async(self._uri, self._headers, max_bytes=self.max_bytes, attempts=self._attempts)
        return self._data

    def _headers(self, url: str) -> dict[str, str]:
        return {"x-goog-api-key": self.__key} if self._same_origin(url) else {}

    def __reduce__(self) -> Any:
        return (_plain_video, (self.read(), self.media_type, dict(self.metadata)))


def _plain_video(data: bytes, media_type: str, metadata: dict[str, Any]) -> Video:
    return Video(data, media_type=media_type, metadata=metadata)


def _check(url: str) -> None:
    if not url.startswith(("https://", "http://")):
        raise DownloadError(f"refusing to fetch a video from {url[:60]!r} (not http(s))", provider=PROVIDER)
    check_remote_allowed(url)


def _fetch_sync(uri: str, headers: Callable[[str], dict[str, str]], *, max_bytes: int, attempts: int) -> bytes:
    import httpx

    last: DownloadError | None = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(_backoff(attempt, last))
        url = uri
        try:
            with httpx.Client(
                timeout=httpx.Timeout(120.0, connect=10.0), follow_redirects=False, verify=tls_context()
            ) as http:
                for _ in range(_MAX_REDIRECTS + 1):
                    _check(url)
                    with http.stream("GET", url, headers=headers(url) if url == uri else {}) as response:
                        if response.is_redirect:
                            url = str(response.url.join(response.headers["location"]))
                            continue
                        _raise_for(response.status_code, url, response.headers.get("retry-after"))
                        chunks, size = [], 0
                        for chunk in response.iter_bytes():
                            size += len(chunk)
                            _cap(size, max_bytes, url)
                            chunks.append(chunk)
                        return b"".join(chunks)
                raise DownloadError(f"too many redirects fetching {uri[:80]}", provider=PROVIDER, retryable=False)
        except httpx.HTTPError as exc:
            last = DownloadError(f"download failed ({type(exc).__name__}): {uri[:80]}", provider=PROVIDER)
            last.__cause__ = exc
        except DownloadError as exc:
            if not exc.retryable:
                raise
            last = exc
    assert last is not None
    raise last


async def _fetch_async(uri: str, headers: Callable[[str], dict[str, str]], *, max_bytes: int, attempts: int) -> bytes:
    import asyncio

    import httpx

    last: DownloadError | None = None
    for attempt in range(attempts):
        if attempt:
            await asyncio.sleep(_backoff(attempt, last))
        url = uri
        try:
            async with httpx.AsyncClient(
                timeout=httpx.Timeout(120.0, connect=10.0), follow_redirects=False, verify=tls_context()
            ) as http:
                for _ in range(_MAX_REDIRECTS + 1):
                    _check(url)
                    async with http.stream("GET", url, headers=headers(url) if url == uri else {}) as response:
                        if response.is_redirect:
                            url = str(response.url.join(response.headers["location"]))
                            continue
                        _raise_for(response.status_code, url, response.headers.get("retry-after"))
                        chunks, size = [], 0
                        async for chunk in response.aiter_bytes():
                            size += len(chunk)
                            _cap(size, max_bytes, url)
                            chunks.append(chunk)
                        return b"".join(chunks)
                raise DownloadError(f"too many redirects fetching {uri[:80]}", provider=PROVIDER, retryable=False)
        except httpx.HTTPError as exc:
            last = DownloadError(f"download failed ({type(exc).__name__}): {uri[:80]}", provider=PROVIDER)
            last.__cause__ = exc
        except DownloadError as exc:
            if not exc.retryable:
                raise
            last = exc
    assert last is not None
    raise last


def _raise_for(status: int, url: str, retry_after: str | None = None) -> None:
    if status >= 400:
        wait: float | None = None
        try:
            wait = float(retry_after) if retry_after is not None else None
        except ValueError:
            wait = None
        raise DownloadError(
            f"download failed with HTTP {status}: {url.split('?')[0][:100]}",
            provider=PROVIDER,
            status=status,
            retry_after=wait,
        )


def _backoff(attempt: int, last: DownloadError | None) -> float:
    """Seconds before retry `attempt`: doubling from 0.25 s up to 4 s, or longer if the server asked."""
    asked = last.retry_after if last is not None and last.retry_after is not None else 0.0
    return float(min(60.0, max(asked, min(4.0, 0.25 * 2 ** (attempt - 1)))))


def _cap(size: int, max_bytes: int, url: str) -> None:
    if size > max_bytes:
        raise DownloadError(
            f"download passed the size cap of {max_bytes} bytes: {url.split('?')[0][:100]}",
            provider=PROVIDER,
            retryable=False,
        )
