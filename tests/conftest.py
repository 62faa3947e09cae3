"""Shared fixtures: the suite never reaches the network, and tiny models are built once per run."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import mediagen as mg

# Hosted backends may only talk to loopback servers during tests.
mg.allow_remote_requests(False)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.pop("REPLICATE_API_TOKEN", None)
os.environ.pop("FAL_KEY", None)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked `torchvision` skip where it is not installed, or fail where it must be (the second environment)."""
    import importlib.util

    if item.get_closest_marker("torchvision") is None or importlib.util.find_spec("torchvision") is not None:
        return
    if os.environ.get("MEDIAGEN_REQUIRE_TORCHVISION") == "1":
        pytest.fail("torchvision is not installed, yet MEDIAGEN_REQUIRE_TORCHVISION=1 (make pytest-torchvision)")
    pytest.skip("needs torchvision; `make pytest-torchvision` runs it in an environment that has it")


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory per test run holding the tiny random-weight models (built on demand)."""
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def tiny_model(tiny_models_dir: Path) -> Callable[[str], Path]:
    """`tiny_model("sd")` → the directory of that tiny model, built the first time it is asked for."""
    from mediagen_testkit.tiny import ensure_tiny_model

    def get(name: str) -> Path:
        return ensure_tiny_model(name, cache_dir=tiny_models_dir)

    return get


@pytest.fixture(autouse=True)
def _restore_registry() -> Iterator[None]:
    """Backends a test registers are gone after it (the registry is process-wide)."""
    import importlib

    reg = importlib.import_module("mediagen._registry")
    reg.available_providers()
    paths, loaded = dict(reg._paths), dict(reg._loaded)
    yield
    reg._paths.clear()
    reg._paths.update(paths)
    reg._loaded.clear()
    reg._loaded.update(loaded)


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's own mediagen.toml or writes to their cache."""
    config = tmp_path / "mediagen.toml"
    config.touch()
    monkeypatch.setenv("MEDIAGEN_CONFIG", str(config))
    monkeypatch.setenv("MEDIAGEN_CACHE_DIR", str(tmp_path / "mediagen-cache"))
