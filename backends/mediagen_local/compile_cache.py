"""torch.compile's work kept across processes, so that a restarted server does not compile again.

A compiled model costs tens of seconds to minutes of compilation on every cold start (44-157 s for
an SD1.5 UNet on an H100). torch keeps what it compiled in two places, and this module keeps both
under mediagen's cache directory (`<cache>/compile/`, `0700`, refused when another user owns it):

- **torch's on-disk caches** (inductor's FX graph cache, AOTAutograd's cache, the compiled kernels:
  C++ `.so` files on a CPU, Triton kernels on CUDA). `TORCHINDUCTOR_CACHE_DIR` is pointed at
  `<cache>/compile/inductor` unless the user set it, instead of torch's default under `/tmp`, which
  a reboot wipes and which any local user could have created first. With it, a new process on the
  same machine (or one sharing the cache volume) finds every graph and kernel, and only re-traces
  the model (seconds).
- **torch's portable "mega-cache"** (`torch.compiler.save_cache_artifacts()`): one file per model,
  dtype, device kind, compile settings and torch/diffusers versions, written after a batch that
  compiled something new and loaded (`torch.compiler.load_cache_artifacts`) when the model loads,
  before its first compiled call. It can be copied to another machine of the same kind (baked into
  an image): on CUDA it carries the Triton kernels, so the new machine skips compilation too; on a
  CPU it carries the graphs but not the C++ kernels, which are rebuilt (measured in
  docs/performance.md).

The portable file is deserialised with pickle by torch, so it is only read when it is ours: a regular
file (no symlink), owned by this user, inside our private directory, under a size cap, starting with
our magic and format version, naming the very key we expect, and matching its SHA-256. Anything else
is ignored with a warning; a load or save that fails never fails the model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mediagen._config import cache_dir
from mediagen._files import write_atomic

__all__ = ["ARTIFACTS_MAGIC", "MAX_ARTIFACTS_BYTES", "CompileCache", "compile_cache_root", "use_inductor_cache_dir"]

logger = logging.getLogger("mediagen")

ARTIFACTS_MAGIC = b"MGCOMPILE"
"""First bytes of a portable artifacts file written here."""
_FORMAT = 1
# magic, format version, SHA-256 of the key, SHA-256 of the payload, payload length.
_HEADER = struct.Struct(f">{len(ARTIFACTS_MAGIC)}sH32s32sQ")
MAX_ARTIFACTS_BYTES = 2 * 1024**3
"""Largest artifacts file that is read (an SD1.5 UNet's is a few MB on a CPU, tens of MB on CUDA)."""

_PRIVATE_DIR = 0o700
_PRIVATE_FILE = 0o600
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
# torch's counters of graphs compiled afresh (not found in a cache): a save is due when one grows.
_MISS_COUNTERS = (("inductor", "fxgraph_cache_miss"), ("aot_autograd", "autograd_cache_miss"))
# ... and of graphs found in torch's own on-disk cache (a file lacking them is worth writing too).
_HIT_COUNTERS = (("inductor", "fxgraph_cache_hit"), ("aot_autograd", "autograd_cache_hit"))


def compile_cache_root() -> Path:
    """`<mediagen cache>/compile`: where compiled artifacts are kept."""
    return cache_dir() / "compile"


def _private_dir(directory: Path) -> bool:
    """Create `directory` (0700) or check an existing one: ours, a real directory, closed to others.

    Returns:
        Whether it may be used; a warning says why not.
    """
    try:
        directory.mkdir(mode=_PRIVATE_DIR, parents=True, exist_ok=True)
        info = directory.lstat()
    except OSError as exc:
        logger.warning("compile cache %s not usable: %s", directory, exc)
        return False
    if not stat.S_ISDIR(info.st_mode):
        logger.warning("compile cache %s is not a directory; not using it", directory)
        return False
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        logger.warning("compile cache %s belongs to another user; not using it", directory)
        return False
    if stat.S_IMODE(info.st_mode) & 0o077:
        try:
            os.chmod(directory, _PRIVATE_DIR)
        except OSError as exc:
            logger.warning("cannot make compile cache %s private (%s); not using it", directory, exc)
            return False
    return True


def use_inductor_cache_dir(root: Path | None = None) -> str | None:
    """Point torch's on-disk compile caches at `<root>/inductor` unless the user chose a directory.

    Call before the first compilation of the process: torch reads `TORCHINDUCTOR_CACHE_DIR` each
    time it needs the directory, and sets it to its own default on first use (some imports already
    do), so torch's default in the variable counts as unset.

    Returns:
        The directory torch will use, or None when it is left alone (set already, or ours unusable).
    """
    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if chosen and not _is_torch_default(chosen):
        return None
    root = compile_cache_root() if root is None else root
    directory = root / "inductor"
    if not (_private_dir(root) and _private_dir(directory)):
        return None
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory)
    return str(directory)


def _is_torch_default(directory: str) -> bool:
    """Whether `directory` is torch's default, which torch writes into the environment on first use."""
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # no torch: nothing to point anywhere
        return False
    return os.path.abspath(directory) == os.path.abspath(default_cache_dir())


def _count(names: tuple[tuple[str, str], ...]) -> int:
    from torch._dynamo.utils import counters

    return sum(counters[group][name] for group, name in names)


