"""OpenAI's answers into artifacts: base64 images, and speech with a WAV header that tells the truth.

GPT image models answer with `b64_json` only (no URLs), so images arrive in memory: there is nothing
to fetch lazily. Speech arrives as the body of the response.

OpenAI writes WAV as a stream: it cannot know the length when the header goes out, so the RIFF and
`data` chunk sizes are `0xFFFFFFFF`. A reader then takes everything after the header as samples, so
anything appended to the file (mediagen's provenance `LIST` chunk) would play as noise. `fix_wav`
rewrites both sizes from the bytes actually received.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from mediagen._media import sniff_media_type
from mediagen.artifacts import Audio, Image
from mediagen.errors import GenerationFailedError

from .errors import PROVIDER

__all__ = ["SPEECH_SAMPLE_RATE", "images_from_response", "fix_wav", "pcm_to_wav"]

SPEECH_SAMPLE_RATE = 24_000
"""OpenAI's speech is 24 kHz, mono, 16-bit."""
_STREAMED = 0xFFFFFFFF


def images_from_response(data: Sequence[Mapping[str, Any]], *, model: str, metadata: Mapping[str, Any]) -> list[Image]:
    """The images of an images response (`data[i].b64_json`), in order.

    Raises:
        GenerationFailedError: An entry holds no image, or one that is not an image.
    """
    images: list[Image] = []
    for i, item in enumerate(data):
        encoded = item.get("b64_json")
        if not isinstance(encoded, str):
            raise GenerationFailedError(
                f"OpenAI's answer holds no image at data[{i}] (no b64_json)", provider=PROVIDER, model=model
            )
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise GenerationFailedError(
                f"OpenAI's image data[{i}] is not valid base64", provider=PROVIDER, model=model
            ) from exc
        media_type = sniff_media_type(raw)
        if media_type is None or not media_type.startswith("image/"):
            raise GenerationFailedError(
                f"OpenAI's data[{i}] is not an image ({media_type or 'unknown bytes'})", provider=PROVIDER, model=model
            )
        info = {**metadata, "output": i}
        if item.get("revised_prompt"):
            info["revised_prompt"] = item["revised_prompt"]
        images.append(Image(raw, media_type=media_type, metadata=info))
    return images


def fix_wav(data: bytes) -> bytes:
    r"""Rewrite a streamed WAV's `0xFFFFFFFF` RIFF and data sizes from the bytes received.

    A WAV with true sizes comes back unchanged; so does anything that is not a RIFF/WAVE file.

    Examples:
        >>> head = b"RIFF" + b"\xff" * 4 + b"WAVEfmt " + (16).to_bytes(4, "little") + bytes(16)
        >>> fixed = fix_wav(head + b"data" + b"\xff" * 4 + b"\x00\x01" * 3)
        >>> int.from_bytes(fixed[4:8], "little"), int.from_bytes(fixed[40:44], "little")
        (42, 6)
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return data
    out = bytearray(data)
    pos = 12
    while pos + 8 <= len(out):
        kind = bytes(out[pos : pos + 4])
        (size,) = struct.unpack("<I", out[pos + 4 : pos + 8])
        if kind == b"data":
            body = len(out) - pos - 8
            if size == _STREAMED or size > body:
                # An odd number of bytes would need a pad byte; a 16-bit stream has none to lose.
                size = body - (body % 2)
                out[pos + 4 : pos + 8] = struct.pack("<I", size)
                del out[pos + 8 + size :]
            break
        pos += 8 + size + (size & 1)
    out[4:8] = struct.pack("<I", len(out) - 8)
    return bytes(out)


def pcm_to_wav(pcm: bytes, sample_rate: int = SPEECH_SAMPLE_RATE) -> bytes:
    """Wrap raw 16-bit mono little-endian PCM (OpenAI's `pcm`) in a WAV header."""
    pcm = pcm[: len(pcm) - len(pcm) % 2]
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(pcm)) + pcm
    return b"RIFF" + struct.pack("<I", len(body)) + body


def speech_artifact(body: bytes, *, fmt: str, model: str, metadata: Mapping[str, Any]) -> Audio:
    """The speech as an artifact: WAV with a true header (PCM wrapped as WAV), other codecs as they came.

    Raises:
        GenerationFailedError: The answer is empty.
    """
    if not body:
        raise GenerationFailedError("OpenAI answered the speech request with no audio", provider=PROVIDER, model=model)
    if fmt == "pcm":
        return Audio(pcm_to_wav(body), media_type="audio/wav", metadata=metadata)
    if fmt == "wav":
        return Audio(fix_wav(body), media_type="audio/wav", metadata=metadata)
    return Audio(body, media_type=sniff_media_type(body) or _CODEC_TYPES.get(fmt), metadata=metadata)


_CODEC_TYPES = {"mp3": "audio/mpeg", "flac": "audio/flac", "opus": "audio/ogg", "aac": "audio/aac"}
