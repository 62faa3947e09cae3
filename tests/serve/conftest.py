"""Fixtures of the serve tests (the server class lives in serve_helpers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from mediagen_testkit.serve_server import OTHER_TOKEN, TEST_TOKEN, ServeServer  # noqa: E402

from mediagen._config import Config  # noqa: E402
from mediagen.serve import ServedModel, ServeSettings, TokenSpec  # noqa: E402


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServeServer]]:
    """`start_server(models=[...], **settings)` → a started server; all are stopped after the test."""
    started: list[ServeServer] = []

    def start(*, models: list[ServedModel], config: Config | None = None, **values: Any) -> ServeServer:
        values.setdefault("db", tmp_path / "serve" / "predictions.db")
        values.setdefault("tokens", [TokenSpec.from_token("tester", TEST_TOKEN), TokenSpec.from_token("other", OTHER_TOKEN)])
        server = ServeServer(ServeSettings(models=models, **values), config=config).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
