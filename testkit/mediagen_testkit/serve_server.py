"""`mediagen serve` on loopback for tests and benchmarks: real uvicorn, an ephemeral port, a thread.

Examples:
    >>> server = ServeServer(ServeSettings(models=[fake_model("fox", "image")])).start()  # doctest: +SKIP
    >>> replicate.Client(api_token=TEST_TOKEN, base_url=server.url).run("acme/fox", input={"prompt": "x"})  # doctest: +SKIP
    >>> server.stop()  # doctest: +SKIP
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn

from mediagen._config import Config
from mediagen.client import Client
from mediagen.serve import ServedModel, ServeSettings, create_app

__all__ = ["TEST_TOKEN", "OTHER_TOKEN", "ServeServer", "fake_model"]

TEST_TOKEN = "serve-test-token-0123456789abcdef"
"""A token for tests (never a real one)."""
OTHER_TOKEN = "serve-other-token-0123456789abcdef"
"""A second tenant's token."""


class ServeServer:
    """A `create_app` app on real uvicorn, on a loopback ephemeral port."""

    def __init__(
        self,
        settings: ServeSettings,
        config: Config | None = None,
        wrap: Callable[[Any], Any] | None = None,
        client: Client | None = None,
    ) -> None:
        self.settings = settings
        # A given client (one with test backends, say) is the caller's to close.
        self.app = create_app(settings, config=config or Config(), client=client)
        # What uvicorn runs: the app, or the app inside middleware (e.g. `mediagen_testkit.faults`).
        self.asgi = wrap(self.app) if wrap is not None else self.app
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._sock = sock
        self.server = uvicorn.Server(
            uvicorn.Config(self.asgi, lifespan="on", access_log=False, log_level="warning", timeout_graceful_shutdown=5)
        )
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServeServer:
        self._thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the server failed to start")
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start within 120 s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=60)
        self._sock.close()

    @property
    def state(self) -> Any:
        return self.app.state.mediagen


def fake_model(name: str, modality: str, **kw: Any) -> ServedModel:
    """A served `test:fake` model."""
    return ServedModel(owner="acme", name=name, model="test:fake", modality=modality, **kw)
