"""The Gemini API loopback server and a backend pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

pytest.importorskip("google.genai")

from mediagen_google import GoogleBackend
from mediagen_testkit.google_server import GoogleServer


@pytest.fixture(autouse=True)
def _no_google_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own key or endpoint must never reach these tests (or be reached by them).
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL", "GOOGLE_GENAI_USE_VERTEXAI"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[GoogleServer]:
    with GoogleServer() as srv:
        yield srv


@pytest.fixture
async def backend(server: GoogleServer) -> AsyncIterator[GoogleBackend]:
    b = GoogleBackend(
        api_key=server.api_key,
        base_url=server.url,
        poll_interval=0.02,
        max_poll_interval=0.05,
        max_retries=12,
        retry_base_delay=0.01,
    )
    yield b
    await b.aclose()
