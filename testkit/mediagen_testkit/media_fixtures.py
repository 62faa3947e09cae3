"""Tiny but real media files for tests: images, WAV, MP4 (or GIF) and binary glTF.

Every helper is deterministic: the same arguments give the same bytes, and a different ``seed`` gives
different bytes. The files are small (tens of pixels, a few kilobytes) so that a test can make hundreds
of them, yet each decodes with the ordinary tools (Pillow, :mod:`wave`, imageio, trimesh).

Only the standard library, numpy and Pillow are imported at module level; imageio is imported inside
:func:`mp4_bytes` so that importing this module stays cheap.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import struct
import wave
from typing import Literal

import numpy as np
from PIL import Image

__all__ = [
    "seed_colour",
    "image_bytes",
    "png_bytes",
    "gif_bytes",
    "wav_bytes",
    "mp4_bytes",
    "video_bytes",
    "glb_bytes",
]

ImageFormat = Literal["png", "jpg", "jpeg", "webp"]


def seed_colour(seed: int) -> tuple[int, int, int]:
    """Map a seed to an RGB colour.

    A hash rather than ``seed % 256`` so that neighbouring seeds give visibly different colours.

    Args:
        seed: Any integer.

    Returns:
        An ``(r, g, b)`` tuple of ints in 0..255.
    """
    digest = hashlib.sha256(str(int(seed)).encode()).digest()
    return digest[0], digest[1], digest[2]


def _frame(width: int, height: int, seed: int, phase: float = 0.0) -> np.ndarray:
    """Draw one RGB frame: the seed's colour with a diagonal gradient band.

    The gradient makes the image non-uniform (so lossy encoders have something to keep) and ``phase``
    moves it, which is what makes consecutive video frames differ.
    """
    r, g, b = seed_colour(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    wave_ = 0.5 + 0.5 * np.sin((xs + ys) / max(width, height) * 2 * math.pi + phase)
    base = np.array([r, g, b], dtype=np.float32)
    img = base[None, None, :] * (0.6 + 0.4 * wave_[..., None])
    out: np.ndarray = np.clip(img, 0, 255).astype(np.uint8)
    return out


def image_bytes(
    width: int = 64, height: int = 64, *, seed: int = 0, fmt: ImageFormat = "png", quality: int = 80
) -> bytes:
    """Encode a small deterministic image.

    Args:
        width: Width in pixels.
        height: Height in pixels.
        seed: Picks the colour.
        fmt: ``"png"``, ``"jpg"``/``"jpeg"`` or ``"webp"``.
        quality: Encoder quality for the lossy formats (0..100).

    Returns:
        The encoded file.
    """
    img = Image.fromarray(_frame(width, height, seed), mode="RGB")
    buf = io.BytesIO()
    pil_format = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}[fmt]
    if pil_format == "PNG":
        img.save(buf, format="PNG")
    else:
        img.save(buf, format=pil_format, quality=max(1, min(int(quality), 100)))
    return buf.getvalue()


def png_bytes(width: int = 64, height: int = 64, *, seed: int = 0) -> bytes:
    """Encode a small deterministic PNG.

    Args:
        width: Width in pixels.
        height: Height in pixels.
        seed: Picks the colour.

    Returns:
        The PNG file.
    """
    return image_bytes(width, height, seed=seed, fmt="png")


def gif_bytes(width: int = 64, height: int = 64, *, frames: int = 8, fps: int = 8, seed: int = 0) -> bytes:
    """Encode a small animated GIF (the video fallback when imageio-ffmpeg is missing).

    Args:
        width: Width in pixels.
        height: Height in pixels.
        frames: Number of frames.
        fps: Frames per second.
        seed: Picks the colour.

    Returns:
        The GIF file.
    """
    images = [
        Image.fromarray(_frame(width, height, seed, 2 * math.pi * i / max(frames, 1)), mode="RGB")
        for i in range(max(frames, 1))
    ]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return buf.getvalue()


def _round16(n: int) -> int:
    # H.264 encoders work on 16-pixel macroblocks; imageio would otherwise resize with a warning.
    return max(16, (int(n) + 15) // 16 * 16)


def mp4_bytes(width: int = 64, height: int = 64, *, frames: int = 8, fps: int = 8, seed: int = 0) -> bytes:
    """Encode a small deterministic H.264 MP4 with imageio + imageio-ffmpeg.

    Args:
        width: Width in pixels (rounded up to a multiple of 16).
        height: Height in pixels (rounded up to a multiple of 16).
        frames: Number of frames.
        fps: Frames per second.
        seed: Picks the colour.

    Returns:
        The MP4 file.

    Raises:
        ImportError: When imageio or imageio-ffmpeg is not installed (see :func:`video_bytes`).
    """
    import imageio.v3 as iio  # heavy, optional: only when a video is actually wanted
    import imageio_ffmpeg  # noqa: F401  # fail early with ImportError rather than inside the plugin

    w, h = _round16(width), _round16(height)
    stack = np.stack([_frame(w, h, seed, 2 * math.pi * i / max(frames, 1)) for i in range(max(frames, 1))])
    data = iio.imwrite("<bytes>", stack, extension=".mp4", fps=fps, plugin="FFMPEG", macro_block_size=16)
    return bytes(data)


def video_bytes(
    width: int = 64, height: int = 64, *, frames: int = 8, fps: int = 8, seed: int = 0
) -> tuple[bytes, str, str]:
    """Make a small video: MP4 when imageio-ffmpeg is importable, else an animated GIF.

    Args:
        width: Width in pixels.
        height: Height in pixels.
        frames: Number of frames.
        fps: Frames per second.
        seed: Picks the colour.

    Returns:
        ``(data, extension, content_type)``, e.g. ``(b"...", "mp4", "video/mp4")``.
    """
    try:
        return mp4_bytes(width, height, frames=frames, fps=fps, seed=seed), "mp4", "video/mp4"
    except ImportError:
        return gif_bytes(width, height, frames=frames, fps=fps, seed=seed), "gif", "image/gif"


def wav_bytes(
    duration_s: float = 1.0,
    *,
    sample_rate: int = 8000,
    frequency: float = 440.0,
    channels: int = 1,
    amplitude: float = 0.3,
) -> bytes:
    """Encode a 16-bit PCM WAV holding a sine tone.

    Args:
        duration_s: Length in seconds.
        sample_rate: Samples per second.
        frequency: Tone frequency in Hz.
        channels: 1 (mono) or 2 (stereo, the same tone on both).
        amplitude: Peak level, 0..1.

    Returns:
        The WAV file.
    """
    n = max(1, round(duration_s * sample_rate))
    t = np.arange(n, dtype=np.float64) / sample_rate
    samples = (np.sin(2 * math.pi * frequency * t) * amplitude * 32767).astype("<i2")
    if channels > 1:
        samples = np.repeat(samples[:, None], channels, axis=1)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(samples.tobytes())
    return buf.getvalue()


# A unit cube: 8 corners, 12 triangles wound counter-clockwise seen from outside.
_CUBE_POSITIONS = [
    (-0.5, -0.5, -0.5),
    (0.5, -0.5, -0.5),
    (0.5, 0.5, -0.5),
    (-0.5, 0.5, -0.5),
    (-0.5, -0.5, 0.5),
    (0.5, -0.5, 0.5),
    (0.5, 0.5, 0.5),
    (-0.5, 0.5, 0.5),
]
_CUBE_INDICES = [
    (0, 2, 1), (0, 3, 2),  # back  (z = -0.5)
    (4, 5, 6), (4, 6, 7),  # front (z = +0.5)
    (0, 1, 5), (0, 5, 4),  # bottom
    (3, 7, 6), (3, 6, 2),  # top
    (0, 4, 7), (0, 7, 3),  # left
    (1, 2, 6), (1, 6, 5),  # right
]  # fmt: skip


def _pad4(data: bytes, fill: bytes) -> bytes:
    return data + fill * ((4 - len(data) % 4) % 4)


def glb_bytes(*, size: float = 1.0, seed: int = 0) -> bytes:
    """Write a valid binary glTF 2.0 file holding a cube, by hand (struct + json).

    The mesh has a POSITION accessor (with the min/max the spec requires) and uint16 indices; the
    material's base colour comes from ``seed`` so different seeds give different files.

    Args:
        size: Edge length of the cube.
        seed: Picks the material colour.

    Returns:
        The GLB file.
    """
    positions = [(x * size, y * size, z * size) for x, y, z in _CUBE_POSITIONS]
    pos_bin = b"".join(struct.pack("<3f", *p) for p in positions)
    idx_bin = b"".join(struct.pack("<3H", *tri) for tri in _CUBE_INDICES)
    idx_offset = len(pos_bin)  # 96 bytes: already 4-aligned
    binary = _pad4(pos_bin + idx_bin, b"\x00")
    r, g, b = seed_colour(seed)
    half = 0.5 * size
    doc = {
        "asset": {"version": "2.0", "generator": "mediagen.testing"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": "cube"}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1, "material": 0}]}],
        "materials": [{"pbrMetallicRoughness": {"baseColorFactor": [r / 255, g / 255, b / 255, 1.0]}, "name": "m"}],
        "buffers": [{"byteLength": len(binary)}],
        "bufferViews": [
            {"buffer": 0, "byteOffset": 0, "byteLength": len(pos_bin), "target": 34962},
            {"buffer": 0, "byteOffset": idx_offset, "byteLength": len(idx_bin), "target": 34963},
        ],
        "accessors": [
            {
                "bufferView": 0,
                "componentType": 5126,
                "count": len(positions),
                "type": "VEC3",
                "min": [-half, -half, -half],
                "max": [half, half, half],
            },
            {"bufferView": 1, "componentType": 5123, "count": 3 * len(_CUBE_INDICES), "type": "SCALAR"},
        ],
    }
    json_chunk = _pad4(json.dumps(doc, separators=(",", ":")).encode(), b" ")
    body = (
        struct.pack("<II", len(json_chunk), 0x4E4F534A)  # "JSON"
        + json_chunk
        + struct.pack("<II", len(binary), 0x004E4942)  # "BIN\0"
        + binary
    )
    return struct.pack("<III", 0x46546C67, 2, 12 + len(body)) + body  # "glTF", version 2
