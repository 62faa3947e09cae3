"""A loopback HTTP server for download tests: files, redirects, and servers that misbehave.

Each route answers in one of these ways:

- `serve(path, body, content_type)`: the body, with its length;
- `redirect(path, location, status=302)`: a redirect to any URL (another route, another host);
- `drip(path, body, every_s)`: the length up front, then one byte every `every_s` seconds (a
  slow-drip server that never trips a per-read timeout); `dripped[path]` counts the bytes sent.

Everything it is asked is kept in `hits`. It binds 127.0.0.1 only.

Examples:
    >>> with MediaServer() as srv:  # doctest: +SKIP
    ...     srv.serve("/fox.png", png_bytes, "image/png")
    ...     srv.redirect("/moved.png", "/fox.png")
    ...     mg.Image(url=srv.url + "/moved.png").read()
"""

from __future__ import annotations

import http.server
import threading
import time
from typing import Any

__all__ = ["MediaServer"]


class MediaServer:
    """A threaded loopback HTTP server with scripted routes (see the module docs)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[str, Any]] = {}
        self.hits: list[str] = []
        self.dripped: dict[str, int] = {}
        self.closed_early: dict[str, bool] = {}
        self._stop = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server.hits.append(self.path)
                kind, spec = server.routes.get(self.path, ("serve", (404, b"not found", "text/plain")))
                if kind == "redirect":
                    status, location = spec
                    self.send_response(status)
                    self.send_header("Location", location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if kind == "drip":
                    body, every_s = spec
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    server.dripped[self.path] = 0
                    try:
                        for i in range(len(body)):
                            if server._stop.is_set():
                                return
                            self.wfile.write(body[i : i + 1])
                            self.wfile.flush()
                            server.dripped[self.path] += 1
                            time.sleep(every_s)
                    except OSError:  # the client hung up: what a deadline should make it do
                        server.closed_early[self.path] = True
                    return
                status, body, content_type = spec
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def serve(self, path: str, body: bytes, content_type: str = "application/octet-stream", status: int = 200) -> str:
        """Answer `path` with `body`; returns its URL."""
        self.routes[path] = ("serve", (status, body, content_type))
        return self.url + path

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        """Answer `path` with a redirect to `location`; returns its URL."""
        self.routes[path] = ("redirect", (status, location))
        return self.url + path

    def drip(self, path: str, body: bytes, every_s: float) -> str:
        """Answer `path` with `body`, one byte every `every_s` seconds; returns its URL."""
        self.routes[path] = ("drip", (body, every_s))
        return self.url + path

    def close(self) -> None:
        """Stop serving (a drip in progress stops too)."""
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> MediaServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
