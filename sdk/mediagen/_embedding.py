"""Provenance in files: written into the container where the format has a place for text.

The media layer: `Artifact.save()` calls `embed` (or writes a `sidecar_json` beside the file) and
`read_provenance` reads either back. It knows bytes and media types, nothing of requests or
results; `mediagen.provenance` builds the dict from a request and re-exports these functions.
The table of formats is in `mediagen.provenance`.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ._version import __version__

__all__ = ["SIDECAR_SUFFIX", "embed", "extract", "read_provenance", "sidecar_json", "sidecar_path"]

SIDECAR_SUFFIX = ".mediagen.json"
"""Appended to a file's name for the sidecar that holds provenance its format cannot."""

_KEY = "mediagen"
_Writer = Callable[[bytes, Mapping[str, Any]], bytes]
_Reader = Callable[[Any], "dict[str, Any] | None"]
_JPEG_PREFIX = b"mediagen:"
_JPEG_MAX = 65533 - len(_JPEG_PREFIX)


def _dumps(provenance: Mapping[str, Any]) -> str:
    # ASCII only: it fits PNG tEXt (Latin-1), comment lines and INFO chunks without an encoding.
    return json.dumps(dict(provenance), sort_keys=True, ensure_ascii=True, separators=(",", ":"), default=str)


