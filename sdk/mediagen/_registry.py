"""Which class serves which provider: entry points, read on first lookup, imported lazily.

Built-in providers and plugins are declared alike, in the `mediagen.backends` entry-point group::

    [project.entry-points."mediagen.backends"]
    diffusers = "mediagen_diffusers:DiffusersBackend"

Only the provider a model string names is ever imported.
"""

from __future__ import annotations

import difflib
import importlib
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from .errors import ModelNotFoundError

if TYPE_CHECKING:
    from .backend import Backend

__all__ = [
    "ENTRY_POINT_GROUP",
    "registry",
    "register_backend",
    "get_backend_class",
    "parse_model",
    "available_providers",
]

ENTRY_POINT_GROUP = "mediagen.backends"

MAX_MODEL_STRING = 4096
"""Longest model string accepted (a local path may be up to PATH_MAX long, 4096 on Linux)."""

# Built-ins are also declared as entry points; this table keeps them working from a source tree
# that was never installed (no entry-point metadata).
_BUILTIN: dict[str, str] = {
    "diffusers": "mediagen_diffusers:DiffusersBackend",
    "transformers": "mediagen_transformers:TransformersBackend",
    "replicate": "mediagen_replicate:ReplicateBackend",
    "test": "mediagen.testing:FakeBackend",
}
_EXTRAS = {"diffusers": "local", "transformers": "local", "replicate": "replicate"}

_lock = threading.Lock()
_paths: dict[str, str | type[Backend]] = {}
_loaded: dict[str, type[Backend]] = {}
_read = False

registry: Mapping[str, str | type[Backend]] = MappingProxyType(_paths)
"""Provider name → `"module:Class"` or a class, read-only (use `register_backend` to change it)."""


def _read_entry_points() -> None:
    global _read
    with _lock:
        if _read:
            return
        from importlib.metadata import entry_points

        found = dict(_BUILTIN)
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            found.setdefault(ep.name, ep.value)
            if ep.name not in _BUILTIN:
                found[ep.name] = ep.value
        for name, value in found.items():
            _paths.setdefault(name, value)
        _read = True


def register_backend(name: str, cls_or_path: str | type[Backend], *, clobber: bool = False) -> None:
    """Register a backend class (or a `"module:Class"` path) under a provider name.

    Args:
        name: The provider name used in model strings.
        cls_or_path: The class, or where to import it from.
        clobber: Replace an existing registration instead of refusing.

    Raises:
        ValueError: `name` is taken and `clobber` is False, or it contains a colon.
    """
    if not name or ":" in name:
        raise ValueError(f"provider names cannot be empty or contain ':' (got {name!r})")
    _read_entry_points()
    with _lock:
        if name in _paths and not clobber and _paths[name] is not cls_or_path:
            raise ValueError(f"provider {name!r} is already registered; pass clobber=True to replace it")
        _paths[name] = cls_or_path
        _loaded.pop(name, None)


def available_providers() -> list[str]:
    """Every registered provider name, sorted."""
    _read_entry_points()
    return sorted(_paths)


def get_backend_class(name: str) -> type[Backend]:
    """The backend class of a provider, imported on first use.

    Raises:
        ModelNotFoundError: No provider has that name (the message suggests a close one).
        ImportError: The provider's extra is not installed (the message names it).
        RuntimeError: The class was written for another contract version.
    """
    if name in _loaded:
        return _loaded[name]
    _read_entry_points()
    if name not in _paths:
        close = difflib.get_close_matches(name, list(_paths), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ModelNotFoundError(
            f"unknown provider {name!r}.{hint} Known providers: {', '.join(sorted(_paths))}. "
            "Model strings look like 'provider:model', e.g. 'diffusers:stabilityai/sdxl-turbo'."
        )
    target = _paths[name]
    if isinstance(target, str):
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            if name in _EXTRAS:
                hint = f"pip install 'mediagen[{_EXTRAS[name]}]' to use '{name}:' models"
            else:
                hint = f"the plugin providing '{name}:' ({module_name}) failed to import; is its package installed?"
            raise ImportError(f"{hint} ({exc})") from exc
        cls: type[Backend] = getattr(module, attr)
    else:
        cls = target
    from .backend import CONTRACT_VERSION, Backend

    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise RuntimeError(f"{target!r} registered for {name!r} is not a mediagen.Backend subclass")
    version = getattr(cls, "contract_version", None)
    if version != CONTRACT_VERSION:
        raise RuntimeError(
            f"backend {cls.__module__}.{cls.__qualname__} for {name!r} implements contract version "
            f"{version}, but this mediagen speaks version {CONTRACT_VERSION}; upgrade the plugin"
        )
    _loaded[name] = cls
    return cls


def parse_model(model: str) -> tuple[str, str]:
    """Split `"provider:model"` at the first colon.

    Examples:
        >>> parse_model("replicate:owner/name:1234abcd")
        ('replicate', 'owner/name:1234abcd')

    Raises:
        ModelNotFoundError: The string has no provider part, is longer than `MAX_MODEL_STRING`
            characters, or holds control characters.
    """
    if not isinstance(model, str):
        raise ModelNotFoundError(f"a model string must be a str, got {type(model).__name__}")
    if len(model) > MAX_MODEL_STRING:
        raise ModelNotFoundError(
            f"model string of {len(model)} characters is too long (at most {MAX_MODEL_STRING}): {model[:60]!r}..."
        )
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in model):
        raise ModelNotFoundError(f"model string {model[:80]!r} holds control characters")
    provider, sep, rest = model.partition(":")
    if not sep or not provider or not rest:
        raise ModelNotFoundError(
            f"model {model!r} is not of the form 'provider:model' (e.g. 'diffusers:/models/sdxl' or "
            "'replicate:black-forest-labs/flux-schnell'), nor a configured alias"
        )
    return provider.strip(), rest.strip()
