"""The one ASGI middleware in front of every route: size limit, authentication, access log, metrics.

Plain ASGI (not `BaseHTTPMiddleware`), so a long `Prefer: wait` or a large upload is streamed
through untouched. The access log is one JSON line per request on the `mediagen.serve.access`
logger, with the route template (never the raw path: output URLs are capabilities), the status,
the time taken and the token's *name*; no header and no query string is ever logged.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import Authenticator, Unauthenticated, error_response
from .metrics import ServeMetrics

__all__ = ["GuardMiddleware"]

access_log = logging.getLogger("mediagen.serve.access")

# Open to anyone: health checks, outputs and uploaded inputs (their URLs hold an unguessable key).
_PUBLIC_PREFIXES = ("/healthz", "/outputs/", "/uploads/")


class _TooLarge(Exception):
    pass


class GuardMiddleware:
    """Refuses oversized bodies (413) and unknown tokens (401), then logs and counts the request.

    Args:
        app: The wrapped application.
        auth: The token checker.
        max_body_bytes: Largest body accepted.
        route_of: Maps a scope to its route template (for logs and metric labels).
        metrics: Where counts go; None for none.
        metrics_public: Let `/metrics` be read without a token.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        auth: Authenticator,
        max_body_bytes: int,
        route_of: Callable[[Scope], str],
        metrics: Callable[[], ServeMetrics | None],
        metrics_public: bool = False,
    ) -> None:
        self.app = app
        self.auth = auth
        self.max_body_bytes = max_body_bytes
        self.route_of = route_of
        self.metrics = metrics
        self.metrics_public = metrics_public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Guard one request (other scopes pass through)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        begun = time.perf_counter()
        path: str = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        state = scope.setdefault("state", {})
        state["request_id"] = headers.get("x-request-id", "")[:64] or secrets.token_hex(8)
        status = {"code": 500, "started": False}
        token_name = "-"

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["started"] = True
            await send(message)

        try:
            # 1. Size: a declared length over the cap is refused before a byte is read.
            declared = headers.get("content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
                await self._refuse(scope, send_wrapper, 413, f"the body is larger than {self.max_body_bytes} bytes")
                return
            # 2. Who: everything but health checks and outputs needs a token, when tokens are set.
            public = path.startswith(_PUBLIC_PREFIXES) or (path == "/metrics" and self.metrics_public)
            if not public:
                try:
                    token = self.auth.check(headers.get("authorization"))
                except Unauthenticated as exc:
                    self._count_error("unauthenticated")
                    await self._refuse(
                        scope,
                        send_wrapper,
                        401,
                        str(exc),
                        code="invalid_api_key",
                        headers={"www-authenticate": "Bearer"},
                    )
                    return
                state["token"] = token
                token_name = token.name if token is not None else "-"
            # 3. The route, reading the body through a counter.
            received = 0

            async def counted_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.max_body_bytes:
                        raise _TooLarge
                return message

            try:
                await self.app(scope, counted_receive, send_wrapper)
            except _TooLarge:
                if status["started"]:
                    raise
                await self._refuse(scope, send_wrapper, 413, f"the body is larger than {self.max_body_bytes} bytes")
        finally:
            elapsed = time.perf_counter() - begun
            route = self.route_of(scope)
            metrics = self.metrics()
            if metrics is not None:
                metrics.requests.labels(scope["method"], route, str(status["code"])).inc()
                metrics.latency.labels(route).observe(elapsed)
            client = scope.get("client")
            access_log.info(
                json.dumps(
                    {
                        "method": scope["method"],
                        "route": route,
                        "status": status["code"],
                        "ms": round(elapsed * 1000, 1),
                        "token": token_name,
                        "client": client[0] if client else None,
                        "request_id": state["request_id"],
                    }
                )
            )

    def _count_error(self, kind: str) -> None:
        metrics = self.metrics()
        if metrics is not None:
            metrics.errors.labels(kind).inc()

    async def _refuse(
        self,
        scope: Scope,
        send: Send,
        status: int,
        detail: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if status == 413:
            self._count_error("request_too_large")
        response = error_response(scope["path"], status, detail, code=code, headers=headers)

        async def no_body() -> Message:
            return {"type": "http.disconnect"}

        await response(scope, no_body, send)
