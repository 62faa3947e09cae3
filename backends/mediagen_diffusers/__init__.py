"""The `diffusers` provider: Hugging Face diffusers pipelines on this machine (images, video, 3D).

Examples:
    >>> import mediagen as mg
    >>> async with mg.Client() as client:  # doctest: +SKIP
    ...     res = await client.image("a red fox in snow", model="diffusers:stabilityai/sdxl-turbo", steps=2)
"""

from __future__ import annotations

import importlib.util

# torch and diffusers take seconds to import, so they are only looked for here and imported
# where they are first needed, off the event loop; a missing one still fails at once, clearly.
_missing = [name for name in ("torch", "diffusers", "transformers") if importlib.util.find_spec(name) is None]
if _missing:
    raise ImportError(
        f"the diffusers backend needs {', '.join(_missing)}: pip install 'mediagen[local]' to use 'diffusers:' models"
    )

from .backend import DiffusersBackend, DiffusersSettings  # noqa: E402
from .options import DiffusersOptions  # noqa: E402
from .speed import SpeedOptions  # noqa: E402

__all__ = ["DiffusersBackend", "DiffusersOptions", "DiffusersSettings", "SpeedOptions"]