def _load_artifacts(payload: bytes) -> int:
    """`torch.compiler.load_cache_artifacts`, also recording what it loaded for the next save.

    torch's next `save_cache_artifacts()` holds only what this process compiled or hit; without
    re-recording, a process that compiles one new shape would write a file without the others.

    Returns:
        How many artifacts were loaded.
    """
    from torch.compiler._cache import CacheArtifactManager

    artifacts = CacheArtifactManager.deserialize(payload)
    if artifacts is None:
        raise ValueError("torch could not read the artifacts")
    CacheArtifactManager.populate_caches(artifacts)
    count = 0
    for kind, items in artifacts.items():
        for artifact in items:
            count += 1
            # What `record_artifact` does, minus its encoding step (these are encoded already).
            if artifact not in CacheArtifactManager._seen_artifacts:
                CacheArtifactManager._new_cache_artifacts[kind].append(artifact)
                CacheArtifactManager._seen_artifacts.add(artifact)
    return count


class CompileCache:
    """The portable compiled artifacts of one compiled model configuration, kept in one file.

    Args:
        key: What the compiled graphs depend on (model and weights identity, dtype, device kind,
            compile settings, versions); hashed into the file name and checked inside the file.
        root: The compile cache directory; `compile_cache_root()` by default.
    """

    def __init__(self, key: Mapping[str, Any], root: Path | None = None) -> None:
        self.key = dict(key)
        canonical = repr(sorted((str(k), repr(v)) for k, v in self.key.items())).encode()
        self._key_digest = hashlib.sha256(canonical).digest()
        self.root = (compile_cache_root() if root is None else root) / "artifacts"
        self.path = self.root / f"{self._key_digest.hex()[:32]}.bin"
        self._loaded = False
        self._seen = 0
        """The counters (misses, or misses + hits while no file was loaded) at the last load or save."""

    def load(self) -> bool:
        """Hand the artifacts file to torch, if there is one and it is ours (see the module docs).

        Returns:
            Whether artifacts were loaded. Never raises: a cache is an optimisation.
        """
        try:
            payload = self._read()
            if payload is None:
                return False
            count = _load_artifacts(payload)
        except Exception as exc:  # a foreign, corrupt or stale file must never stop the model
            logger.warning("compile cache %s ignored: %s", self.path, exc)
            return False
        # What this process compiles from now on is what the file lacks.
        self._loaded, self._seen = True, _count(_MISS_COUNTERS)
        logger.info("compile cache: %d artifact(s) loaded from %s", count, self.path)
        return True

    def _read(self) -> bytes | None:
        """The payload of our file; None when there is none; raises ValueError when it is not ours."""
        if not _private_dir(self.root.parent) or not _private_dir(self.root):
            return None
        try:
            fd = os.open(self.path, _READ_FLAGS)
        except FileNotFoundError:
            return None
        except OSError as exc:  # ELOOP: a symlink in its place
            raise ValueError(f"cannot open it safely ({exc})") from exc
        with os.fdopen(fd, "rb") as fh:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ValueError("not a regular file")
            if hasattr(os, "getuid") and info.st_uid != os.getuid():
                raise ValueError("owned by another user")
            if info.st_size > MAX_ARTIFACTS_BYTES + _HEADER.size:
                raise ValueError(f"{info.st_size} bytes is over the {MAX_ARTIFACTS_BYTES} byte cap")
            header = fh.read(_HEADER.size)
            if len(header) != _HEADER.size:
                raise ValueError("truncated header")
            magic, version, key_digest, payload_digest, length = _HEADER.unpack(header)
            if magic != ARTIFACTS_MAGIC:
                raise ValueError("not a mediagen compile cache file")
            if version != _FORMAT:
                raise ValueError(f"format {version}, expected {_FORMAT}")
            if key_digest != self._key_digest:
                raise ValueError("written for another model or configuration")
            if length > MAX_ARTIFACTS_BYTES:
                raise ValueError("payload over the size cap")
            payload = fh.read(length + 1)
        if len(payload) != length:
            raise ValueError("payload length does not match its header")
        if hashlib.sha256(payload).digest() != payload_digest:
            raise ValueError("checksum mismatch")
        return payload

    def save_if_new(self) -> bool:
        """Write torch's artifacts if this process compiled a graph the file lacks.

        Call after a compiled batch. Cheap when nothing is new (it reads torch's counters).

        Returns:
            Whether the file was (re)written. Never raises.
        """
        try:
            # With our file loaded, only a graph compiled afresh is new to it; without one, a graph
            # torch found in its own on-disk cache is worth a file too (to copy to another machine).
            seen = _count(_MISS_COUNTERS) if self._loaded else _count(_MISS_COUNTERS) + _count(_HIT_COUNTERS)
            if seen <= self._seen:
                return False
            import torch

            saved = torch.compiler.save_cache_artifacts()
            self._seen = seen
            if saved is None or not saved[0]:
                return False
            self._write(saved[0])
        except Exception as exc:
            logger.warning("compile cache %s not saved: %s", self.path, exc)
            return False
        logger.info("compile cache: saved %d bytes to %s", len(saved[0]), self.path)
        return True

    def _write(self, payload: bytes) -> None:
        if len(payload) > MAX_ARTIFACTS_BYTES:
            raise ValueError(f"{len(payload)} bytes is over the {MAX_ARTIFACTS_BYTES} byte cap")
        if not _private_dir(self.root.parent) or not _private_dir(self.root):
            raise ValueError("the directory is not ours")
        header = _HEADER.pack(
            ARTIFACTS_MAGIC, _FORMAT, self._key_digest, hashlib.sha256(payload).digest(), len(payload)
        )
        chunks: Iterable[bytes] = (header, payload)
        write_atomic(self.path, chunks, overwrite=True, mode=_PRIVATE_FILE)
