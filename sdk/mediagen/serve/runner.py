"""Running the app on uvicorn: the bind policy, the socket, graceful shutdown.

`serve()` refuses to listen on anything but loopback when no token is configured, binds the socket
itself (so `--port 0` works and the real port is printed before the first request), turns off
uvicorn's own access log (it would log output URLs, which are capabilities, in full) and lets
uvicorn's signal handling drive the graceful shutdown: on SIGTERM or Ctrl-C it stops accepting,
waits for open requests, then the app lets running predictions finish for `shutdown_grace_s`.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import Any

from .._config import Config
from .app import create_app
from .settings import ServeSettings, is_loopback_host

__all__ = ["BindRefused", "check_bind", "serve"]


class BindRefused(Exception):
    """The server would be reachable from other machines without a token."""


def check_bind(host: str, settings: ServeSettings) -> None:
    """Refuse a non-loopback address when no token is configured.

    Raises:
        BindRefused: `host` is reachable from other machines and there is no token.
    """
    if not settings.tokens and not is_loopback_host(host):
        raise BindRefused(
            f"refusing to listen on {host} without a token: anyone who can reach it could run models. "
            "Set MEDIAGEN_SERVE_TOKEN (or --token-file), or listen on 127.0.0.1"
        )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(
    settings: ServeSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    config: Config | str | os.PathLike[str] | None = None,
    log_level: str = "info",
    metrics_public: bool = False,
) -> None:
    """Serve until stopped (SIGINT / SIGTERM).

    Raises:
        BindRefused: A non-loopback `host` without tokens.
    """
    import uvicorn

    check_bind(host, settings)
    app = create_app(settings, config=config, metrics_public=metrics_public)
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    _setup_logging(log_level)
    # One line a supervisor (or a test) can read to learn the port when --port 0 was given.
    shown = f"[{host}]" if ":" in host else host
    print(f"mediagen serve: listening on http://{shown}:{bound}", file=sys.stderr, flush=True)
    server_config: Any = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 5,
        proxy_headers=False,
        server_header=False,
    )
    uvicorn.Server(server_config).run(sockets=[sock])


def _setup_logging(level: str) -> None:
    root = logging.getLogger("mediagen")
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        root.addHandler(handler)
    root.setLevel(level.upper())
