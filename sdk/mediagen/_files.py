"""Writing files: atomically, never over an existing file unless asked, never through a planted link.

`write_atomic(target, payload, overwrite=...)` is how mediagen writes every file it saves:

1. The bytes go into a temporary file beside the target, created exclusively (`O_CREAT | O_EXCL`,
   which never follows a symlink) under a random name, so no other writer, thread or planted link
   can share or redirect it; it is flushed to disk before it takes the target's name.
2. With `overwrite=False` the temporary file is hard-linked to the target name, which fails when
   anything (a file, a link, a directory) is there: the check and the claim are one atomic step, so
   two writers cannot both believe the name was free. With `overwrite=True` it is renamed over the
   target: readers see the old file or the new one, never a mix, and of concurrent writers the
   last rename wins with a whole file.
3. On any failure (a full disk, a writer raising mid-way, an interrupt) the temporary file is
   removed, and the target is left as it was.

`write_new(directory, name, payload)` saves under a name mediagen derived, taking the next free one
(`out-0.png`, then `out-0-1.png`, `out-0-2.png` ...) instead of failing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from .errors import OutputExistsError

__all__ = ["EXCLUSIVE_CREATE", "exists_error", "write_atomic", "write_new", "next_free_names"]

EXCLUSIVE_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
EXCLUSIVE_CREATE |= getattr(os, "O_BINARY", 0)
# Errors from `os.link` on a filesystem without hard links (some network and FUSE mounts).
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


def _temp_beside(target: Path, mode: int) -> tuple[int, Path]:
    for _ in range(100):
        # Short prefix of the target's name (for a human wondering what it is), random tail.
        tmp = target.with_name(f".{target.name[:64]}.{secrets.token_hex(8)}.tmp")
        try:
            return os.open(tmp, EXCLUSIVE_CREATE, mode), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {target}")  # pragma: no cover


def write_atomic(
    target: str | os.PathLike[str],
    payload: bytes | Iterable[bytes],
    *,
    overwrite: bool = False,
    mode: int = 0o666,
) -> Path:
    """Write `payload` to `target` atomically (see the module docs).

    Args:
        target: The file to write; its directory must exist.
        payload: The bytes, or chunks of them (a generator may raise part-way: nothing is left).
        overwrite: Replace a file already at `target`; otherwise refuse.
        mode: Permission bits of the new file, before the umask (`0o600` for private files).

    Returns:
        `target`, as a Path.

    Raises:
        OutputExistsError: `overwrite` is False and something is at `target`.
        OSError: The write failed (the temporary file is gone, `target` untouched).
    """
    path = Path(target)
    tmp = _write_temp(path, payload, mode)
    try:
        if overwrite:
            os.replace(tmp, path)
        else:
            _claim(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # already renamed when replaced; the extra link (or a failure's leftover) otherwise
    _sync_dir(path.parent)
    return path


def _write_temp(path: Path, payload: bytes | Iterable[bytes], mode: int) -> Path:
    fd, tmp = _temp_beside(path, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in [payload] if isinstance(payload, (bytes, bytearray, memoryview)) else payload:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())  # the bytes are on disk before a name points at them
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def exists_error(path: str | os.PathLike[str]) -> OutputExistsError:
    """The error for a write that would replace `path` without `overwrite=True`."""
    return OutputExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it", path=str(path))


def _claim(tmp: Path, path: Path) -> None:
    """Give `tmp`'s file the name `path` only if nothing is there (atomic check-and-claim)."""
    try:
        os.link(tmp, path, follow_symlinks=False)
        return
    except FileExistsError:
        raise exists_error(path) from None
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
    # No hard links here: claim the name with an exclusive create, then rename the bytes onto it.
    try:
        os.close(os.open(path, EXCLUSIVE_CREATE, 0o600))
    except FileExistsError:
        raise exists_error(path) from None
    os.replace(tmp, path)


def _sync_dir(directory: Path) -> None:
    # The new name itself survives a crash only once the directory is flushed (POSIX; best effort).
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def next_free_names(name: str, limit: int = 10_000) -> Iterable[str]:
    """`name`, then `stem-1.ext`, `stem-2.ext` ... (the candidates `write_new` tries)."""
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem:
        stem, suffix = name, ""
    tail = f".{suffix}" if suffix else ""
    yield name
    for i in range(1, limit):
        yield f"{stem}-{i}{tail}"


def write_new(directory: Path, name: str, payload: bytes | Iterable[bytes], *, mode: int = 0o666) -> Path:
    """Write `payload` under `name` in `directory`, or the next free name after it; never replace.

    Raises:
        OutputExistsError: Ten thousand names are taken.
    """
    tmp = _write_temp(directory / name, payload, mode)
    try:
        for candidate in next_free_names(name):
            try:
                _claim(tmp, directory / candidate)
            except OutputExistsError:
                continue
            _sync_dir(directory)
            return directory / candidate
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    raise OutputExistsError(f"no free name left for {name} in {directory}", path=str(directory / name))
