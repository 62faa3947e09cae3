"""The plumbing the loopback provider servers share: a threaded HTTP server, faults, counters.

A provider's fake (`openai_server.OpenAIServer`, `google_server.GoogleServer`) subclasses
:class:`LoopbackServer` and implements :meth:`LoopbackServer.route`, which turns one parsed request into a
:class:`Reply`. This module does the rest: it listens on ``127.0.0.1`` only, parses bodies (JSON and
multipart), injects the faults a :class:`Faults` plan asks for, and counts everything in
:class:`Stats` so that tests can assert what the server saw (how many billable jobs it ran, how many
polls, which routes).

Faults are injected on the requests a subclass marks as *faultable* (by default every request but
downloads), numbered in arrival order across all clients: "429 every 3rd, 500 every 5th" means the 3rd,
6th, 9th ... faultable request is answered 429 and the 5th, 10th ... (when not already a 429) 500, both
before any work is done, as the providers document for those statuses. ``drop_after_work_every`` is
the nasty one: the server does the (billable) work, then closes the connection without an answer.

Only the standard library is imported.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any, Protocol

__all__ = [
    "DROP",
    "Faults",
    "HandlesRequests",
    "LoopbackHTTPServer",
    "LoopbackServer",
    "Reply",
    "Request",
    "RequestHandler",
    "Stats",
    "parse_multipart",
]


@dataclass
class Faults:
    """Which faultable requests fail, and how (every count is over faultable requests, 1-based)."""

    rate_limit_every: int | None = None
    """Answer every k-th faultable request 429, before doing anything."""
    retry_after_s: float | None = 0.0
    """`Retry-After` of those 429s (None: no header)."""
    error_every: int | None = None
    """Answer every k-th faultable request with `error_status`, before doing anything."""
    error_status: int = 500
    """The status of `error_every`."""
    drop_every: int | None = None
    """Close the connection of every k-th faultable request without an answer, before any work."""
    drop_after_work_every: int | None = None
    """Do the work of every k-th faultable request (a billable job runs), then close without an answer."""
    latency_s: float = 0.0
    """Sleep this long before answering any request."""


class Stats:
    """Thread-safe counters of what the server saw and did.

    `counts` holds named counters (`requests`, `billed`, `faults`, `dropped`, `polls` ...) and `routes`
    counts requests per route name. `bodies` keeps every parsed body by route, for assertions.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.routes: Counter[str] = Counter()
        self.bodies: list[tuple[str, Any]] = []
        self.in_flight = 0
        self.peak_in_flight = 0

    def incr(self, name: str, n: int = 1) -> int:
        """Add `n` to a counter and return its new value."""
        with self._lock:
            self.counts[name] += n
            return self.counts[name]

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self.counts[name]

    def route(self, name: str, body: Any) -> None:
        """Count one request to a route and keep its body."""
        with self._lock:
            self.routes[name] += 1
            self.bodies.append((name, body))

    def bodies_of(self, route: str) -> list[Any]:
        """The bodies received on one route, in arrival order."""
        with self._lock:
            return [body for name, body in self.bodies if name == route]

    def enter(self) -> None:
        """A request started."""
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def leave(self) -> None:
        """A request ended."""
        with self._lock:
            self.in_flight -= 1

    def reset(self) -> None:
        """Zero every counter."""
        with self._lock:
            self.counts.clear()
            self.routes.clear()
            self.bodies.clear()
            self.peak_in_flight = self.in_flight

    def snapshot(self) -> dict[str, Any]:
        """A plain copy of the counters."""
        with self._lock:
            return {"counts": dict(self.counts), "routes": dict(self.routes), "peak_in_flight": self.peak_in_flight}

    def __repr__(self) -> str:
        return f"Stats({self.snapshot()!r})"


