"""Google's answers into artifacts: inline images, and Veo videos fetched lazily with the key.

Imagen answers `predictions[i].bytesBase64Encoded`; Gemini image models answer `inlineData` parts;
both arrive in memory. Veo answers a file URI on the API's own file service, which needs the key:
`GeminiFileVideo` holds that URI and fetches it on first read, through the core's bounded download
(`mediagen._download`: size cap, total deadline, checked redirects, media sniffing). The key goes
only to the configured endpoint (scheme, host and port must match), and only while the download is
still there: once a redirect leaves it (the file service sends the bytes from storage), no hop
carries the key. The video is kept as Veo made it, soundtrack and all.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from typing import Any

from mediagen._config import DEFAULT_MAX_DOWNLOAD_BYTES
from mediagen._media import sniff_media_type
from mediagen.artifacts import Image, Video
from mediagen.errors import GenerationFailedError

from .errors import PROVIDER

__all__ = ["GeminiFileVideo", "image_from_base64", "imagen_images", "gemini_images", "veo_uris"]

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
        key: The API key, sent only when `same_origin(uri)`, and only until a redirect leaves it.
        same_origin: Whether a URL is on the configured endpoint.
        max_bytes: Size cap of the download.
        metadata: Facts about the video.
        attempts: Tries of the download (a dropped connection, a 408, 429 or 5xx is tried again).
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
            from mediagen._download import download

            self._data = download(
                self._uri,
                max_bytes=self.max_bytes,
                timeout=self.download_timeout,
                attempts=self._attempts,
                budget=self._budget,
                headers=self._headers,
            )
        return self._data

    async def aread(self, *, client: object | None = None) -> bytes:
        """The MP4, downloaded on first use without blocking the event loop."""
        if self._data is None:
            from mediagen._download import adownload

            # `client` is not used: a shared pool may carry default headers of its own.
            self._data = await adownload(
                self._uri,
                max_bytes=self.max_bytes,
                timeout=self.download_timeout,
                attempts=self._attempts,
                budget=self._budget,
                headers=self._headers,
            )
        return self._data

    def _headers(self, url: str) -> dict[str, str]:
        return {"x-goog-api-key": self.__key} if self._same_origin(url) else {}

    def __reduce__(self) -> Any:
        return (_plain_video, (self.read(), self.media_type, dict(self.metadata)))


def _plain_video(data: bytes, media_type: str, metadata: dict[str, Any]) -> Video:
    return Video(data, media_type=media_type, metadata=metadata)
