"""Fixtures for the fal backend: a loopback fal queue, and a backend pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from mediagen_fal import FalBackend
from mediagen_testkit.fal_server import FalServer


@pytest.fixture(autouse=True)
def _no_fal_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test picks up a developer's real key or queue host."""
    for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "FAL_QUEUE_RUN_HOST"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[FalServer]:
    with FalServer(time_scale=0.01) as srv:
        yield srv


@pytest.fixture
async def backend(server: FalServer) -> AsyncIterator[FalBackend]:
    b = FalBackend(
        key=server.key, base_url=server.url, storage_url=server.url, poll_interval=0.01, retry_base_delay=0.01
    )
    yield b
    await b.aclose()
