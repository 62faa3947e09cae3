"""The result cache: a finished result on disk, found again by what produced it.

The key is a SHA-256 over everything that decides the output: provider, model and the revision
the backend resolves it to, the normalised request (`model_dump(mode="json")`, where input media
appear by URL or by the SHA-256 of their bytes), and the seeds. A request without a seed is random
on purpose, so it is cached only when the caller opts in (`cache=True` on the call).

On disk, each entry is one directory, `<dir>/<key[:2]>/<key>/`, holding the artifacts' files and a
`manifest.json` with their sizes and hashes and a checksum of itself:

- writers build the entry in a private temporary directory and rename it into place, so readers
  never see half an entry, and of two processes writing one key, one rename wins and the other
  is discarded: one good entry remains;
- a reader that finds an entry it cannot trust (bad manifest, wrong checksum, a file missing or
  truncated) moves it aside and deletes it, and the result is computed again;
- past `max_bytes`, the least recently used entries are evicted (a hit refreshes an entry).

Trust: the cache trusts whoever can write its directory, and makes sure that is only you. The
directory and every entry are created private (`0700`, files `0600`); a cache directory you own
that is open to others is closed (`chmod 0700`) on first use, and one owned by another user is
not used at all (a warning says so). The checksum in each manifest catches damage, not forgery:
anyone able to write there could write a consistent entry, which is why nobody else may. A
manifest's file names are checked (`<index>.<suffix>`, nothing else), so an entry can only ever
read files inside its own directory, never through a link.

Configure it in `mediagen.toml` (it is off unless enabled):

```toml
[cache]
enabled = true
dir = "~/.cache/mediagen/results"   # default: the user cache directory, then results/
max_bytes = 2_000_000_000
```
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from ._config import cache_dir
from ._files import EXCLUSIVE_CREATE

if TYPE_CHECKING:
    from .artifacts import Artifact
    from .requests import Request
    from .results import Result

__all__ = ["ResultCache", "CacheSettings", "DEFAULT_CACHE_MAX_BYTES", "cache_key"]

logger = logging.getLogger("mediagen.cache")

DEFAULT_CACHE_MAX_BYTES = 2 * 1024**3
"""Default size limit of the result cache (2 GiB)."""

_FORMAT = 1  # bumped when the key or the layout changes; old entries are then simply never found
_MANIFEST = "manifest.json"
_TMP = ".tmp"
_TRASH = ".trash"
_ROUTING_NOTES = ("fallback", "retry")
# What `put` names an artifact's file; `_load` reads no other name (no `..`, no `/`, no manifest).
_FILE_NAME = re.compile(r"[0-9]{1,6}\.[a-z0-9]{1,8}")
_PRIVATE_DIR = 0o700
_PRIVATE_FILE = 0o600


class CacheSettings(BaseModel):
    """The `[cache]` table of `mediagen.toml`."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    """Cache results of seeded requests (per call, `cache=` overrides it)."""
    dir: str | None = None
    """Where entries live; default `<user cache dir>/results`."""
    max_bytes: int = Field(DEFAULT_CACHE_MAX_BYTES, ge=0)
    """Size limit; the least recently used entries go first past it."""


def cache_key(
    request: Request, provider: str, model: str, revision: str | None, *, extra: Mapping[str, Any] | None = None
) -> str:
    """The key of a request's result: hex SHA-256 over all that decides the output.

    Args:
        request: The request (input media count by URL or by the SHA-256 of their bytes).
        provider: The provider name.
        model: The model part of the model string.
        revision: What the backend resolved the model to (`Backend.revision`), if known.
        extra: Anything else that decides the output.

    Raises:
        ValueError: The request holds something that cannot be normalised (an option that is not
            JSON), so it cannot be cached.
    """
    try:
        normalised = request.model_dump(mode="json")
    except Exception as exc:  # pydantic's serialisation error names the field
        raise ValueError(f"this request cannot be cached: {exc}") from exc
    document = {
        "format": _FORMAT,
        "provider": provider,
        "model": model,
        "revision": revision,
        "modality": request.modality,
        "request": normalised,
        "seeds": request.seeds(),
        "extra": dict(extra or {}),
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_no_json)
    return hashlib.sha256(text.encode()).hexdigest()


def _no_json(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON")


def _checksum(manifest: Mapping[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _json_safe(metadata: Mapping[str, Any]) -> dict[str, Any]:
    # Metadata may hold anything; the cache keeps what survives JSON and drops the rest.
    out = {}
    for key, value in metadata.items():
        if key == "provenance":
            continue  # stamped afresh on every result the client returns
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        out[str(key)] = value
    return out


class ResultCache:
    """Results on disk, content-addressed; see the module docs.

    Args:
        directory: Where entries live (created on first write).
        max_bytes: Size limit; least recently used entries are evicted past it.

    Examples:
        >>> cache = ResultCache("/tmp/mediagen-results")  # doctest: +SKIP
        >>> async with mg.Client(cache=cache) as client:  # doctest: +SKIP
        ...     a = await client.image("a fox", model="test:fake", seed=7)
        ...     b = await client.image("a fox", model="test:fake", seed=7)  # no backend call
        ...     assert b.cached and b.artifacts[0].read() == a.artifacts[0].read()
    """

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int = DEFAULT_CACHE_MAX_BYTES) -> None:
        self.directory = Path(directory).expanduser()
        self.max_bytes = max_bytes

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | CacheSettings | None = None) -> ResultCache:
        """A cache from `[cache]` settings (`dir`, `max_bytes`); defaults where absent.

        Raises:
            ValueError: The settings hold unknown keys or bad values.
        """
        parsed = settings if isinstance(settings, CacheSettings) else CacheSettings.model_validate(dict(settings or {}))
        directory = Path(parsed.dir).expanduser() if parsed.dir else cache_dir() / "results"
        return cls(directory, max_bytes=parsed.max_bytes)

    def __repr__(self) -> str:
        return f"ResultCache({str(self.directory)!r}, max_bytes={self.max_bytes})"

    def _private_root(self, *, create: bool) -> bool:
        """Make sure only this user can reach the cache directory; False when it is not ours to trust.

        Created `0700` when missing (and `create`); closed to others when it is ours and open; and
        refused, with a warning, when another user owns it.
        """
        try:
            if create:
                self.directory.mkdir(mode=_PRIVATE_DIR, parents=True, exist_ok=True)
            info = self.directory.stat()
        except FileNotFoundError:
            return False
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            logger.warning("the result cache %s belongs to another user; not using it", self.directory)
            return False
        if stat.S_IMODE(info.st_mode) & 0o077:
            try:
                os.chmod(self.directory, _PRIVATE_DIR)
            except OSError as exc:
                logger.warning("cannot make the result cache %s private (%s); not using it", self.directory, exc)
                return False
        return True

    def _entry(self, key: str) -> Path:
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"not a cache key: {key!r}")
        return self.directory / key[:2] / key

    # -- reading --------------------------------------------------------------------------------

    def get(self, key: str) -> Result | None:
        """The cached result for `key`, or None (a corrupt entry is removed and counts as a miss).

        The result has `cached=True`, the artifacts' exact bytes, and empty usage: serving it
        consumed nothing.
        """
        entry = self._entry(key)
        manifest_path = entry / _MANIFEST
        if not entry.exists() or not self._private_root(create=False):
            return None
        try:
            result = self._load(entry, key)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("result cache entry %s is corrupt (%s); removing it", key[:12], exc)
            self._discard(entry)
            return None
        try:
            os.utime(manifest_path)  # least recently *used*: a hit counts as a use
        except OSError:
            pass
        return result

    def _load(self, entry: Path, key: str) -> Result:
        from .artifacts import Audio, Video, artifact_from_bytes
        from .results import GenerationWarning, Result, Timings

        if entry.is_symlink() or entry.parent.is_symlink():
            raise ValueError("the entry is a link")
        manifest = json.loads(_read_private(entry / _MANIFEST))
        if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT or manifest.get("key") != key:
            raise ValueError("manifest of another format or key")
        if manifest.get("checksum") != _checksum(manifest):
            raise ValueError("manifest checksum mismatch")
        artifacts: list[Artifact] = []
        for item in manifest["artifacts"]:
            name = item["file"]
            if not isinstance(name, str) or not _FILE_NAME.fullmatch(name):
                raise ValueError(f"the manifest names a file outside its entry: {str(name)[:60]!r}")
            data = _read_private(entry / name)
            if len(data) != item["size"] or hashlib.sha256(data).hexdigest() != item["sha256"]:
                raise ValueError(f"{item['file']} does not match its recorded size and hash")
            extra: dict[str, Any] = {}
            if item.get("fps"):
                extra["fps"] = float(item["fps"])
            if item.get("sample_rate"):
                extra["sample_rate"] = int(item["sample_rate"])
            artifact = artifact_from_bytes(data, media_type=item["media_type"], metadata=item.get("metadata") or {})
            if isinstance(artifact, Video) and "fps" in extra:
                artifact._fps = extra["fps"]
            if isinstance(artifact, Audio) and "sample_rate" in extra:
                artifact._sample_rate = extra["sample_rate"]
            artifacts.append(artifact)
        stored = manifest["result"]
        return Result(
            artifacts=artifacts,
            provider=stored["provider"],
            model=stored["model"],
            seeds=stored["seeds"],
            timings=Timings(),
            warnings=[GenerationWarning.model_validate(w) for w in stored.get("warnings", [])],
            raw=stored.get("raw"),
            cached=True,
        )

    # -- writing --------------------------------------------------------------------------------

    def put(self, key: str, result: Result, *, replace: bool = False) -> bool:
        """Store `result` under `key` (blocking: it encodes artifacts and writes files).

        Artifacts that are only URLs are read first (fetched): call `aput` from async code.

        Args:
            key: From `cache_key`.
            result: The result to store.
            replace: Replace an existing entry (`cache="refresh"`); otherwise an entry already
                there is kept, since it holds the same output.

        Returns:
            True when this call's entry is the one now in place.
        """
        from ._media import suffix_for_media_type
        from .artifacts import Audio, Video

        entry = self._entry(key)
        if entry.exists() and not replace:
            return False
        if not self._private_root(create=True):
            return False
        tmp = self.directory / _TMP / f"{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        tmp.parent.mkdir(mode=_PRIVATE_DIR, exist_ok=True)
        tmp.mkdir(mode=_PRIVATE_DIR)
        try:
            items = []
            for index, artifact in enumerate(result.artifacts):
                data = artifact.read()
                media_type = artifact.media_type
                name = f"{index}{suffix_for_media_type(media_type) or '.bin'}"
                _write_private(tmp / name, data)
                item: dict[str, Any] = {
                    "file": name,
                    "media_type": media_type,
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "metadata": _json_safe(artifact.metadata),
                }
                if isinstance(artifact, Video) and artifact._fps:
                    item["fps"] = artifact._fps
                if isinstance(artifact, Audio) and artifact._sample_rate:
                    item["sample_rate"] = artifact._sample_rate
                items.append(item)
            raw = result.raw
            try:
                json.dumps(raw)
            except (TypeError, ValueError):
                raw = None
            manifest: dict[str, Any] = {
                "format": _FORMAT,
                "key": key,
                "created": time.time(),
                "artifacts": items,
                "result": {
                    "provider": result.provider,
                    "model": result.model,
                    "seeds": list(result.seeds),
                    # How this run was routed (fallbacks, retries) is no news to a later hit.
                    "warnings": [w.model_dump(mode="json") for w in result.warnings if w.feature not in _ROUTING_NOTES],
                    "usage": result.usage.model_dump(mode="json"),
                    "raw": raw,
                },
            }
            manifest["checksum"] = _checksum(manifest)
            # The manifest goes last: an entry without one is incomplete by construction.
            _write_private(tmp / _MANIFEST, json.dumps(manifest, sort_keys=True).encode())
            entry.parent.mkdir(mode=_PRIVATE_DIR, exist_ok=True)
            if replace and entry.exists():
                self._discard(entry)
            try:
                os.rename(tmp, entry)
            except OSError:
                # Another writer's rename won (the target exists and is not empty): keep theirs.
                return False
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self.prune()
        return True

    async def aput(self, key: str, result: Result, *, replace: bool = False) -> bool:
        """Async twin of `put`: URL artifacts are fetched without blocking, the writing runs in a thread."""
        import asyncio

        for artifact in result.artifacts:
            if not artifact.is_loaded and artifact.path is None:
                await artifact.aread()
        return await asyncio.to_thread(self.put, key, result, replace=replace)

    def _discard(self, entry: Path) -> None:
        # Rename first, delete after: a concurrent reader sees the entry whole or not at all.
        trash = self.directory / _TRASH / f"{entry.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        try:
            trash.parent.mkdir(mode=_PRIVATE_DIR, parents=True, exist_ok=True)
            os.rename(entry, trash)
        except OSError:
            return  # someone else removed or replaced it first
        shutil.rmtree(trash, ignore_errors=True)

    # -- size -----------------------------------------------------------------------------------

    def entries(self) -> list[tuple[str, int, float]]:
        """`(key, bytes, last used)` of each complete entry."""
        out: list[tuple[str, int, float]] = []
        if not self.directory.is_dir():
            return out
        for shard in self.directory.iterdir():
            if len(shard.name) != 2 or not shard.is_dir():
                continue
            for entry in shard.iterdir():
                try:
                    used = (entry / _MANIFEST).stat().st_mtime
                    size = sum(f.stat().st_size for f in entry.iterdir())
                except OSError:
                    continue  # being written or removed right now
                out.append((entry.name, size, used))
        return out

    def size(self) -> int:
        """Bytes held by complete entries."""
        return sum(size for _, size, _ in self.entries())

    def prune(self, max_bytes: int | None = None) -> int:
        """Evict least recently used entries until at most `max_bytes` remain.

        Returns:
            How many entries were evicted.
        """
        limit = self.max_bytes if max_bytes is None else max_bytes
        self._sweep_leftovers()
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        evicted = 0
        for key, size, _used in sorted(entries, key=lambda e: e[2]):
            if total <= limit:
                break
            self._discard(self._entry(key))
            total -= size
            evicted += 1
        return evicted

    def _sweep_leftovers(self, older_than_s: float = 3600.0) -> None:
        # A writer that died mid-way leaves its temporary directory; an hour on, nobody owns it.
        now = time.time()
        for name in (_TMP, _TRASH):
            folder = self.directory / name
            if not folder.is_dir():
                continue
            for leftover in folder.iterdir():
                try:
                    if now - leftover.stat().st_mtime > older_than_s:
                        shutil.rmtree(leftover, ignore_errors=True)
                except OSError:
                    continue

    def delete(self, key: str) -> None:
        """Remove one entry (nothing happens when it is absent)."""
        entry = self._entry(key)
        if entry.exists():
            self._discard(entry)

    def clear(self) -> None:
        """Remove every entry."""
        for key, _, _ in self.entries():
            self._discard(self._entry(key))


_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def _read_private(path: Path) -> bytes:
    """Read a file of an entry, refusing a symlink in its place (`O_NOFOLLOW`)."""
    fd = os.open(path, _READ_FLAGS)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise ValueError(f"{path.name} is not a regular file")
        return fh.read()


def _write_private(path: Path, data: bytes) -> None:
    """Create a new `0600` file in a private temporary entry (never an existing one, never a link)."""
    fd = os.open(path, EXCLUSIVE_CREATE, _PRIVATE_FILE)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