@dataclass
class Request:
    """One parsed request."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        """A header, by case-insensitive name."""
        return self.headers.get(name.lower())

    def json(self) -> Any:
        """The body as JSON (ValueError when it is not)."""
        return json.loads(self.body or b"null")

    def arg(self, name: str) -> str | None:
        """A query parameter."""
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Reply:
    """What the server answers."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, obj: Any, headers: dict[str, str] | None = None) -> Reply:
        """A JSON answer."""
        return cls(status, json.dumps(obj).encode(), "application/json", dict(headers or {}))


DROP = Reply(0)
"""Close the connection without an answer."""


def parse_multipart(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """Split a `multipart/form-data` body into `(headers, data)` parts (header names lower-cased).

    Raises:
        ValueError: The content type names no boundary.
    """
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise ValueError("multipart body without a boundary")
    delimiter = b"--" + match.group(1).encode()
    parts: list[tuple[dict[str, str], bytes]] = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.removeprefix(b"\r\n")
        head, _, data = chunk.partition(b"\r\n\r\n")
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        parts.append((headers, data.removesuffix(b"\r\n")))
    return parts


def form_name(headers: dict[str, str]) -> tuple[str | None, str | None]:
    """`(name, filename)` of a multipart part, from its Content-Disposition."""
    disposition = headers.get("content-disposition", "")
    name = re.search(r'(?:^|;)\s*name="([^"]*)"', disposition)
    filename = re.search(r'(?:^|;)\s*filename="([^"]*)"', disposition)
    return (name.group(1) if name else None), (filename.group(1) if filename else None)


class HandlesRequests(Protocol):
    """What a `LoopbackHTTPServer` serves: an object that answers each request on its handler."""

    def _handle(self, handler: RequestHandler) -> None: ...


class LoopbackHTTPServer(ThreadingHTTPServer):
    """The threaded HTTP(S) server under every fake in the test kit.

    Args:
        address: `(host, port)`; port 0 picks a free one.
        app: Answers each request (`app._handle(handler)`, in the connection's thread).
        tls: Serve HTTPS with this context (set up per connection, see `finish_request`).
        version: The `Server` header's product token.
    """

    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        app: HandlesRequests,
        tls: ssl.SSLContext | None = None,
        *,
        version: str = "mediagen-fake/1.0",
    ) -> None:
        self.app = app
        self.tls = tls
        self.version = version
        super().__init__(address, RequestHandler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # TLS is set up here, in the connection's own thread: a client that never completes its
        # handshake holds up only itself, not the accept loop.
        if self.tls is not None:
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client closing an idle keep-alive connection is normal; anything else is still printed.
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall offline.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class RequestHandler(BaseHTTPRequestHandler):
    """Hands every request, whatever its method, to the server's app."""

    protocol_version = "HTTP/1.1"
    sys_version = ""
    # Headers and body go out in separate writes; Nagle + delayed ACK would add ~40 ms per response.
    disable_nagle_algorithm = True
    server: LoopbackHTTPServer

    def version_string(self) -> str:
        return self.server.version

    def log_message(self, format: str, *args: Any) -> None:  # silence per-request stderr lines
        pass

    def _dispatch(self) -> None:
        self.server.app._handle(self)

    do_GET = do_POST = do_DELETE = do_HEAD = do_PUT = do_PATCH = _dispatch


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if (handler.headers.get("Transfer-Encoding") or "").lower() == "chunked":
        chunks: list[bytes] = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length > 0 else b""


class LoopbackServer:
    """A provider's API on `127.0.0.1`, on a thread of its own; subclasses implement `route`.

    Args:
        faults: The fault plan (change it any time through `faults`).
        port: The port; 0 picks a free one.
    """

    server_name = "loopback-fake/1.0"

    def __init__(self, *, faults: Faults | None = None, port: int = 0) -> None:
        self.faults = faults or Faults()
        self.stats = Stats()
        self._port = port
        self._httpd: LoopbackHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> LoopbackServer:
        """Start listening (idempotent)."""
        if self._httpd is None:
            self._httpd = LoopbackHTTPServer(("127.0.0.1", self._port), self)
            self._thread = threading.Thread(target=self._httpd.serve_forever, name=type(self).__name__, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and close the socket."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port listened on."""
        if self._httpd is None:
            raise RuntimeError("the server is not started")
        return int(self._httpd.server_address[1])

    @property
    def origin(self) -> str:
        """`http://127.0.0.1:<port>`."""
        return f"http://127.0.0.1:{self.port}"

    # -- to implement -------------------------------------------------------------------------------

    def route(self, req: Request) -> tuple[str, bool, Any]:
        """Name the route of a request: `(route name, faultable, handler)`; handler(req, work) → Reply.

        `work` is False when the request is answered by a fault before any work is done.
        """
        raise NotImplementedError

    def check_auth(self, req: Request, route: str) -> Reply | None:
        """An error reply when the request's credentials are wrong; None when they are right."""
        return None

    def fault_reply(self, status: int, retry_after_s: float | None) -> Reply:
        """The body of an injected 429 or 5xx, in the provider's own error shape."""
        headers = {"Retry-After": f"{retry_after_s:g}"} if status == 429 and retry_after_s is not None else {}
        return Reply.json(status, {"error": {"message": f"injected {status}", "code": status}}, headers)

    # -- the request loop ---------------------------------------------------------------------------

    def _handle(self, handler: RequestHandler) -> None:
        self.stats.enter()
        try:
            body = _read_body(handler)
            split = urllib.parse.urlsplit(handler.path)
            headers = {k.lower(): v for k, v in handler.headers.items()}
            req = Request(handler.command, split.path, urllib.parse.parse_qs(split.query), headers, body)
            self.stats.incr("requests")
            plan = self.faults
            if plan.latency_s > 0:
                time.sleep(plan.latency_s)
            name, faultable, fn = self.route(req)
            try:
                parsed: Any = req.json() if "json" in (req.header("content-type") or "") else None
            except ValueError:
                parsed = None
            self.stats.route(name, parsed)
            denied = self.check_auth(req, name)
            if denied is not None:
                self._send(handler, denied)
                return
            if fn is None:
                self._send(handler, self.not_found(req))
                return
            after_work_drop = False
            if faultable:
                n = self.stats.incr("faultable")
                if plan.rate_limit_every and n % plan.rate_limit_every == 0:
                    self.stats.incr("faults")
                    self._send(handler, self.fault_reply(429, plan.retry_after_s))
                    return
                if plan.error_every and n % plan.error_every == 0:
                    self.stats.incr("faults")
                    self._send(handler, self.fault_reply(plan.error_status, None))
                    return
                if plan.drop_every and n % plan.drop_every == 0:
                    self.stats.incr("faults")
                    self._drop(handler)
                    return
                after_work_drop = bool(plan.drop_after_work_every and n % plan.drop_after_work_every == 0)
            try:
                reply = fn(req)
            except Exception as exc:  # a bug in the fake should read as a 500, not hang a test
                reply = Reply.json(500, {"error": {"message": f"fake server error: {exc!r}", "code": 500}})
            if reply is DROP or after_work_drop:
                if after_work_drop:
                    self.stats.incr("faults")
                self._drop(handler)
                return
            self._send(handler, reply)
        finally:
            self.stats.leave()

    def not_found(self, req: Request) -> Reply:
        """The answer for an unknown route."""
        return Reply.json(404, {"error": {"message": f"no route for {req.method} {req.path}", "code": 404}})

    def _send(self, handler: RequestHandler, reply: Reply) -> None:
        try:
            handler.send_response(reply.status)
            handler.send_header("Content-Type", reply.content_type)
            handler.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            if handler.command != "HEAD" and reply.body:
                handler.wfile.write(reply.body)
        except OSError:
            handler.close_connection = True

    def _drop(self, handler: RequestHandler) -> None:
        self.stats.incr("dropped")
        handler.close_connection = True
        try:
            # Reset, not a polite close: what a crashed proxy or a cut network looks like.
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
