"""Model references: a hub id or a local directory, and the hub's errors in mediagen's terms.

Shared by every local backend, so a missing directory or an offline cache reads the same whichever
library loads the model.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from mediagen.errors import DownloadError, ModelNotFoundError

__all__ = ["resolve_reference", "hub_errors"]

_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def resolve_reference(ref: str, *, what: str) -> tuple[str, Path | None]:
    """Tell a local path from a hub id.

    Args:
        ref: A directory, a file, or a hub id.
        what: What it is ("model", "ControlNet", "LoRA"), for messages.

    Returns:
        `(source, path)`: the absolute path and the path itself when it exists locally; the hub id
        and None otherwise.

    Raises:
        ModelNotFoundError: `ref` looks like a path (absolute, `./`, `~`) but nothing is there, or
            it cannot be a path here (an unknown `~user`, a name too long for the file system).
    """
    try:
        path = Path(ref).expanduser()
        exists = path.exists()
    except (OSError, RuntimeError, ValueError) as exc:
        # expanduser raises RuntimeError for an unknown `~user`; stat raises OSError for a name too
        # long and ValueError for a NUL byte.
        raise ModelNotFoundError(
            f"no {what} at {ref[:120]!r}: not a usable path ({type(exc).__name__}: {exc})"
        ) from exc
    if exists:
        return str(path.absolute()), path.absolute()
    looks_like_path = (
        os.path.isabs(ref)
        or ref.startswith((".", "~"))
        or "\\" in ref
        or ref.count("/") > 1
        or ref.endswith(_WEIGHT_SUFFIXES)
    )
    if looks_like_path:
        raise ModelNotFoundError(f"no {what} at {ref!r}: the path does not exist")
    return ref, None


@contextlib.contextmanager
def hub_errors(ref: str, what: str, library: str = "diffusers") -> Iterator[None]:
    """Turn huggingface_hub's errors into mediagen's, naming `ref` and what to do."""
    from huggingface_hub import errors as hub

    try:
        yield
    except hub.HFValidationError as exc:
        raise ModelNotFoundError(
            f"{ref[:120]!r} is neither a local path nor a valid Hugging Face Hub id (like 'owner/name'): {exc}"
        ) from exc
    except hub.RepositoryNotFoundError as exc:
        raise ModelNotFoundError(
            f"no {what} {ref!r} on the Hugging Face Hub (or it is gated or private: set HF_TOKEN)"
        ) from exc
    except (hub.LocalEntryNotFoundError, hub.OfflineModeIsEnabled) as exc:
        raise ModelNotFoundError(
            f"{what} {ref!r} is not in the local Hugging Face cache and the hub cannot be reached "
            f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}); download it once while online, "
            "or give a local directory"
        ) from exc
    except hub.EntryNotFoundError as exc:
        raise ModelNotFoundError(f"{what} {ref!r} on the hub lacks a file {library} needs: {exc}") from exc
    except hub.HfHubHTTPError as exc:
        raise DownloadError(f"could not fetch {what} {ref!r} from the Hugging Face Hub: {exc}") from exc
