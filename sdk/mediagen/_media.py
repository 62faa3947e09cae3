"""Media types: sniffing bytes, parsing declared types strictly, guessing from names; `data:` URLs.

Fetching URLs lives in `mediagen._download` (`download`, `adownload`, `ByteBudget`), above this module.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import re
import urllib.parse
from typing import Literal

from ._config import DEFAULT_MAX_DOWNLOAD_BYTES
from .errors import InvalidRequestError, MediaTooLargeError

__all__ = [
    "Kind",
    "sniff_media_type",
    "parse_media_type",
    "media_type_for_name",
    "kind_of_media_type",
    "suffix_for_media_type",
    "decode_data_url",
    "to_data_url",
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


# RFC 6838 restricted names: a letter or digit, then at most 126 of these; nothing else survives.
_TOKEN = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_MEDIA_TYPE = re.compile(rf"({_TOKEN})/({_TOKEN})")


def parse_media_type(value: str | None) -> str | None:
    """A declared media type, checked against a strict grammar and reduced to `type/subtype`.

    Parameters (`; charset=...`) are dropped and case folded; anything that is not a well-formed
    `type/subtype` (quotes, spaces, angle brackets, a missing slash) gives None, so a declared type
    can never carry markup or other text into a filename, a header or HTML.

    Examples:
        >>> parse_media_type("Image/PNG; charset=binary")
        'image/png'
        >>> parse_media_type('image/png"><script>') is None
        True
    """
    if not value:
        return None
    essence = value.split(";", 1)[0].strip()
    matched = _MEDIA_TYPE.fullmatch(essence)
    return essence.lower() if matched else None


def decode_data_url(url: str, *, max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES) -> tuple[bytes, str | None]:
    """Decode a `data:` URL, held to the same size cap as a download.

    Args:
        url: `data:[<media type>][;base64],<data>`.
        max_bytes: Largest decoded size accepted; checked on the encoded length before decoding.

    Returns:
        The bytes and the declared media type (None when absent; a declared type that breaks the
        grammar of `parse_media_type` is refused).

    Raises:
        InvalidRequestError: The URL is not a well-formed data URL (also a ValueError).
        MediaTooLargeError: The decoded bytes would pass `max_bytes`.
    """
    if not url.startswith("data:") or "," not in url:
        raise InvalidRequestError("not a data: URL (expected 'data:<type>;base64,<data>')")
    header, payload = url[5:].split(",", 1)
    parts = [p.strip() for p in header.split(";")]
    is_base64 = any(p.lower() == "base64" for p in parts[1:])
    # The decoded size is known from the encoded length, so a huge URL is refused before decoding.
    estimate = (len(payload) * 3) // 4 if is_base64 else len(payload) - 2 * payload.count("%")
    if estimate > max_bytes:
        raise MediaTooLargeError(
            f"a data: URL of about {estimate} bytes passes the size cap of {max_bytes} bytes", limit=max_bytes
        )
    media_type = None
    if parts[0]:
        media_type = parse_media_type(parts[0])
        if media_type is None:
            raise InvalidRequestError(f"the data: URL declares a malformed media type {parts[0][:40]!r}")
    if is_base64:
        try:
            data = base64.b64decode(payload, validate=False)
        except binascii.Error as exc:
            raise InvalidRequestError(f"the data: URL holds invalid base64 ({exc})") from exc
    else:
        data = urllib.parse.unquote_to_bytes(payload)
    if len(data) > max_bytes:
        raise MediaTooLargeError(
            f"a data: URL of {len(data)} bytes passes the size cap of {max_bytes} bytes", limit=max_bytes
        )
    return data, media_type


def to_data_url(data: bytes, media_type: str | None) -> str:
    """Encode bytes as a base64 `data:` URL (a malformed media type becomes `application/octet-stream`)."""
    return f"data:{parse_media_type(media_type) or 'application/octet-stream'};base64,{base64.b64encode(data).decode()}"
