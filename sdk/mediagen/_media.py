"""Media types: sniffing bytes, guessing from names, fetching URLs with a size cap."""

from __future__ import annotations

import base64
import binascii
import mimetypes
import time
import urllib.parse
from typing import Literal

from ._config import DEFAULT_DOWNLOAD_ATTEMPTS, DEFAULT_MAX_DOWNLOAD_BYTES
from .errors import DownloadError

__all__ = [
    "Kind",
    "sniff_media_type",
    "media_type_for_name",
    "kind_of_media_type",
    "suffix_for_media_type",
    "decode_data_url",
    "to_data_url",
    "download",
    "adownload",
]

Kind = Literal["image", "video", "audio", "mesh"]

_SUFFIXES: dict[str, str] = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/bmp": ".bmp",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "video/quicktime": ".mov",
    "audio/wav": ".wav",
    "audio/flac": ".flac",
    "audio/ogg": ".ogg",
    "audio/mpeg": ".mp3",
    "audio/mp4": ".m4a",
    "model/gltf-binary": ".glb",
    "model/obj": ".obj",
    "model/ply": ".ply",
}
_BY_SUFFIX = {v: k for k, v in _SUFFIXES.items()} | {".jpeg": "image/jpeg", ".wave": "audio/wav"}


def sniff_media_type(data: bytes) -> str | None:
    """Tell the media type of `data` from its first bytes.

    Args:
        data: The file's bytes (the first 64 are enough).

    Returns:
        A media type such as `"image/png"`, or None when the bytes match nothing known.
    """
    head = data[:64]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"ID3") or _is_mp3_frame(head):
        return "audio/mpeg"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"M4A ", b"M4B "):
            return "audio/mp4"
        if brand == b"qt  ":
            return "video/quicktime"
        return "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    if head.startswith(b"glTF"):
        return "model/gltf-binary"
    if head.startswith(b"ply\n") or head.startswith(b"ply\r\n"):
        return "model/ply"
    if head.startswith(b"BM"):
        return "image/bmp"
    text = head.lstrip()
    if text[:2] in (b"v ", b"o ", b"g ") or (text.startswith(b"# ") and b"\nv " in data[:4096]):
        return "model/obj"
    return None


def _is_mp3_frame(head: bytes) -> bool:
    # An MPEG audio frame header: 11 sync bits, a version other than "reserved", layer III.
    # This covers MPEG-1 (44.1/48 kHz), MPEG-2 (16-24 kHz) and MPEG-2.5 (8-12 kHz), with or without CRC.
    return (
        len(head) >= 2
        and head[0] == 0xFF
        and head[1] & 0xE0 == 0xE0
        and head[1] & 0x18 != 0x08
        and head[1] & 0x06 == 0x02
    )


def media_type_for_name(name: str) -> str | None:
    """Guess a media type from a file name or URL path."""
    path = urllib.parse.urlsplit(name).path if "://" in name else name
    dot = path.rfind(".")
    if dot < 0:
        return None
    suffix = path[dot:].lower()
    return _BY_SUFFIX.get(suffix) or mimetypes.guess_type("x" + suffix)[0]


def suffix_for_media_type(media_type: str | None) -> str | None:
    """The usual file suffix for a media type (`.png` for `image/png`)."""
    return _SUFFIXES.get(media_type or "")


def kind_of_media_type(media_type: str | None) -> Kind | None:
    """Which artifact kind holds a media type (an animated GIF counts as an image)."""
    if not media_type:
        return None
    major = media_type.split("/", 1)[0]
    if major == "image":
        return "image"
    if major == "video":
        return "video"
    if major == "audio":
        return "audio"
    if major == "model" or media_type in ("application/ply", "application/octet-stream+glb"):
        return "mesh"
    return None


def decode_data_url(url: str) -> tuple[bytes, str | None]:
    """Decode a `data:` URL.

    Args:
        url: `data:[<media type>][;base64],<data>`.

    Returns:
        The bytes and the declared media type (None when absent).

    Raises:
        ValueError: The URL is not a well-formed data URL.
    """
    if not url.startswith("data:") or "," not in url:
        raise ValueError("not a data: URL (expected 'data:<type>;base64,<data>')")
    header, payload = url[5:].split(",", 1)
    parts = header.split(";")
    media_type = parts[0] or None
    if "base64" in parts[1:]:
        try:
            return base64.b64decode(payload, validate=False), media_type
        except binascii.Error as exc:
            raise ValueError(f"the data: URL holds invalid base64 ({exc})") from exc
    return urllib.parse.unquote_to_bytes(payload), media_type


