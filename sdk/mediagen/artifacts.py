"""Artifacts: the images, videos, sounds and meshes that requests take and results hold.

An artifact is held in one of three ways, and turns into the others on demand:

- encoded bytes (a PNG, an MP4 ...), with the media type sniffed from them;
- a reference: a URL (fetched lazily, with a size cap) or a path on disk;
- decoded data: a PIL image, video frames, audio samples, mesh arrays.

A hosted backend hands an artifact that is only a URL to the next hosted call as that URL, so
nothing is downloaded in between. Heavy libraries (PIL, numpy, imageio, soundfile, trimesh) are
imported only inside the methods that need them.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import os
import wave
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ._config import DEFAULT_MAX_DOWNLOAD_BYTES
from ._media import (
    Kind,
    adownload,
    decode_data_url,
    download,
    kind_of_media_type,
    media_type_for_name,
    sniff_media_type,
    suffix_for_media_type,
    to_data_url,
)

if TYPE_CHECKING:
    import numpy as np
    import PIL.Image
    import trimesh

__all__ = ["Artifact", "Image", "Video", "Audio", "Mesh", "artifact_from_bytes"]

# Inline display embeds bytes into the notebook; past this size it shows a link instead.
_INLINE_LIMIT = 20 * 1024 * 1024


class Artifact:
    """Base of `Image`, `Video`, `Audio` and `Mesh`.

    Args:
        data: Encoded bytes (PNG, MP4, WAV, GLB ...).
        url: Where the bytes can be fetched (http(s) or `data:`); fetched on first use.
        path: A file on disk holding the bytes; read on first use.
        media_type: The media type when known; otherwise sniffed from the bytes.
        metadata: Free-form facts about the artifact (seed, provenance, provider fields).
        max_bytes: Largest body accepted when fetching `url`.
    """

    kind: ClassVar[Kind]
    default_media_type: ClassVar[str]

    def __init__(
        self,
        data: bytes | None = None,
        *,
        url: str | None = None,
        path: str | os.PathLike[str] | None = None,
        media_type: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
    ) -> None:
        if url is not None and url.startswith("data:"):
            # A data URL is already the bytes; keep the URL too so it can be passed on as is.
            data, declared = decode_data_url(url)
            media_type = media_type or declared
        self._data = data
        self.url = url
        self.path = Path(path) if path is not None else None
        self._media_type = media_type
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.max_bytes = max_bytes

    # -- bytes --------------------------------------------------------------------------------

    @property
    def is_loaded(self) -> bool:
        """Whether the artifact is in memory (no fetch or read needed)."""
        return self._data is not None or self._has_decoded()

    def has_decoded(self) -> bool:
        """Whether the decoded form (pixels, frames, samples) is in memory: measuring it costs nothing."""
        return self._has_decoded()

    def _has_decoded(self) -> bool:
        return False

    def _encode(self) -> tuple[bytes, str]:
        """Encode the decoded form into bytes of the default format."""
        raise ValueError(f"this {type(self).__name__} holds no data, URL or path")

    def read(self) -> bytes:
        """Return the encoded bytes, fetching or encoding them on first use (blocking).

        Raises:
            DownloadError: The URL could not be fetched.
        """
        if self._data is None:
            if self.path is not None:
                self._data = self.path.read_bytes()
            elif self.url is not None:
                self._data = download(self.url, max_bytes=self.max_bytes)
            else:
                self._data, self._media_type = self._encode()
        return self._data

    async def aread(self, *, client: object | None = None) -> bytes:
        """Return the encoded bytes without blocking the event loop on a download.

        Args:
            client: An `httpx.AsyncClient` whose connection pool the download may use.
        """
        if self._data is None and self.path is None and self.url is not None:
            self._data = await adownload(self.url, max_bytes=self.max_bytes, client=client)
        return self.read()

    @property
    def media_type(self) -> str:
        """The media type: as given, else sniffed from the bytes, else guessed from the name."""
        if self._media_type:
            return self._media_type
        if self._data is not None:
            self._media_type = sniff_media_type(self._data)
        elif self._has_decoded():
            return self.default_media_type
        else:
            name = str(self.path) if self.path is not None else self.url
            if name:
                return media_type_for_name(name) or self.default_media_type
        return self._media_type or self.default_media_type

    def sha256(self) -> str:
        """Hex SHA-256 of the encoded bytes (what caches and provenance key on)."""
        return hashlib.sha256(self.read()).hexdigest()

    def to_data_url(self) -> str:
        """The artifact as a base64 `data:` URL."""
        return to_data_url(self.read(), self.media_type)

    # -- saving -------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the artifact to `path`, in the format its suffix names.

        `path` may be a directory (an existing one, or a name ending in `/`): the file then takes
        the artifact's own name (`metadata["filename"]`, else the last part of its URL, as the
        provider chose it), passed through `mediagen.safety.safe_filename`, so a provider's name
        never puts the file outside that directory.

        When `metadata["provenance"]` is set (the client sets it on results), it is written into
        the file without re-encoding, or into a `<file>.mediagen.json` sidecar where the format
        has no place for it (see `mediagen.provenance`; read it back with `mg.read_provenance`).

        Returns:
            The path written.

        Raises:
            ValueError: The suffix names a format this kind of artifact cannot be saved as.
        """
        target = self._save_target(path)
        wanted = media_type_for_name(target.name)
        if wanted is None:
            raise ValueError(f"cannot tell a format from {target.name!r}: add a suffix such as {self._suffixes()}")
        target.parent.mkdir(parents=True, exist_ok=True)
        if self.is_loaded and self._data is None:
            payload = self._encode_as(wanted)
        else:
            data = self.read()
            payload = data if self.media_type == wanted else self._encode_as(wanted)
        sidecar: bytes | None = None
        provenance = self.metadata.get("provenance")
        if isinstance(provenance, Mapping) and provenance:
            from .provenance import embed, sidecar_json

            stamped = embed(payload, wanted, provenance)
            if stamped is None:
                sidecar = sidecar_json(provenance)
            else:
                payload = stamped
        _write_atomic(target, payload)
        if sidecar is not None:
            from .provenance import sidecar_path

            _write_atomic(sidecar_path(target), sidecar)
        return target

    def _save_target(self, path: str | os.PathLike[str]) -> Path:
        given = os.fspath(path)
        target = Path(given)
        if not (given.endswith(("/", os.sep)) or target.is_dir()):
            return target
        from .safety import safe_filename

        suffix = suffix_for_media_type(self.media_type) or ""
        source = self.metadata.get("filename") or (self.url if self.url and not self.url.startswith("data:") else None)
        if source is None and self.path is not None:
            source = self.path.name
        name = safe_filename(str(source) if source else None, default=f"{self.kind}{suffix}")
        if kind_of_media_type(media_type_for_name(name)) != self.kind:
            name += suffix  # a provider's name with a foreign suffix must not pick the format
        return target / name

    async def asave(self, path: str | os.PathLike[str]) -> Path:
        """Async twin of `save`: neither the download nor the encoding blocks the event loop."""
        import asyncio

        await self.aread()
        # Encoding, and the ffmpeg remux that writes provenance into an MP4, take real time.
        return await asyncio.to_thread(self.save, path)

    def _suffixes(self) -> str:
        return ", ".join(self._formats)

    _formats: ClassVar[tuple[str, ...]] = ()

    def _encode_as(self, media_type: str) -> bytes:
        raise ValueError(f"a {type(self).__name__} cannot be saved as {media_type}; use one of {self._suffixes()}")

    # -- display ------------------------------------------------------------------------------

    def __repr__(self) -> str:
        where = f" url={self.url[:60]!r}" if self.url and not self.url.startswith("data:") else ""
        if self.path is not None:
            where += f" path={str(self.path)!r}"
        return f"<mediagen.{type(self).__name__} {self.media_type}{self._describe()}{where}>"

    def _describe(self) -> str:
        return ""

    def _inline_src(self) -> str:
        """A `src=` for HTML: the URL when it is remote or the bytes are large, else a data URL."""
        if self.url and not self.url.startswith("data:") and not self.is_loaded:
            return html.escape(self.url)
        data = self.read()
        if len(data) > _INLINE_LIMIT and self.url:
            return html.escape(self.url)
        return f"data:{self.media_type};base64,{base64.b64encode(data).decode()}"


