"""Where batch outputs go: a local directory or any fsspec URL, written atomically, never over a file silently.

`open_output(location)` returns an `OutputDir` that `mediagen batch` (both engines) and
`mediagen.ray.Generate` write through, so there is one place that knows how to put a file in a
directory or a bucket:

- A path, or a `file://` URL, is a `LocalDir`: files go through `mediagen._files.write_atomic`
  (a temporary file created exclusively, then linked or renamed into place; never through a
  planted link), and the manifest is appended to.
- Any other URL (`s3://bucket/run`, `gs://...`, `ftp://host/dir`, a mounted filesystem's own
  protocol) is a `RemoteDir`, through fsspec (`pip install 'mediagen[ray]'`, plus the protocol's
  own package, such as `s3fs`). On an object store one PUT is visible whole or not at all; on
  any other filesystem the bytes go to a temporary name beside the target and are moved into
  place. A file already there is refused unless the caller asks to replace it; the check and the
  write are two steps there (object stores and most remote filesystems have no atomic
  create-if-absent), so one writer per output directory is assumed, as the batch's manifest
  assumes anyway. An append is a rewrite of the whole file (object stores cannot append).

Credentials in a URL (`ftp://user:password@host/dir`) reach fsspec, never a message: every
location mediagen shows is the URL without its user, password and query, and the password is
registered with `mediagen.errors.register_secret`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from ._files import exists_error, write_atomic
from .errors import ConfigError, InvalidRequestError, redact, register_secret

__all__ = ["OutputDir", "LocalDir", "RemoteDir", "open_output", "check_name", "is_plain_name", "public_url"]

# Object stores: one PUT is atomic (and "move" is a copy, then a delete, so it is not).
_SINGLE_PUT = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oci", "oss", "r2", "memory"})


def is_plain_name(name: str) -> bool:
    """Whether `name` is one file name inside a directory (no separator, no `..`, nothing hidden in it)."""
    return (
        bool(name)
        and name not in (".", "..")
        and not any(c in name for c in "/\\\0")
        and name == name.strip()
        and Path(name).name == name
    )


def check_name(name: str) -> str:
    """Return `name` when it is a plain file name (see `is_plain_name`).

    Raises:
        InvalidRequestError: It would leave the output directory, or is no name at all.
    """
    if not is_plain_name(name):
        raise InvalidRequestError(f"{name!r} is not a plain file name inside the output directory")
    return name


def public_url(url: str) -> str:
    """`url` as mediagen may show it: without user, password, query or fragment.

    Examples:
        >>> public_url("ftp://alice:pw@example.org:21/out?token=x")
        'ftp://example.org:21/out'
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:  # a malformed port: show none rather than fail while describing an error
        port = None
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class OutputDir(ABC):
    """A directory that outputs and the manifest are written to; names are plain file names."""

    url: str
    """Where it is, as shown to people (a path, or a URL without credentials)."""

    @abstractmethod
    def prepare(self) -> None:
        """Create the directory if needed; fail early when it cannot be reached.

        Raises:
            ConfigError: It cannot be reached or created (the message holds no credentials).
        """

    @abstractmethod
    def names(self) -> set[str]:
        """The names of the files in it now (empty when it does not exist yet)."""

    @abstractmethod
    def read(self, name: str) -> bytes | None:
        """The file's bytes, or None when there is no such file."""

    @abstractmethod
    def write(self, name: str, data: bytes, *, overwrite: bool = False) -> Path | str:
        """Write `data` to `name` atomically: readers see the whole file or none of it.

        Args:
            name: A plain file name (see `check_name`).
            data: The bytes.
            overwrite: Replace a file already there; otherwise refuse.

        Returns:
            Where it went: a Path for a local directory, else a URL without credentials.

        Raises:
            OutputExistsError: Something is at `name` and `overwrite` is False.
            OSError: The write failed; no partial file is left at `name`.
        """

    @abstractmethod
    def append(self, name: str, text: str) -> None:
        """Add `text` to the end of `name` (created when missing)."""

    @abstractmethod
    def remove(self, name: str) -> None:
        """Delete `name` if it is there."""

    @abstractmethod
    def location(self, name: str) -> Path | str:
        """Where `name` is (what `write` returns)."""


