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
import math
import os
import re
import wave
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ._config import (
    DEFAULT_DOWNLOAD_TIMEOUT_S,
    DEFAULT_MAX_DECODED_BYTES,
    DEFAULT_MAX_DOWNLOAD_BYTES,
)
from ._media import (
    Kind,
    decode_data_url,
    kind_of_media_type,
    media_type_for_name,
    parse_media_type,
    sniff_media_type,
    suffix_for_media_type,
    to_data_url,
)
from .errors import InvalidRequestError, MediaTooLargeError

if TYPE_CHECKING:
    import numpy as np
    import PIL.Image
    import trimesh

    from ._download import ByteBudget

__all__ = ["Artifact", "Image", "Video", "Audio", "Mesh", "artifact_from_bytes", "name_outputs"]

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
        max_bytes: Largest body accepted when fetching `url` (a `data:` URL included).
        download_timeout: Seconds the fetch of `url` may take in all (a wall-clock deadline).
        budget: A byte total shared with the other artifacts of one result (see `ByteBudget`).

    Attributes:
        max_decoded_bytes: Largest decoded form (video frames, audio samples) built from the bytes;
            set it on an instance or on the class to allow more.

    Raises:
        InvalidRequestError: `media_type` or a `data:` URL is malformed.
        MediaTooLargeError: A `data:` URL passes `max_bytes`.
    """

    kind: ClassVar[Kind]
    default_media_type: ClassVar[str]
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES

    def __init__(
        self,
        data: bytes | None = None,
        *,
        url: str | None = None,
        path: str | os.PathLike[str] | None = None,
        media_type: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
        download_timeout: float = DEFAULT_DOWNLOAD_TIMEOUT_S,
        budget: ByteBudget | None = None,
    ) -> None:
        if media_type is not None:
            given = media_type
            media_type = parse_media_type(given)
            if media_type is None:
                raise InvalidRequestError(f"not a media type: {given[:60]!r} (expected e.g. 'image/png')")
        if url is not None and url.startswith("data:"):
            # A data URL is already the bytes (held to the same cap as a download); keep the URL
            # too so it can be passed on as is.
            data, declared = decode_data_url(url, max_bytes=max_bytes)
            if budget is not None:
                budget.take(len(data), "a data: URL")
            media_type = media_type or declared
        self._data = data
        self.url = url
        self.path = Path(path) if path is not None else None
        self._media_type = media_type
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.max_bytes = max_bytes
        self.download_timeout = download_timeout
        self._budget = budget

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
                # The download layer (asyncio, sockets) loads on first use: `import mediagen` stays light.
                from ._download import download

                self._data = download(
                    self.url, max_bytes=self.max_bytes, timeout=self.download_timeout, budget=self._budget
                )
            else:
                self._data, self._media_type = self._encode()
        return self._data

    async def aread(self, *, client: object | None = None) -> bytes:
        """Return the encoded bytes without blocking the event loop on a download.

        Args:
            client: An `httpx.AsyncClient` whose connection pool the download may use.
        """
        if self._data is None and self.path is None and self.url is not None:
            from ._download import adownload

            self._data = await adownload(
                self.url, max_bytes=self.max_bytes, timeout=self.download_timeout, client=client, budget=self._budget
            )
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

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the artifact to `path`, in the format its suffix names; never over a file unless asked.

        `path` may be a directory (an existing one, or a name ending in `/`): the file then takes
        the artifact's own name (`metadata["filename"]`, which the client makes unique within a
        result, else the last part of its URL), passed through `mediagen.safety.safe_filename`, so
        a provider's name never puts the file outside that directory.

        A name you give is never replaced: when a file is already there, `save` raises
        `OutputExistsError` unless `overwrite=True`. A name derived for you (saving into a
        directory) moves to the next free one instead (`out-0.png`, `out-0-1.png` ...), unless
        `overwrite=True`. The file is written atomically (see `mediagen._files`): readers never
        see half of it, and a failed write leaves nothing behind.

        When `metadata["provenance"]` is set (the client sets it on results), it is written into
        the file without re-encoding, or into a `<file>.mediagen.json` sidecar where the format
        has no place for it (see `mediagen.provenance`; read it back with `mg.read_provenance`).
        The sidecar belongs to its file and follows it (replaced when the file is written).

        Args:
            path: A file, or a directory to save into.
            overwrite: Replace a file already there.

        Returns:
            The path written.

        Raises:
            OutputExistsError: `path` names an existing file and `overwrite` is False.
            ValueError: The suffix names a format this kind of artifact cannot be saved as.
        """
        from ._files import exists_error, write_atomic, write_new

        target, derived = self._save_target(path)
        self._format_for(target.name)  # a bad suffix fails before anything is checked or created
        if not overwrite and not derived and os.path.lexists(target):
            # Refuse before encoding (cheap); the write itself refuses again, atomically.
            raise exists_error(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        payload, sidecar = self.file_payload(target.name)
        if derived and not overwrite:
            target = write_new(target.parent, target.name, payload)
        else:
            write_atomic(target, payload, overwrite=overwrite)
        if sidecar is not None:
            from ._embedding import sidecar_path

            write_atomic(sidecar_path(target), sidecar, overwrite=True)
        return target

    def _format_for(self, name: str) -> str:
        """The media type a file called `name` is written as (ValueError when its suffix names none)."""
        wanted = media_type_for_name(name)
        if wanted is None:
            raise ValueError(f"cannot tell a format from {name!r}: add a suffix such as {self._suffixes()}")
        return wanted

    def file_payload(self, name: str) -> tuple[bytes, bytes | None]:
        """The bytes `save` writes for a file called `name`, and those of its sidecar (or None).

        The format comes from `name`'s suffix; provenance (`metadata["provenance"]`) is written into
        the file, or into the sidecar where the format has no place for it. For writers that put
        files elsewhere than a local path (an fsspec URL: see `mediagen.batch`).

        Raises:
            ValueError: The suffix names no format this kind of artifact can be saved as.
        """
        wanted = self._format_for(name)
        if self.is_loaded and self._data is None:
            payload = self._encode_as(wanted)
        else:
            data = self.read()
            payload = data if self.media_type == wanted else self._encode_as(wanted)
        provenance = self.metadata.get("provenance")
        if isinstance(provenance, Mapping) and provenance:
            from ._embedding import embed, sidecar_json

            stamped = embed(payload, wanted, provenance)
            if stamped is None:
                return payload, sidecar_json(provenance)
            return stamped, None
        return payload, None

    def _save_target(self, path: str | os.PathLike[str]) -> tuple[Path, bool]:
        """Where `save(path)` writes, and whether the name was derived (saving into a directory)."""
        given = os.fspath(path)
        target = Path(given)
        if not (given.endswith(("/", os.sep)) or target.is_dir()):
            return target, False
        return target / self._own_name(), True

    def _own_name(self) -> str:
        """The artifact's own file name: its `filename`, its URL's or path's last part, else its kind."""
        from .safety import safe_filename

        suffix = suffix_for_media_type(self.media_type) or ""
        source = self.metadata.get("filename") or (self.url if self.url and not self.url.startswith("data:") else None)
        if source is None and self.path is not None:
            source = self.path.name
        name = safe_filename(str(source) if source else None, default=f"{self.kind}{suffix}")
        if kind_of_media_type(media_type_for_name(name)) != self.kind:
            name += suffix  # a provider's name with a foreign suffix must not pick the format
        return name

    async def asave(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Async twin of `save`: neither the download nor the encoding blocks the event loop."""
        import asyncio

        await self.aread()
        # Encoding, and the ffmpeg remux that writes provenance into an MP4, take real time.
        return await asyncio.to_thread(self.save, path, overwrite=overwrite)

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
        """A `src=` for HTML: the URL when it is remote or the bytes are large, else a data URL.

        Everything is escaped for an HTML attribute, the media type is re-checked against the
        strict grammar, and a URL that is not http(s) is never shown (no `javascript:` source).
        """
        remote = self.url if self.url and self.url.startswith(("https://", "http://")) else None
        if self.url and not self.url.startswith("data:") and not self.is_loaded:
            return html.escape(remote or "", quote=True)
        data = self.read()
        if len(data) > _INLINE_LIMIT and remote:
            return html.escape(remote, quote=True)
        media_type = parse_media_type(self.media_type) or "application/octet-stream"
        return html.escape(f"data:{media_type};base64,{base64.b64encode(data).decode()}", quote=True)


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

            try:
                pil = PIL.Image.open(io.BytesIO(self.read()))
                # Checked from the header, before a pixel is decoded (4 bytes a pixel at most).
                if pil.width * pil.height * 4 > self.max_decoded_bytes:
                    raise _too_large("this image", pil.width * pil.height * 4, self.max_decoded_bytes)
                pil.load()
            except PIL.Image.DecompressionBombError as exc:
                raise MediaTooLargeError(f"the image is a decompression bomb: {exc}") from exc
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
            self._frames, fps = _decode_video(self.read(), self.media_type, self.max_decoded_bytes)
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
        from ._ffmpeg import encode_video

        return encode_video(self.frames, self.fps, media_type)

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


def _too_large(what: str, size: int, limit: int) -> MediaTooLargeError:
    return MediaTooLargeError(
        f"{what} would decode to {size} bytes, past the cap of {limit} bytes "
        "(raise the artifact's max_decoded_bytes to allow it)",
        limit=limit,
    )


def _decode_video(data: bytes, media_type: str, max_bytes: int) -> tuple[np.ndarray[Any, Any], float | None]:
    """Decode every frame, counting frames x height x width x 3 against `max_bytes` as it goes.

    A frame's size is checked before the first one is decoded, and the running total before each
    next one, so a tiny file that claims thousands of huge frames fails at the cap, not at the
    machine's memory.
    """
    import numpy as np

    if media_type in ("image/gif", "image/webp", "image/png", "image/apng"):
        frames, fps = _decode_animation(data, max_bytes)
    else:
        try:
            import imageio.v3 as iio
        except ImportError as exc:  # pragma: no cover - depends on extras
            raise ImportError("decoding video needs: pip install 'mediagen[video]'") from exc
        ext = suffix_for_media_type(media_type) or ".mp4"
        plugin = "pyav" if _has_pyav() else "FFMPEG"
        meta = iio.immeta(data, extension=ext, plugin=plugin)
        fps = meta.get("fps")
        size = meta.get("size")
        if isinstance(size, (tuple, list)) and len(size) == 2:
            per_frame = int(size[0]) * int(size[1]) * 3
            declared = meta.get("nframes")
            count = int(declared) if isinstance(declared, (int, float)) and math.isfinite(declared) else 1
            if per_frame * max(1, count) > max_bytes:
                raise _too_large(f"this video ({count} frames of {size[0]}x{size[1]})", per_frame * count, max_bytes)
        frames = []
        total = 0
        for frame in iio.imiter(data, extension=ext, plugin=plugin):
            total += int(np.asarray(frame).shape[0]) * int(np.asarray(frame).shape[1]) * 3
            if total > max_bytes:
                raise _too_large("this video", total, max_bytes)
            frames.append(np.asarray(frame)[..., :3].astype(np.uint8))
    if not frames:
        raise ValueError("the video holds no frames")
    return np.stack(frames), float(fps) if fps else None


def _decode_animation(data: bytes, max_bytes: int) -> tuple[list[np.ndarray[Any, Any]], float | None]:
    """GIF, animated WebP and APNG frames through Pillow, one at a time, under the cap."""
    import numpy as np
    import PIL.Image

    frames: list[np.ndarray[Any, Any]] = []
    try:
        with PIL.Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            per_frame = width * height * 3
            declared = int(getattr(im, "n_frames", 1))  # read from the frame headers, nothing decoded
            if per_frame * declared > max_bytes:
                raise _too_large(
                    f"this animation ({declared} frames of {width}x{height})", per_frame * declared, max_bytes
                )
            duration_ms = im.info.get("duration") or 125
            index = 0
            while True:
                if per_frame * (index + 1) > max_bytes:
                    raise _too_large(f"this animation ({index + 1} frames so far)", per_frame * (index + 1), max_bytes)
                frames.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
                index += 1
                try:
                    im.seek(index)
                except EOFError:
                    break
    except PIL.Image.DecompressionBombError as exc:
        raise MediaTooLargeError(f"the animation is a decompression bomb: {exc}", limit=max_bytes) from exc
    return frames, 1000.0 / float(duration_ms)


def _has_pyav() -> bool:
    import importlib.util

    return importlib.util.find_spec("av") is not None


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
            self._samples, rate = _decode_audio(self.read(), self.media_type, self.max_decoded_bytes)
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


def _decode_audio(data: bytes, media_type: str, max_bytes: int) -> tuple[np.ndarray[Any, Any], int]:
    """Decode to float32 samples; the sample count (from the header) is checked against `max_bytes` first."""
    import numpy as np

    if media_type == "audio/wav":
        try:
            with wave.open(io.BytesIO(data), "rb") as w:
                width = w.getsampwidth()
                channels = w.getnchannels()
                rate = w.getframerate()
                # A header may claim more frames than the bytes hold; the bytes bound what is read.
                count = min(w.getnframes(), len(data) // max(1, width * channels))
                if count * channels * 4 > max_bytes:
                    raise _too_large("this sound", count * channels * 4, max_bytes)
                raw = w.readframes(count)
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
    info = sf.info(io.BytesIO(data))
    if int(info.frames) * int(info.channels) * 4 > max_bytes:
        raise _too_large("this sound", int(info.frames) * int(info.channels) * 4, max_bytes)
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
    media_type = parse_media_type(media_type) or sniff_media_type(data)
    kind = kind_of_media_type(media_type)
    if kind is None:
        raise ValueError(f"cannot tell what kind of media these {len(data)} bytes are ({media_type})")
    return _KINDS[kind](data, media_type=media_type, **kw)


def artifact_for_url(url: str, *, kind: Kind | None = None, **kw: Any) -> Artifact:
    """A lazy artifact for a URL; its class comes from `kind`, else from the URL's suffix."""
    guessed = kind or kind_of_media_type(media_type_for_name(url)) or "image"
    return _KINDS[guessed](url=url, **kw)


_NUMBERED = re.compile(r"^(.*?)(?:-\d+)?$")


def name_outputs(artifacts: Sequence[Artifact]) -> None:
    """Give each artifact of one result a file name no other artifact of it has.

    `save(directory)` writes an artifact under its own name (`metadata["filename"]`, else its
    URL's last part, else its kind). Outputs often share one (every Replicate prediction names its
    file `out-0.webp`; a local backend's images are all `image.png`), and a result saved into one
    directory would then keep one file. Names already unique are kept; each group that clashes is
    numbered by position in the group (`out-0.webp`, `out-1.webp`; `image-0.png`, `image-1.png`),
    any trailing `-<number>` of the shared name replaced.
    """
    names = [a._own_name() for a in artifacts]
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    taken = {n for n in names if counts[n] == 1}
    seen: dict[str, int] = {}
    for artifact, name in zip(artifacts, names, strict=True):
        if counts[name] == 1:
            artifact.metadata["filename"] = name
            continue
        stem, dot, suffix = name.rpartition(".")
        if not dot:
            stem, suffix = name, ""
        base = _NUMBERED.sub(r"\1", stem) or stem
        index = seen.get(name, 0)
        candidate = f"{base}-{index}{'.' + suffix if suffix else ''}"
        while candidate in taken:  # a provider that named another output exactly this
            index += 1
            candidate = f"{base}-{index}{'.' + suffix if suffix else ''}"
        seen[name] = index + 1
        taken.add(candidate)
        artifact.metadata["filename"] = candidate
