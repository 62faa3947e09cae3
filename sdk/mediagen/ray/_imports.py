"""Import Ray with an error that names the extra."""

from __future__ import annotations

from types import ModuleType

__all__ = ["import_ray", "init_ray"]


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


def init_ray(address: str | None, *, num_cpus: int, num_gpus: int | None) -> bool:
    """Join the cluster at `address`, or start a private local instance when it is None.

    A private instance (`address="local"`) never joins a cluster an earlier `ray start` left
    running; it is told to use loopback, and the resources given. Returns whether it was started
    here (so the caller shuts it down).
    """
    ray = import_ray()
    if address is not None:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
        return False
    ray.init(
        address="local",
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
    )
    return True