def _loads(text: bytes | str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


# -- embedding ----------------------------------------------------------------------------------


def embed(data: bytes, media_type: str | None, provenance: Mapping[str, Any]) -> bytes | None:
    """`data` with `provenance` written in (replacing any written before), or None where it has no place.

    Args:
        data: The encoded file.
        media_type: Its media type (`image/png` ...).
        provenance: What to write (JSON-serialisable).

    Returns:
        The new bytes; None when the format has no place for it (or it would not fit), so the
        caller writes a sidecar instead.
    """
    writer = _WRITERS.get(media_type or "")
    if writer is None:
        return None
    try:
        return writer(data, provenance)
    except (ValueError, struct.error, IndexError, OSError):
        return None  # a file we cannot parse is written as it is, with a sidecar


def extract(data: bytes | memoryview | Any, media_type: str | None = None) -> dict[str, Any] | None:
    """The provenance written into an encoded file, or None when there is none.

    Args:
        data: The file's bytes (or anything sliceable into bytes, such as an mmap).
        media_type: Its media type; sniffed from the bytes when None.
    """
    if media_type is None:
        from ._media import sniff_media_type

        media_type = sniff_media_type(bytes(data[:64]))
    reader = _READERS.get(media_type or "")
    if reader is None:
        return None
    try:
        return reader(data)
    except (ValueError, struct.error, IndexError):
        return None


def sidecar_json(provenance: Mapping[str, Any]) -> bytes:
    """The contents of a sidecar file: `{"mediagen": provenance}` as indented JSON."""
    return json.dumps({_KEY: json.loads(_dumps(provenance))}, indent=2, sort_keys=True).encode() + b"\n"


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """Where the sidecar of `path` goes: the same name with `.mediagen.json` appended."""
    target = Path(path)
    return target.with_name(target.name + SIDECAR_SUFFIX)


def read_provenance(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What made a file saved by mediagen: the dict written by `save()`, or None.

    Looks inside the file first, then for a `<file>.mediagen.json` sidecar.

    Args:
        path: The file.

    Returns:
        The provenance (`prompt`, `model`, `provider`, `seed` ...), or None when the file has none.

    Raises:
        FileNotFoundError: No such file.

    Examples:
        >>> mg.read_provenance("fox.png")  # doctest: +SKIP
        {'generator': 'mediagen', 'model': 'fake', 'prompt': 'a red fox', 'seed': 7, ...}
    """
    import mmap

    from ._media import media_type_for_name, sniff_media_type

    target = Path(path)
    with target.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size:
            # A video may be large: map it and let the readers seek, rather than read it all.
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                media_type = sniff_media_type(mm[:64]) or media_type_for_name(target.name)
                found = extract(mm, media_type)
            if found is not None:
                return found
    side = sidecar_path(target)
    if side.is_file():
        value = _loads(side.read_bytes())
        if value is not None:
            inner = value.get(_KEY)
            return inner if isinstance(inner, dict) else value
    return None


# -- PNG: a tEXt chunk after IHDR ---------------------------------------------------------------

_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def _png_chunks(data: Any) -> list[tuple[bytes, int, int]]:
    """(type, start of the chunk, end of the chunk) for each chunk."""
    if bytes(data[:8]) != _PNG_SIG:
        raise ValueError("not a PNG")
    chunks = []
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = bytes(data[pos + 4 : pos + 8])
        end = pos + 12 + length
        if end > len(data):
            raise ValueError("truncated PNG chunk")
        chunks.append((kind, pos, end))
        pos = end
        if kind == b"IEND":
            break
    return chunks


def _png_text_key(data: Any, start: int, end: int) -> bytes:
    body = bytes(data[start + 8 : min(end - 4, start + 8 + 80)])
    return body.split(b"\0", 1)[0]


def _png_write(data: bytes, provenance: Mapping[str, Any]) -> bytes:
    chunks = _png_chunks(data)
    if not chunks or chunks[0][0] != b"IHDR":
        raise ValueError("PNG without IHDR")
    body = _KEY.encode() + b"\0" + _dumps(provenance).encode("latin-1")
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    out = [data[:8], data[chunks[0][1] : chunks[0][2]], chunk]
    for kind, start, end in chunks[1:]:
        if kind in (b"tEXt", b"iTXt", b"zTXt") and _png_text_key(data, start, end) == _KEY.encode():
            continue  # the provenance of an earlier save: replaced, not duplicated
        out.append(data[start:end])
    out.append(data[chunks[-1][2] :])
    return b"".join(out)


def _png_read(data: Any) -> dict[str, Any] | None:
    for kind, start, end in _png_chunks(data):
        if kind not in (b"tEXt", b"iTXt", b"zTXt") or _png_text_key(data, start, end) != _KEY.encode():
            continue
        body = bytes(data[start + 8 + len(_KEY) + 1 : end - 4])
        if kind == b"zTXt":
            body = zlib.decompress(body[1:])
        elif kind == b"iTXt":
            compressed = body[0] == 1
            _lang, _, rest = body[2:].partition(b"\0")
            _translated, _, text = rest.partition(b"\0")
            body = zlib.decompress(text) if compressed else text
        return _loads(body)
    return None


# -- JPEG: a COM segment after the APPn segments ------------------------------------------------


def _jpeg_segments(data: Any) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each segment before the image data (SOS)."""
    if bytes(data[:2]) != b"\xff\xd8":
        raise ValueError("not a JPEG")
    segments = []
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError("JPEG marker expected")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: what follows is image data
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        segments.append((marker, pos, pos + 2 + length))
        pos += 2 + length
    return segments


def _jpeg_write(data: bytes, provenance: Mapping[str, Any]) -> bytes:
    payload = _JPEG_PREFIX + _dumps(provenance).encode("ascii")
    if len(payload) > _JPEG_MAX:
        raise ValueError("provenance too long for a JPEG comment")
    # First drop the comment of an earlier save, then insert ours after JFIF / Exif (they must lead).
    for marker, start, end in reversed(_jpeg_segments(data)):
        if marker == 0xFE and data[start + 4 : start + 4 + len(_JPEG_PREFIX)] == _JPEG_PREFIX:
            data = data[:start] + data[end:]
    insert_at = 2
    for marker, _start, end in _jpeg_segments(data):
        if not 0xE0 <= marker <= 0xEF:
            break
        insert_at = end
    comment = b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload
    return data[:insert_at] + comment + data[insert_at:]


def _jpeg_read(data: Any) -> dict[str, Any] | None:
    for marker, start, end in _jpeg_segments(data):
        body = bytes(data[start + 4 : end])
        if marker == 0xFE and body.startswith(_JPEG_PREFIX):
            return _loads(body[len(_JPEG_PREFIX) :])
    return None


# -- WAV: ICMT in a LIST/INFO chunk -------------------------------------------------------------


def _riff_chunks(data: Any) -> list[tuple[bytes, int, int]]:
    """(id, start, end including the pad byte) of each chunk of a RIFF/WAVE file."""
    if bytes(data[:4]) != b"RIFF" or bytes(data[8:12]) != b"WAVE":
        raise ValueError("not a WAV")
    chunks = []
    pos = 12
    while pos + 8 <= len(data):
        kind = bytes(data[pos : pos + 4])
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        end = pos + 8 + size + (size & 1)
        chunks.append((kind, pos, min(end, len(data))))
        pos = end
    return chunks


def _info_items(body: bytes) -> list[tuple[bytes, bytes]]:
    items = []
    pos = 0
    while pos + 8 <= len(body):
        kind = body[pos : pos + 4]
        (size,) = struct.unpack("<I", body[pos + 4 : pos + 8])
        items.append((kind, body[pos + 8 : pos + 8 + size]))
        pos += 8 + size + (size & 1)
    return items


def _info_chunk(items: list[tuple[bytes, bytes]]) -> bytes:
    body = b"INFO"
    for kind, value in items:
        body += kind + struct.pack("<I", len(value)) + value + (b"\0" if len(value) & 1 else b"")
    return b"LIST" + struct.pack("<I", len(body)) + body


def _wav_write(data: bytes, provenance: Mapping[str, Any]) -> bytes:
    chunks = _riff_chunks(data)
    if not any(kind == b"data" for kind, _, _ in chunks):
        raise ValueError("WAV without data")
    items: list[tuple[bytes, bytes]] = []
    kept = bytearray()
    for kind, start, end in chunks:
        if kind == b"LIST" and bytes(data[start + 8 : start + 12]) == b"INFO":
            # Keep the other tags (title, artist ...); ours replace their own.
            items += [(k, v) for k, v in _info_items(bytes(data[start + 12 : end])) if k not in (b"ICMT", b"ISFT")]
            continue
        chunk = bytes(data[start:end])
        kept += chunk + (b"\0" if len(chunk) & 1 else b"")
    comment = _dumps({_KEY: dict(provenance)}).encode("ascii") + b"\0"
    items += [(b"ISFT", f"mediagen {__version__}".encode() + b"\0"), (b"ICMT", comment)]
    body = b"WAVE" + bytes(kept) + _info_chunk(items)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _wav_read(data: Any) -> dict[str, Any] | None:
    for kind, start, end in _riff_chunks(data):
        if kind == b"LIST" and bytes(data[start + 8 : start + 12]) == b"INFO":
            for item, value in _info_items(bytes(data[start + 12 : end])):
                if item == b"ICMT":
                    found = _loads(value.rstrip(b"\0"))
                    if found is not None and isinstance(found.get(_KEY), dict):
                        return dict(found[_KEY])
    return None


# -- GLB: asset.extras.mediagen in the JSON chunk -----------------------------------------------


def _glb_json(data: Any) -> tuple[dict[str, Any], int]:
    if bytes(data[:4]) != b"glTF":
        raise ValueError("not a GLB")
    (length,) = struct.unpack("<I", data[12:16])
    if bytes(data[16:20]) != b"JSON":
        raise ValueError("GLB without a JSON chunk first")
    doc = json.loads(bytes(data[20 : 20 + length]))
    if not isinstance(doc, dict):
        raise ValueError("GLB JSON is not an object")
    return doc, 20 + length


def _glb_write(data: bytes, provenance: Mapping[str, Any]) -> bytes:
    doc, end = _glb_json(data)
    asset = doc.setdefault("asset", {"version": "2.0"})
    asset.setdefault("extras", {})[_KEY] = json.loads(_dumps(provenance))
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 4)  # chunks are 4-byte aligned; the spec pads JSON with spaces
    rest = data[end:]
    total = 12 + 8 + len(text) + len(rest)
    (version,) = struct.unpack("<I", data[4:8])
    return b"glTF" + struct.pack("<II", version, total) + struct.pack("<I", len(text)) + b"JSON" + text + rest


def _glb_read(data: Any) -> dict[str, Any] | None:
    doc, _ = _glb_json(data)
    found = doc.get("asset", {}).get("extras", {}).get(_KEY)
    return dict(found) if isinstance(found, dict) else None


# -- OBJ and PLY: comment lines -----------------------------------------------------------------

_OBJ_PREFIX = b"# mediagen: "
_PLY_PREFIX = b"comment mediagen: "


def _obj_write(data: bytes, provenance: Mapping[str, Any]) -> bytes:
    # At the end, not the top: sniffing an OBJ looks for vertex lines in its first 4 KiB.
    lines = [line for line in data.splitlines(keepends=True) if not line.startswith(_OBJ_PREFIX)]
    body = b"".join(lines)
    if body and not body.endswith(b"\n"):
        body += b"\n"
    return body + _OBJ_PREFIX + _dumps(provenance).encode("ascii") + b"\n"


def _obj_read(data: Any) -> dict[str, Any] | None:
    tail = bytes(data[-262_144:])
    at = tail.rfind(b"\n" + _OBJ_PREFIX)
    if at < 0:
        return None
    line = tail[at + 1 + len(_OBJ_PREFIX) :].split(b"\n", 1)[0]
    return _loads(line)


def _ply_header_end(data: Any) -> int:
    head = bytes(data[:65536])
    for marker in (b"end_header\r\n", b"end_header\n"):
        at = head.find(marker)
        if at >= 0:
            return at + len(marker)
    raise ValueError("PLY without end_header")


def _ply_write(data: bytes, provenance: Mapping[str, Any]) -> bytes:
    end = _ply_header_end(data)
    lines = [line for line in data[:end].splitlines(keepends=True) if not line.startswith(_PLY_PREFIX)]
    newline = b"\r\n" if lines[0].endswith(b"\r\n") else b"\n"
    # After `ply` and `format`: comments may come anywhere in the header after those two.
    lines.insert(2, _PLY_PREFIX + _dumps(provenance).encode("ascii") + newline)
    return b"".join(lines) + data[end:]


def _ply_read(data: Any) -> dict[str, Any] | None:
    header = bytes(data[: _ply_header_end(data)])
    for line in header.splitlines():
        if line.startswith(_PLY_PREFIX):
            return _loads(line[len(_PLY_PREFIX) :])
    return None


# -- MP4 / M4A / MOV: the comment tag -----------------------------------------------------------

_MP4_SUFFIX = {"video/mp4": ".mp4", "audio/mp4": ".m4a", "video/quicktime": ".mov"}


def _mp4_write_for(media_type: str) -> _Writer:
    def write(data: bytes, provenance: Mapping[str, Any]) -> bytes:
        return _remux_with_comment(data, _MP4_SUFFIX[media_type], _dumps({_KEY: dict(provenance)}))

    return write


def _remux_with_comment(data: bytes, suffix: str, comment: str) -> bytes:
    # Rewriting the moov box by hand would mean patching every chunk offset; ffmpeg's stream copy
    # does that for us without touching a single coded frame.
    import tempfile

    from ._ffmpeg import run_ffmpeg
    from .errors import MediagenError

    with tempfile.TemporaryDirectory(prefix="mediagen-") as tmp:
        src, dst = Path(tmp) / f"in{suffix}", Path(tmp) / f"out{suffix}"
        src.write_bytes(data)
        args = ["-v", "error", "-i", str(src), "-map", "0", "-c", "copy"]
        args += ["-map_metadata", "0", "-metadata", f"comment={comment}", str(dst)]
        try:
            run_ffmpeg(args, what="write provenance into the video", timeout_s=300)
        except (ImportError, MediagenError) as exc:
            # No ffmpeg, a timeout or a failed remux: the caller writes a sidecar instead.
            raise OSError(f"ffmpeg could not remux: {exc}") from exc
        if not dst.is_file():
            raise OSError("ffmpeg wrote no output")
        return dst.read_bytes()


def _atoms(data: Any, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(type, start of the payload, end) of each box between `start` and `end`."""
    boxes = []
    pos = start
    while pos + 8 <= end:
        (size,) = struct.unpack(">I", data[pos : pos + 4])
        kind = bytes(data[pos + 4 : pos + 8])
        header = 8
        if size == 1:
            (size,) = struct.unpack(">Q", data[pos + 8 : pos + 16])
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            raise ValueError("bad MP4 box size")
        boxes.append((kind, pos + header, min(pos + size, end)))
        pos += size
    return boxes


def _mp4_read(data: Any) -> dict[str, Any] | None:
    for kind, start, end in _atoms(data, 0, len(data)):
        if kind != b"moov":
            continue
        for kind2, s2, e2 in _atoms(data, start, end):
            if kind2 != b"udta":
                continue
            for kind3, s3, e3 in _atoms(data, s2, e2):
                text: bytes | None = None
                if kind3 == b"meta":  # iTunes style (MP4, M4A): meta / ilst / \xa9cmt / data
                    for kind4, s4, e4 in _atoms(data, s3 + 4, e3):
                        if kind4 != b"ilst":
                            continue
                        for kind5, s5, e5 in _atoms(data, s4, e4):
                            if kind5 == b"\xa9cmt":
                                for kind6, s6, e6 in _atoms(data, s5, e5):
                                    if kind6 == b"data":
                                        text = bytes(data[s6 + 8 : e6])
                elif kind3 == b"\xa9cmt":  # QuickTime style (MOV): length, language, text
                    (length,) = struct.unpack(">H", data[s3 : s3 + 2])
                    text = bytes(data[s3 + 4 : s3 + 4 + length])
                if text is not None:
                    found = _loads(text)
                    if found is not None and isinstance(found.get(_KEY), dict):
                        return dict(found[_KEY])
    return None


_WRITERS: dict[str, _Writer] = {
    "image/png": _png_write,
    "image/jpeg": _jpeg_write,
    "audio/wav": _wav_write,
    "model/gltf-binary": _glb_write,
    "model/obj": _obj_write,
    "model/ply": _ply_write,
    **{media_type: _mp4_write_for(media_type) for media_type in _MP4_SUFFIX},
}
_READERS: dict[str, _Reader] = {
    "image/png": _png_read,
    "image/jpeg": _jpeg_read,
    "audio/wav": _wav_read,
    "model/gltf-binary": _glb_read,
    "model/obj": _obj_read,
    "model/ply": _ply_read,
    **{media_type: _mp4_read for media_type in _MP4_SUFFIX},
}
