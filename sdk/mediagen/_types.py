"""Input types accepted wherever a request takes media, and their conversion into artifacts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from .artifacts import Artifact, Audio, Image, Video

if TYPE_CHECKING:
    import numpy as np
    import PIL.Image

__all__ = ["ImageInput", "VideoInput", "AudioInput", "coerce_artifact"]

ImageInput = Union[Image, str, "os.PathLike[str]", bytes, "PIL.Image.Image", "np.ndarray[Any, Any]"]
"""An image given as an artifact, a path, a URL (http(s) or data:), encoded bytes, a PIL image or an array."""
VideoInput = Union[Video, str, "os.PathLike[str]", bytes]
"""A video given as an artifact, a path, a URL or encoded bytes."""
AudioInput = Union[Audio, str, "os.PathLike[str]", bytes]
"""A sound given as an artifact, a path, a URL or encoded bytes."""

_URL_SCHEMES = ("http://", "https://", "data:")


def coerce_artifact(value: Any, cls: type[Artifact]) -> Artifact:
    """Turn any accepted input into an artifact of `cls`, without network I/O.

    Raises:
        ValueError: The value cannot be an artifact of this kind (the message says what can).
        TypeError: The value's type is not accepted at all.
    """
    if isinstance(value, cls):
        return value
    if isinstance(value, Artifact):
        raise ValueError(f"expected {_a(cls.__name__)}, got {_a(type(value).__name__)} artifact")
    if isinstance(value, bytes):
        if not value:
            raise ValueError("got empty bytes; pass the file's contents")
        artifact = cls(value)
        _check_kind(artifact, cls)
        return artifact
    if isinstance(value, str) and value.startswith(_URL_SCHEMES):
        artifact = cls(url=value)
        if value.startswith("data:"):
            _check_kind(artifact, cls)
        return artifact
    if isinstance(value, (str, os.PathLike)):
        try:
            # expanduser raises RuntimeError for an unknown `~user`; stat raises OSError for a name too long.
            path = Path(value).expanduser()
            if not path.is_file():
                raise ValueError(f"no such file: {str(path)!r} (pass a path, an http(s)/data: URL, or bytes)")
            with open(path, "rb") as f:
                head = f.read(4096)  # a look at the head tells the kind without loading a large file
        except (OSError, RuntimeError) as exc:
            raise ValueError(f"not a usable path: {str(value)[:80]!r} ({exc})") from None
        _check_kind(cls(head), cls)
        return cls(path=path)
    if cls is Image:
        if type(value).__module__.startswith("PIL."):
            return Image.from_pil(value)
        if type(value).__module__ == "numpy" and hasattr(value, "shape"):
            if len(value.shape) not in (2, 3):
                raise ValueError(f"an image array must be HxW or HxWxC, got shape {value.shape}")
            return Image.from_array(value)
    if cls is Video and type(value).__module__ == "numpy" and hasattr(value, "shape"):
        return Video.from_frames(value)
    accepted = "an artifact, a path, a URL or bytes"
    if cls is Image:
        accepted = "an mg.Image, a path, a URL, bytes, a PIL image or a numpy array"
    raise TypeError(f"cannot use {_a(type(value).__name__)} as {_a(cls.__name__)}; pass {accepted}")


def _check_kind(artifact: Artifact, cls: type[Artifact]) -> None:
    from ._media import kind_of_media_type, sniff_media_type

    data = artifact.read()
    sniffed = sniff_media_type(data)
    kind = kind_of_media_type(sniffed)
    # An animated GIF is a fine video input; anything else must match the kind asked for.
    if sniffed is None or (kind != cls.kind and not (cls is Video and sniffed == "image/gif")):
        raise ValueError(
            f"these bytes are {sniffed or 'of an unknown format'}, not {'an' if cls.kind[0] in 'aeiou' else 'a'} {cls.kind}"
        )


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"
