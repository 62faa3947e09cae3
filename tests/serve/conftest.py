"""Fixtures of the serve tests (the server class lives in serve_helpers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from mediagen._config import Config
from mediagen.serve import ServedModel, ServeSettings, TokenSpec
from mediagen_testkit.serve_server import OTHER_TOKEN, TEST_TOKEN, ServeServer


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServeServer]]:
    """`start_server(models=[...], **settings)` → a started server; all are stopped after the test."""
    started: list[ServeServer] = []

    def start(
        *, models: list[ServedModel], config: Config | None = None, wrap: Any = None, **values: Any
    ) -> ServeServer:
        values.setdefault("db", tmp_path / "serve" / "predictions.db")
        values.setdefault(
            "tokens", [TokenSpec.from_token("tester", TEST_TOKEN), TokenSpec.from_token("other", OTHER_TOKEN)]
        )
        server = ServeServer(ServeSettings(models=models, **values), config=config, wrap=wrap).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
