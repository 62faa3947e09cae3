"""Fault injection for any ASGI app, `mediagen serve` included: 429s, 5xx, dropped connections, latency.

Wrap the app and tell it what to break; counts show what was broken::

    from mediagen.serve import create_app
    from mediagen_testkit.faults import FaultInjection, Faults

    faults = Faults(status=503, every=3, routes=("POST /v1/models/",))
    app = FaultInjection(create_app(settings), faults)

A fault applies to requests whose `"METHOD /path"` starts with one of `routes` (all requests when
empty). `every=N` hits every Nth matching request (1: all of them); `first=N` the first N only.
A dropped connection starts a response and then breaks it off, so the client sees the connection
end mid-answer (as when a proxy resets it), not a clean error.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["FaultInjection", "Faults", "drop_connection"]


@dataclass
class Faults:
    """What to break, and what was broken."""

    status: int | None = None
    """Answer matching requests with this status (429, 500, 503 ...) instead of running them."""
    drop: bool = False
    """Break the connection off after the response has started."""
    latency_s: float = 0.0
    """Delay every matching request by this long before it runs."""
    retry_after: float | None = None
    """`Retry-After` seconds sent with an injected status."""
    every: int = 1
    """Hit every Nth matching request."""
    first: int | None = None
    """Hit only the first N matching requests (None: no end)."""
    routes: tuple[str, ...] = ()
    """`"METHOD /path-prefix"` strings the faults apply to; empty: every request."""
    seen: int = field(default=0, init=False)
    """Matching requests so far."""
    injected: int = field(default=0, init=False)
    """Faults injected so far."""

    def matches(self, method: str, path: str) -> bool:
        """Whether a request is subject to the faults."""
        key = f"{method} {path}"
        return not self.routes or any(key.startswith(route) for route in self.routes)

    def hit(self) -> bool:
        """Count a matching request; True when this one gets the fault."""
        self.seen += 1
        if self.first is not None and self.seen > self.first:
            return False
        return self.seen % max(1, self.every) == 0


class _Dropped(Exception):
    """Raised to make the ASGI server abort the connection."""


async def drop_connection(send: Send) -> None:
    """Start a response, then break the connection off mid-answer (raises to make the server abort it)."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1000")]})
    await send({"type": "http.response.body", "body": b'{"id": "', "more_body": True})
    raise _Dropped("fault injection: connection dropped")


class FaultInjection:
    """ASGI middleware injecting `Faults` in front of an app."""

    def __init__(self, app: ASGIApp, faults: Faults) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        faults = self.faults
        if scope["type"] != "http" or not faults.matches(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        if faults.latency_s:
            await asyncio.sleep(faults.latency_s)
        if not faults.hit() or (faults.status is None and not faults.drop):
            await self.app(scope, receive, send)
            return
        faults.injected += 1
        if faults.drop:
            await drop_connection(send)
        assert faults.status is not None
        headers = [(b"content-type", b"application/problem+json")]
        if faults.retry_after is not None:
            headers.append((b"retry-after", str(int(faults.retry_after)).encode()))
        body = json.dumps({"title": "Injected fault", "detail": "fault injection", "status": faults.status}).encode()
        start: Message = {"type": "http.response.start", "status": faults.status, "headers": headers}
        await send(start)
        await send({"type": "http.response.body", "body": body})