def to_data_url(data: bytes, media_type: str | None) -> str:
    """Encode bytes as a base64 `data:` URL."""
    return f"data:{media_type or 'application/octet-stream'};base64,{base64.b64encode(data).decode()}"


def _check_scheme(url: str) -> None:
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise DownloadError(f"cannot download {url[:80]!r}: only http(s) and data: URLs are fetched", retryable=False)


def _check_declared_size(declared: str | None, max_bytes: int, url: str) -> None:
    # Refuse before reading a byte when the server says the body is too big (the count while
    # streaming still catches a server that says nothing, or lies).
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise DownloadError(
            f"download of {declared} bytes passes the size cap of {max_bytes} bytes: {url[:120]}", retryable=False
        )


def _backoff_s(failures: int) -> float:
    # Short: a download is retried because a connection dropped or a CDN hiccuped, not to wait out
    # an outage (fallback chains handle those).
    return float(min(2.0, 0.25 * 2 ** (failures - 1)))


def download(
    url: str,
    *,
    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
    timeout: float = 60.0,
    attempts: int = DEFAULT_DOWNLOAD_ATTEMPTS,
) -> bytes:
    """Fetch a URL (blocking), refusing bodies larger than `max_bytes`.

    A dropped connection, a 5xx, 408 or 429 is tried again (up to `attempts` tries in all); a 4xx
    or a body over the cap is not.

    Raises:
        DownloadError: The fetch failed, or the body passed the size cap.
    """
    if url.startswith("data:"):
        return decode_data_url(url)[0]
    _check_scheme(url)
    for failures in range(1, attempts + 1):
        try:
            return _download_once(url, max_bytes=max_bytes, timeout=timeout)
        except DownloadError as exc:
            if not exc.retryable or failures >= attempts:
                raise
            time.sleep(_backoff_s(failures))
    raise AssertionError("unreachable")  # pragma: no cover


def _download_once(url: str, *, max_bytes: int, timeout: float) -> bytes:
    import httpx

    chunks: list[bytes] = []
    size = 0
    try:
        with httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as response:
            if response.status_code >= 400:
                raise DownloadError(
                    f"download failed with HTTP {response.status_code}: {url[:120]}",
                    status=response.status_code,
                )
            _check_declared_size(response.headers.get("content-length"), max_bytes, url)
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise DownloadError(
                        f"download passed the size cap of {max_bytes} bytes: {url[:120]}", retryable=False
                    )
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise DownloadError(f"download failed ({type(exc).__name__}: {exc}): {url[:120]}") from exc
    return b"".join(chunks)


async def adownload(
    url: str,
    *,
    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
    timeout: float = 60.0,
    client: object | None = None,
    attempts: int = DEFAULT_DOWNLOAD_ATTEMPTS,
) -> bytes:
    """Fetch a URL without blocking the event loop; the async twin of `download`.

    Args:
        url: An http(s) or data: URL.
        max_bytes: The size cap.
        timeout: Seconds for each network step.
        client: An `httpx.AsyncClient` to reuse (its connection pool); one is made otherwise.
        attempts: Tries in all for a dropped connection, a 5xx, 408 or 429 (see `download`).

    Raises:
        DownloadError: The fetch failed, or the body passed the size cap.
    """
    if url.startswith("data:"):
        return decode_data_url(url)[0]
    _check_scheme(url)
    for failures in range(1, attempts + 1):
        try:
            return await _adownload_once(url, max_bytes=max_bytes, timeout=timeout, client=client)
        except DownloadError as exc:
            if not exc.retryable or failures >= attempts:
                raise
            import asyncio

            await asyncio.sleep(_backoff_s(failures))
    raise AssertionError("unreachable")  # pragma: no cover


async def _adownload_once(url: str, *, max_bytes: int, timeout: float, client: object | None) -> bytes:
    import httpx

    own = client is None
    http = client if isinstance(client, httpx.AsyncClient) else httpx.AsyncClient(follow_redirects=True)
    chunks: list[bytes] = []
    size = 0
    try:
        async with http.stream("GET", url, timeout=timeout) as response:
            if response.status_code >= 400:
                raise DownloadError(
                    f"download failed with HTTP {response.status_code}: {url[:120]}",
                    status=response.status_code,
                )
            _check_declared_size(response.headers.get("content-length"), max_bytes, url)
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise DownloadError(
                        f"download passed the size cap of {max_bytes} bytes: {url[:120]}", retryable=False
                    )
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise DownloadError(f"download failed ({type(exc).__name__}: {exc}): {url[:120]}") from exc
    finally:
        if own:
            await http.aclose()
    return b"".join(chunks)
