"""The OpenAI loopback server and a backend pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

pytest.importorskip("openai")

from mediagen_openai import OpenAIBackend
from mediagen_testkit.openai_server import OpenAIServer


@pytest.fixture(autouse=True)
def _no_openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own key or endpoint must never reach these tests (or be reached by them).
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as srv:
        yield srv


@pytest.fixture
async def backend(server: OpenAIServer) -> AsyncIterator[OpenAIBackend]:
    b = OpenAIBackend(api_key=server.api_key, base_url=server.url, max_retries=12, retry_base_delay=0.01)
    yield b
    await b.aclose()