# ---------------------------------------------------------------------------------------------


class Image(Artifact):
    """An image (`image/png`, `image/jpeg`, `image/webp` ...).

    Examples:
        >>> img = Image.from_array(np.zeros((32, 32, 3), dtype="uint8"))  # doctest: +SKIP
        >>> img.save("black.png")  # doctest: +SKIP
    """

    kind = "image"
    default_media_type = "image/png"
    _formats = (".png", ".jpg", ".webp", ".gif", ".bmp")

    def __init__(self, data: bytes | None = None, **kw: Any) -> None:
        super().__init__(data, **kw)
        self._pil: PIL.Image.Image | None = None

    @classmethod
    def from_pil(cls, image: PIL.Image.Image, **kw: Any) -> Image:
        """Wrap a PIL image (encoded to PNG only when bytes are needed)."""
        obj = cls(**kw)
        obj._pil = image
        return obj

    @classmethod
    def from_array(cls, array: Any, **kw: Any) -> Image:
        """Wrap an array: HxW, HxWx3 or HxWx4; uint8, or floats in [0, 1]."""
        import PIL.Image

        return cls.from_pil(PIL.Image.fromarray(_to_uint8(array)), **kw)

    def _has_decoded(self) -> bool:
        return self._pil is not None

    def to_pil(self) -> PIL.Image.Image:
        """Decode into a PIL image (cached)."""
        if self._pil is None:
            import PIL.Image

            pil = PIL.Image.open(io.BytesIO(self.read()))
            pil.load()
            self._pil = pil
        return self._pil

    def to_numpy(self) -> np.ndarray[Any, Any]:
        """Decode into an `HxWxC` uint8 array."""
        import numpy as np

        return np.asarray(self.to_pil())

    @property
    def width(self) -> int:
        """Width in pixels."""
        return int(self.to_pil().width)

    @property
    def height(self) -> int:
        """Height in pixels."""
        return int(self.to_pil().height)

    @property
    def size(self) -> tuple[int, int]:
        """`(width, height)` in pixels."""
        return self.width, self.height

    def _encode(self) -> tuple[bytes, str]:
        return self._encode_as("image/png"), "image/png"

    def _encode_as(self, media_type: str) -> bytes:
        formats = {
            "image/png": "PNG",
            "image/jpeg": "JPEG",
            "image/webp": "WEBP",
            "image/gif": "GIF",
            "image/bmp": "BMP",
        }
        if media_type not in formats:
            return super()._encode_as(media_type)
        pil = self.to_pil()
        if formats[media_type] == "JPEG" and pil.mode not in ("RGB", "L"):
            pil = pil.convert("RGB")
        buf = io.BytesIO()
        # Provenance is not encoded here: `save()` inserts it, so in-memory bytes stay the model's.
        pil.save(buf, format=formats[media_type])
        return buf.getvalue()

    def _describe(self) -> str:
        if self._pil is not None or self._data is not None or self.path is not None:
            try:
                return f" {self.width}x{self.height}"
            except Exception:
                return ""
        return ""

    def _repr_png_(self) -> bytes:
        return self._encode_as("image/png")


