"""One lock for first use of the lazily-imported model libraries.

diffusers' and transformers' lazy modules are not thread-safe on first use: threads that import or
look up classes at the same time can see a half-imported module, and a class that exists looks
missing (`cannot import name 'AutoConfig'`). diffusers imports transformers too, so every local
backend shares this one lock around code that imports or resolves their classes.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

__all__ = ["IMPORT_LOCK", "one_at_a_time"]

IMPORT_LOCK = threading.RLock()
"""Held while a thread imports or resolves classes of diffusers or transformers."""

_P = ParamSpec("_P")
_R = TypeVar("_R")


def one_at_a_time(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run `fn` under `IMPORT_LOCK`, so its imports never race another thread's."""

    @functools.wraps(fn)
    def locked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with IMPORT_LOCK:
            return fn(*args, **kwargs)

    return locked


@one_at_a_time
def quiet_library_progress() -> None:
    """Turn off the libraries' own progress bars ("Loading pipeline components", "Loading weights").

    mediagen reports progress as events; bars written straight to stderr by the libraries would
    interleave with the caller's output. `MEDIAGEN_LIBRARY_PROGRESS=1` keeps them.
    """
    import os

    # The third-party message filters are installed when `mediagen_local` is imported.
    if os.environ.get("MEDIAGEN_LIBRARY_PROGRESS") == "1":
        return
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging
    from huggingface_hub.utils import disable_progress_bars  # type: ignore[attr-defined]

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    disable_progress_bars()
