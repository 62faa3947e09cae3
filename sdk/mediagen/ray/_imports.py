"""Import Ray with an error that names the extra."""

from __future__ import annotations

from types import ModuleType

__all__ = ["import_ray"]


def import_ray() -> ModuleType:
    """Return the `ray` module, or explain how to install it.

    Raises:
        ImportError: Ray is not installed; the message names the extra.
    """
    try:
        import ray
    except ImportError as exc:
        raise ImportError("the Ray engine needs Ray: pip install 'mediagen[ray]'") from exc
    module: ModuleType = ray  # typed the same whether or not Ray's own hints are installed
    return module
