"""The `transformers` provider: music (MusicGen) and speech (VITS / MMS-TTS) on this machine's device.

Examples:
    >>> async with mg.Client() as client:  # doctest: +SKIP
    ...     music = await client.audio("calm piano", kind="music", duration_s=8,
    ...                                model="transformers:facebook/musicgen-small")
    ...     speech = await client.audio("Hello there.", kind="speech", model="transformers:facebook/mms-tts-eng")
"""

from __future__ import annotations

import importlib.util

# Only check that the packages are there: torch takes seconds to import, and the client imports this
# module on its event loop. The device worker imports them when the first model loads.
for _package in ("torch", "transformers"):
    if importlib.util.find_spec(_package) is None:
        raise ImportError(f"the 'transformers' provider needs {_package}: pip install 'mediagen[local]'")

from .backend import TransformersBackend, TransformersSettings  # noqa: E402

__all__ = ["TransformersBackend", "TransformersSettings"]