class LocalDir(OutputDir):
    """A directory on this machine (or a shared filesystem mounted here)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.url = str(self.path)

    def prepare(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the output directory {self.url}: {exc.strerror or exc}") from exc

    def names(self) -> set[str]:
        try:
            return set(os.listdir(self.path))
        except FileNotFoundError:
            return set()

    def read(self, name: str) -> bytes | None:
        try:
            return (self.path / check_name(name)).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, name: str, data: bytes, *, overwrite: bool = False) -> Path:
        return write_atomic(self.path / check_name(name), data, overwrite=overwrite)

    def append(self, name: str, text: str) -> None:
        # Appending keeps what is there whatever happens; a torn last line is skipped when read.
        with (self.path / check_name(name)).open("a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()

    def remove(self, name: str) -> None:
        (self.path / check_name(name)).unlink(missing_ok=True)

    def location(self, name: str) -> Path:
        return self.path / check_name(name)


def _import_fsspec() -> Any:
    try:
        import fsspec
    except ImportError as exc:
        raise ConfigError(
            "writing outputs to a URL needs fsspec: pip install 'mediagen[ray]' (or fsspec), "
            "plus the package of the URL's protocol (s3fs for s3://, gcsfs for gs:// ...)"
        ) from exc
    return fsspec


class RemoteDir(OutputDir):
    """A directory behind an fsspec URL (`s3://bucket/run`, `ftp://host/dir` ...).

    Args:
        url: The URL; credentials in it are used, never shown.
        storage_options: Passed to the filesystem (`{"anon": False, "client_kwargs": {...}}`).
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.url = public_url(url)
        self.protocol = url.split("://", 1)[0].lower()
        self._secret = unquote(urlsplit(url).password or "")
        register_secret(self._secret)
        fsspec = _import_fsspec()
        if self.protocol not in fsspec.available_protocols():
            raise ConfigError(
                f"no fsspec filesystem for the output URL scheme {self.protocol!r} ({self.url}); "
                "use a local directory or a URL such as s3://bucket/dir or file:///shared/dir"
            )
        try:
            # A filesystem of our own: FTP and SFTP hold one connection, which threads must not share.
            fs, root = fsspec.core.url_to_fs(url, skip_instance_cache=True, **dict(storage_options or {}))
        except ImportError as exc:  # the protocol's own package (s3fs, gcsfs ...) is missing
            raise ConfigError(f"writing to {self.protocol}:// needs another package: {self._hide(exc)}") from None
        except Exception as exc:  # the filesystem connects as it starts (FTP, SFTP): refused, unknown host, a login
            raise ConfigError(f"cannot reach the output {self.url}: {self._hide(exc)}") from None
        self._fs = fs
        self._root = str(root).rstrip("/")
        self._single_put = self.protocol in _SINGLE_PUT
        # Filesystems that hold one connection (FTP, SFTP) take one call at a time; object stores'
        # clients are made for many at once.
        self._lock: contextlib.AbstractContextManager[Any] = (
            contextlib.nullcontext() if self._single_put else threading.Lock()
        )
        self._texts: dict[str, bytes] = {}

    def _hide(self, exc: BaseException) -> str:
        return redact(f"{type(exc).__name__}: {exc}", self._secret)

    def _path(self, name: str) -> str:
        return f"{self._root}/{check_name(name)}"

    def prepare(self) -> None:
        if self._single_put:
            return  # a prefix needs no creating (and makedirs would create a bucket on some stores)
        try:
            with self._lock:
                self._fs.makedirs(self._root, exist_ok=True)
        except Exception as exc:
            raise ConfigError(f"cannot create the output directory {self.url}: {self._hide(exc)}") from None

    def names(self) -> set[str]:
        with self._lock:
            try:
                found = self._fs.ls(self._root, detail=False)
            except FileNotFoundError:
                return set()
        return {str(p).rstrip("/").rsplit("/", 1)[-1] for p in found}

    def read(self, name: str) -> bytes | None:
        path = self._path(name)
        with self._lock:
            try:
                return bytes(self._fs.cat_file(path))
            except FileNotFoundError:
                return None

    def write(self, name: str, data: bytes, *, overwrite: bool = False) -> str:
        path = self._path(name)
        with self._lock:
            if not overwrite and self._fs.exists(path):
                raise exists_error(self.location(name))
            if self._single_put:
                self._fs.pipe_file(path, data)
            else:
                tmp = f"{self._root}/.{name[:64]}.{secrets.token_hex(8)}.tmp"
                try:
                    self._fs.pipe_file(tmp, data)
                    self._fs.mv(tmp, path)
                except BaseException:
                    with contextlib.suppress(Exception):  # best effort: the failure itself is what matters
                        self._fs.rm(tmp)
                    raise
        return self.location(name)

    def append(self, name: str, text: str) -> None:
        # No append on object stores: the whole file is written again (one writer, so ours is current).
        if name not in self._texts:
            self._texts[name] = self.read(name) or b""
        updated = self._texts[name] + text.encode("utf-8")
        self.write(name, updated, overwrite=True)
        self._texts[name] = updated

    def remove(self, name: str) -> None:
        path = self._path(name)
        with self._lock, contextlib.suppress(FileNotFoundError):
            if self._fs.exists(path):  # some servers (FTP) answer a missing file with a generic error
                self._fs.rm(path)

    def location(self, name: str) -> str:
        return f"{self.url.rstrip('/')}/{check_name(name)}"


def open_output(location: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None) -> OutputDir:
    """The output directory at `location`: a path, a `file://` URL, or any other fsspec URL.

    Args:
        location: Where the outputs go.
        storage_options: Options for an fsspec filesystem (ignored for local directories).

    Raises:
        ConfigError: fsspec (or the protocol's package) is missing, the protocol is unknown, or the
            place cannot be reached.
    """
    if not isinstance(location, str) or "://" not in location:
        return LocalDir(location)
    if location.lower().startswith("file://"):
        parts = urlsplit(location)
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"a file:// URL names this machine's files; {public_url(location)} names another host")
        # A local path keeps the strongest guarantees: exclusive create, no planted links, fsync.
        return LocalDir(unquote(parts.path))
    return RemoteDir(location, storage_options)