def _write_atomic(target: Path, payload: bytes) -> None:
    # Readers never see a half-written file: write beside it, then rename over it.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, target)


def _to_uint8(array: Any) -> np.ndarray[Any, Any]:
    import numpy as np

    arr = np.asarray(array)
    if arr.dtype != np.uint8 and np.issubdtype(arr.dtype, np.integer):
        # Integer pixels are 0..255 whatever their width (an int64 array from arithmetic on uint8).
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    elif arr.dtype != np.uint8:
        arr = (np.clip(arr.astype("float32"), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return arr


# ---------------------------------------------------------------------------------------------


class Video(Artifact):
    """A video (`video/mp4`, `video/webm`, `image/gif`), optionally with a soundtrack.

    Decoded, it is `frames` (`T x H x W x 3` uint8) at `fps` frames per second.
    """

    kind = "video"
    default_media_type = "video/mp4"
    _formats = (".mp4", ".webm", ".gif")

    def __init__(self, data: bytes | None = None, *, fps: float | None = None, **kw: Any) -> None:
        super().__init__(data, **kw)
        self._frames: np.ndarray[Any, Any] | None = None
        self._fps = fps

    @classmethod
    def from_frames(cls, frames: Any, fps: float = 8.0, **kw: Any) -> Video:
        """Wrap frames: a `T x H x W x 3` array (uint8, or floats in [0, 1]) or a list of images."""
        import numpy as np

        if isinstance(frames, (list, tuple)):
            frames = np.stack([_frame_array(f) for f in frames])
        obj = cls(fps=fps, **kw)
        obj._frames = _to_uint8(frames)
        if obj._frames.ndim != 4 or obj._frames.shape[-1] not in (3, 4):
            raise ValueError(f"frames must be T x H x W x 3, got shape {obj._frames.shape}")
        return obj

    def _has_decoded(self) -> bool:
        return self._frames is not None

    @property
    def frames(self) -> np.ndarray[Any, Any]:
        """All frames as a `T x H x W x 3` uint8 array (decoded on first use)."""
        if self._frames is None:
            self._frames, fps = _decode_video(self.read(), self.media_type)
            self._fps = self._fps or fps
        return self._frames

    @property
    def fps(self) -> float:
        """Frames per second."""
        if self._fps is None:
            _ = self.frames
        return float(self._fps or 8.0)

    @property
    def num_frames(self) -> int:
        """How many frames the video holds."""
        return int(self.frames.shape[0])

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.num_frames / self.fps

    def to_pil(self, index: int = 0) -> PIL.Image.Image:
        """One frame as a PIL image (the first by default)."""
        import PIL.Image

        return PIL.Image.fromarray(self.frames[index])

    def _encode(self) -> tuple[bytes, str]:
        return self._encode_as("video/mp4"), "video/mp4"

    def _encode_as(self, media_type: str) -> bytes:
        if media_type not in ("video/mp4", "video/webm", "image/gif"):
            return super()._encode_as(media_type)
        return _encode_video(self.frames, self.fps, media_type)

    def _describe(self) -> str:
        if self._frames is not None:
            t, h, w = self._frames.shape[:3]
            return f" {w}x{h} {t} frames @ {self.fps:g} fps"
        return ""

    def with_audio(self, audio: Audio) -> Video:
        """This video as an MP4 with `audio` as its soundtrack, trimmed or padded to its length (see `mediagen.mux`)."""
        from ._mux import mux

        return mux(self, audio)

    def _repr_html_(self) -> str:
        if self.media_type == "image/gif":
            return f'<img src="{self._inline_src()}"/>'
        return f'<video controls loop src="{self._inline_src()}"></video>'


def _frame_array(frame: Any) -> Any:
    import numpy as np

    if hasattr(frame, "to_numpy"):
        return frame.to_numpy()
    return np.asarray(frame)


def _decode_video(data: bytes, media_type: str) -> tuple[np.ndarray[Any, Any], float | None]:
    import numpy as np

    try:
        import imageio.v3 as iio
    except ImportError as exc:  # pragma: no cover - depends on extras
        raise ImportError("decoding video needs: pip install 'mediagen[video]'") from exc
    if media_type == "image/gif":
        frames = iio.imread(data, extension=".gif", index=None)
        meta = iio.immeta(data, extension=".gif")
        duration_ms = meta.get("duration") or 125
        fps: float | None = 1000.0 / float(duration_ms)
    else:
        ext = suffix_for_media_type(media_type) or ".mp4"
        frames = iio.imread(data, extension=ext, plugin="pyav" if _has_pyav() else "FFMPEG", index=None)
        meta = iio.immeta(data, extension=ext, plugin="pyav" if _has_pyav() else "FFMPEG")
        fps = meta.get("fps")
    frames = np.asarray(frames)
    if frames.ndim == 3:  # a single frame
        frames = frames[None]
    return frames[..., :3].astype(np.uint8), float(fps) if fps else None


def _has_pyav() -> bool:
    import importlib.util

    return importlib.util.find_spec("av") is not None


def _encode_video(frames: np.ndarray[Any, Any], fps: float, media_type: str) -> bytes:
    try:
        import imageio.v3 as iio
    except ImportError as exc:  # pragma: no cover - depends on extras
        raise ImportError("encoding video needs: pip install 'mediagen[video]'") from exc
    if media_type == "image/gif":
        return bytes(iio.imwrite("<bytes>", frames, extension=".gif", duration=1000.0 / fps, loop=0))
    ext = suffix_for_media_type(media_type) or ".mp4"
    codec = "libvpx-vp9" if ext == ".webm" else "libx264"
    # yuv420p needs even sizes; pad (never resize) so pixels keep their positions.
    frames = _pad_even(frames[..., :3])
    return bytes(
        iio.imwrite(
            "<bytes>",
            frames,
            extension=ext,
            plugin="FFMPEG",
            fps=fps,
            codec=codec,
            macro_block_size=1,
        )
    )


def _pad_even(frames: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    import numpy as np

    h, w = frames.shape[1:3]
    ph, pw = h % 2, w % 2
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    return frames


# ---------------------------------------------------------------------------------------------


class Audio(Artifact):
    """A sound (`audio/wav`, `audio/flac`, `audio/mpeg`, `audio/ogg`).

    Decoded, it is `samples` (`channels x n` float32 in [-1, 1]) at `sample_rate` Hz.
    """

    kind = "audio"
    default_media_type = "audio/wav"
    _formats = (".wav", ".flac", ".ogg", ".mp3")

    def __init__(self, data: bytes | None = None, *, sample_rate: int | None = None, **kw: Any) -> None:
        super().__init__(data, **kw)
        self._samples: np.ndarray[Any, Any] | None = None
        self._sample_rate = sample_rate

    @classmethod
    def from_samples(cls, samples: Any, sample_rate: int, **kw: Any) -> Audio:
        """Wrap samples: `n` (mono) or `channels x n` floats in [-1, 1] (int16 is scaled)."""
        import numpy as np

        arr = np.asarray(samples)
        if arr.dtype == np.int16:
            arr = arr.astype(np.float32) / 32768.0
        arr = arr.astype(np.float32)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2:
            raise ValueError(f"samples must be n or channels x n, got shape {arr.shape}")
        if arr.shape[0] > arr.shape[1] and arr.shape[1] <= 8:
            arr = arr.T  # n x channels was given
        obj = cls(sample_rate=int(sample_rate), **kw)
        obj._samples = np.ascontiguousarray(arr)
        return obj

    def _has_decoded(self) -> bool:
        return self._samples is not None

    @property
    def samples(self) -> np.ndarray[Any, Any]:
        """`channels x n` float32 samples in [-1, 1] (decoded on first use)."""
        if self._samples is None:
            self._samples, rate = _decode_audio(self.read(), self.media_type)
            self._sample_rate = rate
        return self._samples

    @property
    def sample_rate(self) -> int:
        """Samples per second."""
        if self._sample_rate is None or (self._samples is None and self._data is not None):
            _ = self.samples
        return int(self._sample_rate or 0)

    @property
    def channels(self) -> int:
        """How many channels (1 mono, 2 stereo)."""
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return float(self.samples.shape[1]) / float(self.sample_rate)

    def resample(self, sample_rate: int) -> Audio:
        """A copy at another sample rate (band-limited, via scipy when present)."""
        import numpy as np

        if sample_rate == self.sample_rate:
            return self
        n_out = round(self.samples.shape[1] * sample_rate / self.sample_rate)
        try:
            from scipy.signal import resample_poly

            g = np.gcd(int(sample_rate), int(self.sample_rate))
            out = resample_poly(self.samples, sample_rate // g, self.sample_rate // g, axis=1)[:, :n_out]
        except ImportError:
            x_old = np.linspace(0.0, 1.0, self.samples.shape[1], endpoint=False)
            x_new = np.linspace(0.0, 1.0, n_out, endpoint=False)
            out = np.stack([np.interp(x_new, x_old, ch) for ch in self.samples])
        return Audio.from_samples(out.astype(np.float32), sample_rate, metadata=self.metadata)

    def normalize(self, peak: float = 0.99) -> Audio:
        """A copy scaled so the loudest sample reaches `peak`."""
        import numpy as np

        top = float(np.max(np.abs(self.samples))) if self.samples.size else 0.0
        if top == 0.0:
            return self
        return Audio.from_samples(self.samples * (peak / top), self.sample_rate, metadata=self.metadata)

    def loudness_dbfs(self) -> float:
        """RMS level in dBFS (0 is a full-scale square wave; silence is -inf)."""
        import math

        import numpy as np

        rms = float(np.sqrt(np.mean(np.square(self.samples)))) if self.samples.size else 0.0
        return 20.0 * math.log10(rms) if rms > 0 else float("-inf")

    def _encode(self) -> tuple[bytes, str]:
        return self._encode_as("audio/wav"), "audio/wav"

    def _encode_as(self, media_type: str) -> bytes:
        if media_type == "audio/wav":
            return _wav_bytes(self.samples, self.sample_rate)
        formats = {"audio/flac": "FLAC", "audio/ogg": "OGG", "audio/mpeg": "MP3"}
        if media_type not in formats:
            return super()._encode_as(media_type)
        try:
            import soundfile as sf
        except ImportError as exc:  # pragma: no cover - depends on extras
            raise ImportError(f"saving {media_type} needs: pip install 'mediagen[audio]'") from exc
        buf = io.BytesIO()
        sf.write(buf, self.samples.T, self.sample_rate, format=formats[media_type])
        return buf.getvalue()

    def _describe(self) -> str:
        if self._samples is not None:
            return f" {self.channels}ch {self.sample_rate} Hz {self.duration_s:.2f} s"
        return ""

    def _repr_html_(self) -> str:
        return f'<audio controls src="{self._inline_src()}"></audio>'


def _wav_bytes(samples: np.ndarray[Any, Any], sample_rate: int) -> bytes:
    import numpy as np

    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(int(pcm.shape[0]))
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(np.ascontiguousarray(pcm.T).tobytes())
    return buf.getvalue()


def _decode_audio(data: bytes, media_type: str) -> tuple[np.ndarray[Any, Any], int]:
    import numpy as np

    if media_type == "audio/wav":
        try:
            with wave.open(io.BytesIO(data), "rb") as w:
                width = w.getsampwidth()
                channels = w.getnchannels()
                rate = w.getframerate()
                raw = w.readframes(w.getnframes())
            if width in (1, 2, 4):
                dtype: Any = {1: np.uint8, 2: np.dtype("<i2"), 4: np.dtype("<i4")}[width]
                arr = np.frombuffer(raw, dtype=dtype).astype(np.float32)
                scale = {1: 128.0, 2: 32768.0, 4: 2147483648.0}[width]
                arr = (arr - 128.0) / scale if width == 1 else arr / scale
                return np.ascontiguousarray(arr.reshape(-1, channels).T), rate
        except wave.Error:
            pass  # float WAV and other encodings: soundfile reads them
    try:
        import soundfile as sf
    except ImportError as exc:  # pragma: no cover - depends on extras
        raise ImportError(f"decoding {media_type} needs: pip install 'mediagen[audio]'") from exc
    arr, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return np.ascontiguousarray(arr.T), int(rate)


# ---------------------------------------------------------------------------------------------


class Mesh(Artifact):
    """A triangle mesh (`model/gltf-binary`, `model/obj`, `model/ply`), with vertex colours if any."""

    kind = "mesh"
    default_media_type = "model/gltf-binary"
    _formats = (".glb", ".obj", ".ply")

    def __init__(self, data: bytes | None = None, **kw: Any) -> None:
        super().__init__(data, **kw)
        self._mesh: trimesh.Trimesh | None = None

    @classmethod
    def from_arrays(cls, vertices: Any, faces: Any, vertex_colors: Any | None = None, **kw: Any) -> Mesh:
        """Wrap vertex (`N x 3`) and face (`M x 3`) arrays, with optional `N x 3|4` colours."""
        trimesh = _trimesh()
        import numpy as np

        colors = None
        if vertex_colors is not None:
            colors = np.asarray(vertex_colors)
            if colors.dtype != np.uint8:
                colors = _to_uint8(colors)
        obj = cls(**kw)
        obj._mesh = trimesh.Trimesh(
            vertices=np.asarray(vertices, dtype=np.float64),
            faces=np.asarray(faces, dtype=np.int64),
            vertex_colors=colors,
            process=False,
        )
        return obj

    @classmethod
    def from_trimesh(cls, mesh: trimesh.Trimesh, **kw: Any) -> Mesh:
        """Wrap a `trimesh.Trimesh`."""
        obj = cls(**kw)
        obj._mesh = mesh
        return obj

    def _has_decoded(self) -> bool:
        return self._mesh is not None

    def to_trimesh(self) -> trimesh.Trimesh:
        """Decode into a `trimesh.Trimesh` (scenes are merged into one mesh)."""
        if self._mesh is None:
            trimesh = _trimesh()
            ext = (suffix_for_media_type(self.media_type) or ".glb").lstrip(".")
            loaded = trimesh.load(io.BytesIO(self.read()), file_type=ext, process=False)
            if isinstance(loaded, trimesh.Scene):
                loaded = loaded.to_geometry() if hasattr(loaded, "to_geometry") else loaded.dump(concatenate=True)
            self._mesh = loaded
        return self._mesh

    @property
    def vertices(self) -> np.ndarray[Any, Any]:
        """`N x 3` vertex positions."""
        import numpy as np

        return np.asarray(self.to_trimesh().vertices)

    @property
    def faces(self) -> np.ndarray[Any, Any]:
        """`M x 3` vertex indices of each triangle."""
        import numpy as np

        return np.asarray(self.to_trimesh().faces)

    def _encode(self) -> tuple[bytes, str]:
        return self._encode_as("model/gltf-binary"), "model/gltf-binary"

    def _encode_as(self, media_type: str) -> bytes:
        file_types = {"model/gltf-binary": "glb", "model/obj": "obj", "model/ply": "ply"}
        if media_type not in file_types:
            return super()._encode_as(media_type)
        mesh = self.to_trimesh()
        out = mesh.export(file_type=file_types[media_type])
        return out.encode() if isinstance(out, str) else bytes(out)

    def _describe(self) -> str:
        if self._mesh is not None:
            return f" {len(self._mesh.vertices)} vertices {len(self._mesh.faces)} faces"
        return ""

    def preview(self, size: int = 256) -> Image:
        """A quick shaded render from the front (no GPU, no OpenGL): a point splat of the faces."""
        import numpy as np

        mesh = self.to_trimesh()
        img = np.full((size, size, 3), 255, dtype=np.uint8)
        if len(mesh.faces) == 0:
            return Image.from_array(img)
        centers = np.asarray(mesh.triangles_center)
        normals = np.asarray(mesh.face_normals)
        lo, hi = centers.min(axis=0), centers.max(axis=0)
        scale = (size - 8) / max(float((hi - lo)[:2].max()), 1e-9)
        xs = ((centers[:, 0] - lo[0]) * scale + 4).astype(int).clip(0, size - 1)
        ys = (size - 1 - ((centers[:, 1] - lo[1]) * scale + 4)).astype(int).clip(0, size - 1)
        shade = (np.clip(normals @ np.array([0.3, 0.4, 0.86]), 0, 1) * 200 + 40).astype(np.uint8)
        order = np.argsort(centers[:, 2])  # far to near, so nearer faces paint over
        img[ys[order], xs[order]] = shade[order, None]
        return Image.from_array(img)

    def _repr_html_(self) -> str:
        png = base64.b64encode(self.preview()._repr_png_()).decode()
        return f'<img src="data:image/png;base64,{png}"/><br/><code>{html.escape(repr(self))}</code>'


def _trimesh() -> Any:
    try:
        import trimesh
    except ImportError as exc:  # pragma: no cover - depends on extras
        raise ImportError("meshes need: pip install 'mediagen[3d]'") from exc
    return trimesh


_KINDS: dict[str, type[Artifact]] = {"image": Image, "video": Video, "audio": Audio, "mesh": Mesh}


def artifact_from_bytes(data: bytes, *, media_type: str | None = None, **kw: Any) -> Artifact:
    """Wrap bytes in the artifact class their media type calls for (sniffed when not given).

    Raises:
        ValueError: The bytes are of no media type mediagen knows.
    """
    media_type = media_type or sniff_media_type(data)
    kind = kind_of_media_type(media_type)
    if kind is None:
        raise ValueError(f"cannot tell what kind of media these {len(data)} bytes are ({media_type})")
    return _KINDS[kind](data, media_type=media_type, **kw)


def artifact_for_url(url: str, *, kind: Kind | None = None, **kw: Any) -> Artifact:
    """A lazy artifact for a URL; its class comes from `kind`, else from the URL's suffix."""
    guessed = kind or kind_of_media_type(media_type_for_name(url)) or "image"
    return _KINDS[guessed](url=url, **kw)
