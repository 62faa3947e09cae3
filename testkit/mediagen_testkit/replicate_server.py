"""The test kit's Replicate server (`ReplicateServer`), built on `mediagen serve`.

The prediction lifecycle (create by model or by version, `Prefer: wait`, `Cancel-After`, get,
list, cancel, webhooks, uploads, output URLs, auth) is `mediagen.serve`'s own app on real uvicorn
(`ServeServer`). What only a *simulation of Replicate* needs is a thin layer around it:

- `FakeModel`s shaped like real Replicate models (their Cog schemas, official or by version),
  described to serve as models with their own input and output shapes (`_SimModel`), and run
  by a fake mediagen backend (`ReplicateSimBackend`) that makes their deterministic media, with
  their duration, progress lines, seed log and failure;
- Replicate's input validation (`invalid_fields` in its wording) and model objects (`is_official`);
- a scaled clock (`time_scale`): model run times, `Prefer: wait` windows and `Cancel-After`;
- faults (`FaultPlan`: 429 / 402 on creates, 5xx on reads, dropped connections, also after a
  create landed, latency) and the counters tests assert on (`ServerStats`), in one ASGI
  middleware in front of serve's app.

Example:
    ```python
    with ReplicateServer(time_scale=0.01) as server:
        client = replicate.Client(api_token=server.token, base_url=server.url)
        urls = client.run("black-forest-labs/flux-schnell", input={"prompt": "a fox", "seed": 1})
        assert server.stats.predictions_created == 1
    ```
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import math
import mimetypes
import random
import re
import tempfile
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mediagen._config import Config
from mediagen._remote import is_loopback_host
from mediagen.artifacts import Artifact, Audio, Image, Mesh, Video
from mediagen.backend import Backend, Capabilities, RunContext
from mediagen.client import Client
from mediagen.errors import GenerationFailedError
from mediagen.requests import TASKS, Request, request_class
from mediagen.results import Result
from mediagen.serve import ServedModel, ServeSettings, TokenSpec
from mediagen.serve.predictions import InputError, parse_cancel_after
from mediagen.serve.schema import ModelDescription

from .faults import drop_connection
from .replicate_models import (
    DEFAULT_WEBHOOK_EVENTS,
    SDXL_VERSION,
    TERMINAL_STATUSES,
    WEBHOOK_EVENTS,
    FakeModel,
    FaultPlan,
    OutputFn,
    Publisher,
    ServerStats,
    audio_model,
    default_models,
    edit_model,
    i2v_model,
    image_model,
    mesh_model,
    parse_duration,
    sdxl_model,
    sign_webhook,
    tqdm_line,
    tts_model,
    validate_input,
    version_for,
    video_model,
)
from .serve_server import ServeServer

__all__ = [
    "ReplicateServer",
    "ReplicateSimBackend",
    "SimRecord",
    # The simulation's models, faults and counters (`replicate_models`), re-exported.
    "SDXL_VERSION",
    "TERMINAL_STATUSES",
    "WEBHOOK_EVENTS",
    "DEFAULT_WEBHOOK_EVENTS",
    "OutputFn",
    "Publisher",
    "FakeModel",
    "FaultPlan",
    "ServerStats",
    "image_model",
    "sdxl_model",
    "video_model",
    "audio_model",
    "tts_model",
    "mesh_model",
    "i2v_model",
    "edit_model",
    "default_models",
    "version_for",
    "parse_duration",
    "sign_webhook",
    "tqdm_line",
    "validate_input",
]

_PROVIDER: Final = "replicate-sim"
_PLACEHOLDER: Final = "\x00mediagen-output:"
_CREATE_ROUTES: Final = frozenset({"/v1/predictions", "/v1/models/{owner}/{name}/predictions"})
_PUBLIC_PREFIXES: Final = ("/outputs/", "/uploads/", "/healthz")
_MODALITY_BY_PREFIX: Final = {"image": "image", "video": "video", "audio": "audio", "model": "mesh"}

# The create being handled (set by the middleware, filled by `_SimModel.parse_input` in the same task).
_CREATE: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("replicate_sim_create", default=None)


@dataclass
class SimRecord:
    """What the simulation knows about a prediction beyond its JSON.

    Attributes:
        id: Prediction id.
        model: The model that runs it.
        effective_input: The input the model saw (defaults applied, a seed filled in).
        endpoint: Route template of the create.
        prefer_wait_s: The `Prefer: wait` the client asked for (unscaled seconds), or None.
        cancel_after_s: The `Cancel-After` it sent (unscaled seconds), or None.
        idempotency_key: Its `Idempotency-Key` header, or None.
        request_headers: The create's headers (lower-case names).
        webhooks: `(url, events)` pairs the create asked to be notified at.
    """

    id: str
    model: FakeModel
    effective_input: dict[str, Any]
    endpoint: str
    prefer_wait_s: float | None = None
    cancel_after_s: float | None = None
    idempotency_key: str | None = None
    request_headers: dict[str, str] = field(default_factory=dict)
    webhooks: list[tuple[str, frozenset[str]]] = field(default_factory=list)
    by_name: bool = False
    """Run by name (an official model without a version): its `version` reads `hidden`."""
    echo: dict[str, Any] | None = None
    """The input the API echoes, with `echo_effective_input`; None: the input as sent."""


def _webhooks_of(body: Any) -> list[tuple[str, frozenset[str]]]:
    if not isinstance(body, dict):
        return []
    found = []
    events = body.get("webhook_events_filter")
    if isinstance(body.get("webhook"), str):
        found.append((body["webhook"], frozenset(events) if isinstance(events, list) else DEFAULT_WEBHOOK_EVENTS))
    if isinstance(body.get("webhook_completed"), str):
        found.append((body["webhook_completed"], frozenset({"completed"})))
    return found


def _modality(model: FakeModel) -> str:
    text = json.dumps(model.output_schema) + model.description.lower()
    for word, found in (("3d", "mesh"), ("video", "video"), ("music", "audio"), ("speech", "audio")):
        if word in text:
            return found
    return "image"


@dataclass(frozen=True)
class _SimModel(ModelDescription):
    """A `FakeModel` described to serve: Replicate's schema in, Replicate's output shape out."""

    fake: FakeModel | None = None

    def _model(self) -> FakeModel:
        assert self.fake is not None
        return self.fake

    def parse_input(self, given: Mapping[str, Any]) -> Request | None:
        fake = self._model()
        box = _CREATE.get()
        if box is None:
            # Not a Replicate create (the layer marks those): the OpenAI routes send mediagen's fields.
            given = _from_request_fields(fake, given)
        problems = validate_input(fake, dict(given))
        if problems:
            raise InputError(problems)
        effective = fake.apply_defaults(dict(given))
        if fake.seed_input and effective.get(fake.seed_input) is None:
            effective[fake.seed_input] = random.randint(0, 2**31 - 1)
        if box is not None:
            box["effective"] = effective
        prompt = str(effective.get("prompt") or effective.get("text") or "(replicate simulation)")
        request: Request = request_class(self.modality)(prompt=prompt, options={"input": effective})  # type: ignore[assignment]
        return request

    def output_layout(self, result: Result) -> Any:
        raw = result.raw if isinstance(result.raw, Mapping) else {}
        return raw.get("layout")

    def version_json(self) -> dict[str, Any]:
        return self._model().version_json()

    def model_json(self, base: str, run_count: int) -> dict[str, Any]:
        fake = self._model()
        # serve's model object, with what Replicate says of its own public models.
        return {
            **super().model_json(base, run_count),
            "url": f"https://replicate.com/{fake.ref}",
            "description": fake.description,
            "visibility": "public",
            "is_official": fake.official,
        }


def _from_request_fields(fake: FakeModel, given: Mapping[str, Any]) -> dict[str, Any]:
    """An input of the model from mediagen's request fields (`prompt`, `n`, `width`, `height`, `seed`)."""
    props = fake.properties()
    found: dict[str, Any] = {}
    for name, value in given.items():
        if name == "prompt" and "prompt" not in props and "text" in props:
            found["text"] = value
        elif name == "n" and "num_outputs" in props:
            found["num_outputs"] = value
        elif name in ("width", "height") and name not in props and "aspect_ratio" in props:
            width, height = int(given.get("width") or 1), int(given.get("height") or 1)
            divisor = math.gcd(width, height) or 1
            found["aspect_ratio"] = f"{width // divisor}:{height // divisor}"
        elif name == "n" and value == 1:
            continue  # one output is what every model makes
        else:
            found[name] = value  # checked against the schema like any input
    return found


class _Outputs:
    """What a `FakeModel`'s output function publishes files through (in place of the old server)."""

    def __init__(self) -> None:
        self.files: list[tuple[bytes, str]] = []

    def serve_bytes(self, data: bytes, filename: str, content_type: str | None = None) -> str:
        ctype = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        self.files.append((data, ctype))
        return f"{_PLACEHOLDER}{len(self.files) - 1}"


def _layout(node: Any) -> Any:
    if isinstance(node, str) and node.startswith(_PLACEHOLDER):
        return {"$output": int(node.removeprefix(_PLACEHOLDER))}
    if isinstance(node, dict):
        return {key: _layout(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_layout(item) for item in node]
    return node


def _artifact(data: bytes, content_type: str, modality: str) -> Artifact:
    # Bytes of no named kind (`application/octet-stream`) stay so, in the artifact class of the
    # request's modality: serve stores them as `.bin` and serves them untyped, as the model said.
    kind = _MODALITY_BY_PREFIX.get(content_type.split("/", 1)[0], modality)
    cls: type[Artifact] = {"image": Image, "video": Video, "audio": Audio, "mesh": Mesh}[kind]
    return cls(data, media_type=content_type)


class ReplicateSimBackend(Backend):
    """A mediagen backend running the `FakeModel`s of a `ReplicateServer` (test kit only).

    Deterministic: the media come from the model's output function and the effective input.
    `run_seconds` (on the server's scaled clock), `log_steps` progress steps, a `Using seed: N`
    log line and `fail_with` behave as the model says.
    """

    provider: ClassVar[str] = _PROVIDER

    def __init__(self, server: ReplicateServer) -> None:
        super().__init__()
        self.server = server

    async def capabilities(self, model: str) -> Capabilities:
        return Capabilities(tasks=frozenset(TASKS))

    async def run(self, request: Request, model: str, ctx: RunContext) -> Result:
        fake = self.server.get_model(model)
        given = request.options.get("input")
        effective = dict(given) if isinstance(given, Mapping) else {}
        seed = effective.get(fake.seed_input) if fake.seed_input else None
        if seed is not None:
            ctx.log(f"Using seed: {seed}")
        run_s = max(0.0, fake.run_seconds) * self.server.time_scale
        steps = fake.log_steps
        outputs = _Outputs()
        # The media are made during the run, off the event loop (encoding a video takes long enough
        # to hold everyone else up), so a full progress bar means the outputs are about ready.
        making = (
            asyncio.ensure_future(asyncio.to_thread(fake.output, effective, outputs))
            if fake.fail_with is None
            else None
        )
        try:
            for step in range(1, steps + 1):
                await asyncio.sleep(run_s / steps)
                ctx.progress(step, steps)
            if not steps:
                await asyncio.sleep(run_s)
            if making is None:
                raise GenerationFailedError(str(fake.fail_with))
            try:
                made = await making
            except Exception as exc:  # the model's failure becomes the prediction's
                raise GenerationFailedError(str(exc) or type(exc).__name__) from exc
        finally:
            if making is not None and not making.done():
                making.cancel()
        return Result(
            artifacts=[_artifact(data, ctype, request.modality) for data, ctype in outputs.files],
            provider=self.provider,
            model=model,
            raw={"layout": _layout(made)},
        )


class _SimLayer:
    """The ASGI middleware in front of serve's app: clock scaling, faults, counters, records."""

    def __init__(self, app: ASGIApp, server: ReplicateServer) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        server = self.server
        path: str = scope["path"]
        while path.startswith("/v1/v1/"):
            path = path[3:]  # base_url ".../v1" + the official client's own "/v1/..." prefix
        if path != "/" and path.endswith("/"):
            path = path[:-1]
        if path != scope["path"]:
            scope = {**scope, "path": path, "raw_path": path.encode()}
        method: str = scope["method"]
        route = server.route_of(scope)
        stats = server.stats
        stats.enter()
        stats.record_request(method, route)
        try:
            faults = server.faults
            if faults.latency_s > 0:
                await asyncio.sleep(faults.latency_s)
            is_create = method == "POST" and route in _CREATE_ROUTES
            dropped = server.nth("requests", faults.drop_every)
            if dropped and not (is_create and faults.drop_after_create):
                await self._drop(send)
                return
            public = path.startswith(_PUBLIC_PREFIXES)
            authed = not public and self._authed(scope)
            if not public and not authed and server.echo_token_in_errors:
                # A careless server quoting the token it refused (clients must keep it out of errors).
                given = self._token_sent(scope)
                await _problem(
                    send,
                    401,
                    f"You did not pass a valid authentication token (got {given!r})",
                    {},
                    title="Unauthenticated",
                )
                return
            if authed and is_create:
                if server.nth("creates", faults.create_429_every):
                    stats.incr("faults_injected")
                    headers = {"retry-after": faults.retry_after} if faults.retry_after is not None else {}
                    await _problem(send, 429, "Request was throttled. Expected available in 1 second.", headers)
                    return
                if faults.status_402:
                    stats.incr("faults_injected")
                    await _problem(
                        send, 402, "You need to set up billing to run this model.", {}, title="Billing required"
                    )
                    return
            if authed and method == "GET" and path.startswith("/v1/"):
                if server.nth("gets_503", faults.get_503_every):
                    stats.incr("faults_injected")
                    await _problem(send, 503, "Service temporarily unavailable (injected).", {})
                    return
                if server.nth("gets_500", faults.get_500_every):
                    stats.incr("faults_injected")
                    await _problem(send, 500, "Internal server error (injected).", {})
                    return
            if is_create and authed:
                await self._create(scope, receive, send, route, drop_after=dropped)
                return
            if route in ("/v1/predictions/{id}/cancel", "/v1/predictions/{id}") and authed:
                start, answer = await _capture(self.app, scope, receive)
                assert start is not None
                if start["status"] == 200:
                    if method == "POST":
                        stats.incr("cancels")
                    answer = json.dumps(server.echoed(json.loads(answer))).encode()
                    start = {**start, "headers": _with_length(start["headers"], len(answer))}
                await send(start)
                await send({"type": "http.response.body", "body": answer})
                return
            if method == "GET" and route == "/v1/predictions" and authed:
                await self._list(scope, receive, send)
                return
            if method == "POST" and route == "/v1/files" and authed:
                if await self._forward_status(scope, receive, send) == 201:
                    stats.incr("files_uploaded")
                return
            await self.app(scope, receive, send)
        finally:
            stats.leave()

    def _token_sent(self, scope: Scope) -> str | None:
        for name, value in scope.get("headers", []):
            if name.lower() == b"authorization":
                scheme, _, token = value.decode("latin-1").strip().partition(" ")
                return token.strip() if scheme.lower() in ("bearer", "token") else None
        return None

    def _authed(self, scope: Scope) -> bool:
        return self._token_sent(scope) == self.server.token

    async def _drop(self, send: Send) -> None:
        self.server.stats.incr("dropped")
        self.server.stats.incr("faults_injected")
        await drop_connection(send)

    async def _forward_status(self, scope: Scope, receive: Receive, send: Send) -> int:
        seen: list[int] = []

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen.append(int(message["status"]))
            await send(message)

        await self.app(scope, receive, watch)
        return seen[0] if seen else 0

    async def _list(self, scope: Scope, receive: Receive, send: Send) -> None:
        start, answer = await _capture(self.app, scope, receive)
        if start is not None and start["status"] == 200:
            self.server.lists += 1
            page = json.loads(answer)
            page["results"] = [self.server.echoed(p) for p in page.get("results", [])]
            page = self.server.rewrite_list(page, self.server.lists)
            answer = json.dumps(page).encode()
            start = {**start, "headers": _with_length(start["headers"], len(answer))}
        assert start is not None
        await send(start)
        await send({"type": "http.response.body", "body": answer})

    async def _create(self, scope: Scope, receive: Receive, send: Send, route: str, *, drop_after: bool) -> None:
        server = self.server
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        prefer_s = _prefer_wait(headers.get("prefer"))
        cancel_after_s: float | None = None
        rewritten: dict[str, str] = {}
        if prefer_s is not None:
            # serve waits whole seconds (1..60): the scaled window, at least one second.
            rewritten["prefer"] = f"wait={max(1, min(60, math.ceil(prefer_s * server.time_scale)))}"
        if "cancel-after" in headers:
            try:
                cancel_after_s = parse_cancel_after(headers["cancel-after"])
            except InputError as exc:
                # Checked here, on the model clock: serve's own minimum is scaled down with it.
                await _problem(send, 422, str(exc), {}, title="Invalid Cancel-After header")
                return
            # Rounded up: serve checks its scaled minimum again, and rounding down could fall below it.
            rewritten["cancel-after"] = f"{math.ceil(cancel_after_s * server.time_scale * 1e6) / 1e6:.6f}"
        sent = _json_or_none(body)
        webhooks = _webhooks_of(sent)
        for url, _ in webhooks:
            if not _is_loopback_url(url):
                # Tests never reach a public address: serve would deliver to one.
                await _problem(
                    send,
                    422,
                    "The test kit's Replicate server only delivers webhooks to loopback http(s) URLs",
                    {},
                    title="Invalid webhook URL",
                )
                return
        by_name = route != "/v1/predictions" or (
            isinstance(sent, dict) and isinstance(sent.get("version"), str) and _names_model(sent["version"])
        )
        if by_name:
            # Replicate runs only official models by name; others need a version.
            ref = _model_ref(scope, sent)
            model = server.find_model(ref) if ref else None
            if model is not None and not model.official:
                if route == "/v1/predictions":
                    await _problem(send, 422, _NO_VERSION, {}, title="Invalid version or not permitted")
                else:
                    await _problem(send, 404, "The requested resource could not be found.", {})
                return
        if rewritten:
            kept = [(k, v) for k, v in scope["headers"] if k.decode("latin-1").lower() not in rewritten]
            scope = {**scope, "headers": kept + [(k.encode(), v.encode()) for k, v in rewritten.items()]}

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        box: dict[str, Any] = {}
        token = _CREATE.set(box)
        try:
            start, answer = await _capture(self.app, scope, replay)
        finally:
            _CREATE.reset(token)
        status = int(start["status"]) if start is not None else 0
        server.creates += 1
        if server.lose_create_answer(server.creates):
            drop_after = True
        if 200 <= status < 300:
            prediction = json.loads(answer)
            record = SimRecord(
                id=str(prediction["id"]),
                model=server.get_model(str(prediction["model"])),
                effective_input=dict(box.get("effective") or {}),
                endpoint=route,
                prefer_wait_s=prefer_s,
                cancel_after_s=cancel_after_s,
                idempotency_key=headers.get("idempotency-key"),
                request_headers=headers,
                webhooks=webhooks,
                by_name=bool(by_name),
            )
            if server.echo_effective_input:
                record.echo = await asyncio.to_thread(server.stored_input, record.effective_input)
            server.add_record(record)
            server.stats.record_create(record.idempotency_key)
            if start is not None:
                answer = json.dumps(server.echoed(prediction)).encode()
                start = {**start, "headers": _with_length(start["headers"], len(answer))}
        if drop_after:
            # A create picked for dropping never gets an answer, whether or not it created anything.
            await self._drop(send)
            return
        assert start is not None
        await send(start)
        await send({"type": "http.response.body", "body": answer})


async def _capture(app: ASGIApp, scope: Scope, receive: Receive) -> tuple[Message | None, bytes]:
    """Run the app, keeping its answer (start message, body) instead of sending it."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def capture(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, capture)
    return start, b"".join(chunks)


def _with_length(headers: list[tuple[bytes, bytes]], length: int) -> list[tuple[bytes, bytes]]:
    kept = [(k, v) for k, v in headers if k.lower() != b"content-length"]
    return [*kept, (b"content-length", str(length).encode())]


_NO_VERSION: Final = "The specified version does not exist (or perhaps you don't have permission to use it?)"


def _is_loopback_url(url: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and is_loopback_host(parts.hostname or "")


def _names_model(version: str) -> bool:
    return "/" in version and ":" not in version


def _model_ref(scope: Scope, body: Any) -> str | None:
    params = scope.get("path", "").split("/")
    if len(params) == 6 and params[2] == "models":
        return f"{params[3]}/{params[4]}"
    if isinstance(body, dict) and isinstance(body.get("version"), str):
        return str(body["version"])
    return None


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


_PREFER = re.compile(r"^\s*wait(?:\s*=\s*(\d+))?\s*$")


def _prefer_wait(value: str | None) -> float | None:
    if value is None:
        return None
    match = _PREFER.match(value)
    if match is None:
        return None
    return float(match[1]) if match[1] else 60.0


async def _problem(send: Send, status: int, detail: str, headers: dict[str, str], *, title: str = "") -> None:
    problem: dict[str, Any] = {"title": title} if title else {}
    body = json.dumps({**problem, "detail": detail, "status": status}).encode()
    raw = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class ReplicateServer:
    """A loopback server that speaks Replicate's HTTP API v1: `mediagen serve` plus a simulation layer.

    Args:
        token: The API token clients must send (at least 16 characters: serve's rule).
        models: Models to serve; None serves `default_models()`, `[]` none.
        faults: Faults to inject (see `FaultPlan`); can be replaced later through `faults`.
        time_scale: Real seconds per model second: `0.01` runs a 60 s model in 0.6 s. Applies to
            run times, `Prefer: wait` windows (at least 1 s: serve waits whole seconds) and
            `Cancel-After` deadlines.
        echo_effective_input: Echo each prediction's `input` the way a server that stores it may:
            the model's defaults filled in (and a random seed when none was sent), every number
            written back as a float (`7` comes back `7.0`), and an inline `data:` URL replaced by
            the URL of a copy on this server. The API does not promise that the echo equals the
            body sent; False echoes it as sent (serve's own behaviour).
        page_size: Predictions per page of `GET /v1/predictions`.
        echo_token_in_errors: Quote the token a refused request carried in the 401 body (a careless
            server), to test that clients keep it out of their errors.

    Subclasses can lose answers and bend pages (`lose_create_answer`, `rewrite_list`).

    Attributes:
        stats: Counters (see `ServerStats`).
        records: What the simulation knows about each prediction, by id (see `SimRecord`).
    """

    def __init__(
        self,
        *,
        token: str = "r8_test_0123456789abcdef",
        models: list[FakeModel] | None = None,
        faults: FaultPlan | None = None,
        time_scale: float = 1.0,
        echo_token_in_errors: bool = False,
        echo_effective_input: bool = False,
        page_size: int = 100,
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.token = token
        self.time_scale = float(time_scale)
        self.echo_token_in_errors = echo_token_in_errors
        self.echo_effective_input = echo_effective_input
        self.page_size = page_size
        self.creates = 0
        """Create requests that reached serve (answered, whatever the answer)."""
        self.lists = 0
        """`GET /v1/predictions` pages served."""
        self.stats = ServerStats()
        self.records: dict[str, SimRecord] = {}
        self._lock = threading.RLock()
        self._faults = faults or FaultPlan()
        self._counters: dict[str, int] = {}
        self._models: dict[str, FakeModel] = {}
        for model in default_models() if models is None else models:
            self._models[model.ref] = model
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._serve: ServeServer | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> ReplicateServer:
        """Start serve on a loopback port, with the models registered."""
        if self._serve is not None:
            return self
        self._tmp = tempfile.TemporaryDirectory(prefix="replicate-sim-")
        settings = ServeSettings(
            db=Path(self._tmp.name) / "predictions.db",
            tokens=[TokenSpec.from_token("test", self.token)],
            max_concurrency=None,
            max_outputs=64,
            retention_days=None,
            shutdown_grace_s=0,
            min_cancel_after_s=5.0 * self.time_scale,
            page_size=self.page_size,
            webhook_secret="replicate-sim-" + self.token,
        )
        client = Client(config=Config(), backends={_PROVIDER: ReplicateSimBackend(self)})
        self._serve = ServeServer(settings, client=client, wrap=lambda app: _SimLayer(app, self)).start()
        self._count_webhooks()
        for model in list(self._models.values()):
            self._register(model)
        return self

    def _count_webhooks(self) -> None:
        """Count serve's webhook outcomes in `stats` too (serve's own /metrics keeps counting them)."""
        webhooks = self.state.webhooks
        before = webhooks.on_outcome

        def counted(outcome: str) -> None:
            if before is not None:
                before(outcome)
            self.stats.incr("webhooks_sent" if outcome == "delivered" else "webhooks_failed")

        webhooks.on_outcome = counted

    def stop(self) -> None:
        """Stop the server and remove its files."""
        serve, self._serve = self._serve, None
        if serve is not None:
            serve.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> ReplicateServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ------------------------------------------------------------------------------

    @property
    def origin(self) -> str:
        """`http://127.0.0.1:PORT`."""
        if self._serve is None:
            raise RuntimeError("server not started")
        return self._serve.url

    @property
    def port(self) -> int:
        """The bound port."""
        if self._serve is None:
            raise RuntimeError("server not started")
        return int(self._serve.port)

    @property
    def url(self) -> str:
        """The API base URL, `http://127.0.0.1:PORT/v1` (the doubled `/v1/v1/` is folded back)."""
        return self.origin + "/v1"

    @property
    def state(self) -> Any:
        """The `ServeState` of the serve app."""
        assert self._serve is not None
        return self._serve.state

    def route_of(self, scope: Scope) -> str:
        """The route template of a request (`(unknown)` for none)."""
        from starlette.routing import Match

        assert self._serve is not None
        for route in self._serve.app.router.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return str(getattr(route, "path", "(unknown)"))
        return "(unknown)"

    # -- models ---------------------------------------------------------------------------------

    def add_model(self, model: FakeModel) -> None:
        """Serve a model (replacing one with the same owner/name)."""
        with self._lock:
            self._models[model.ref] = model
        if self._serve is not None:
            self._register(model)

    def find_model(self, ref: str) -> FakeModel | None:
        """A served model by `owner/name`, or None."""
        with self._lock:
            return self._models.get(ref)

    def get_model(self, ref: str) -> FakeModel:
        """A served model by `owner/name`.

        Raises:
            KeyError: It is not served.
        """
        with self._lock:
            return self._models[ref]

    @property
    def models(self) -> list[FakeModel]:
        """The served models."""
        with self._lock:
            return list(self._models.values())

    def _register(self, model: FakeModel) -> None:
        state = self.state
        served = ServedModel(owner=model.owner, name=model.name, model=f"{_PROVIDER}:{model.ref}")
        modality = _modality(model)
        description = _SimModel(
            served=served,
            modality=modality,
            caps=Capabilities(tasks=frozenset(TASKS)),
            openapi_schema=model.openapi_schema(),
            version=model.version,
            created_at="2024-01-01T00:00:00.000Z",
            fake=model,
        )
        state.models[model.ref] = description
        state.service.models[model.ref] = description
        state.by_version[model.version] = description

    # -- faults ---------------------------------------------------------------------------------

    @property
    def faults(self) -> FaultPlan:
        """The fault plan; assigning a new one also restarts its counters."""
        return self._faults

    @faults.setter
    def faults(self, plan: FaultPlan) -> None:
        with self._lock:
            self._faults = plan
            self._counters.clear()

    def nth(self, counter: str, every: int | None) -> bool:
        """Advance `counter`; True when this is one of every `every`th."""
        with self._lock:
            self._counters[counter] = self._counters.get(counter, 0) + 1
            return bool(every) and self._counters[counter] % int(every or 1) == 0

    # -- hooks for subclasses -------------------------------------------------------------------

    def lose_create_answer(self, number: int) -> bool:
        """Whether the answer to the `number`-th create (from 1) is lost: the create lands, the connection drops."""
        return False

    def rewrite_list(self, page: dict[str, Any], number: int) -> dict[str, Any]:
        """The `number`-th page of `GET /v1/predictions` (from 1) as the client gets it."""
        return page

    @property
    def webhook_secret(self) -> str:
        """The signing secret of this server's token (`GET /v1/webhooks/default/secret`)."""
        secret: str = self.state.webhooks.secret_for("test")
        return secret

    # -- predictions ----------------------------------------------------------------------------

    def stored_input(self, effective: dict[str, Any]) -> dict[str, Any]:
        """The input as a storing server echoes it (see `echo_effective_input`)."""
        store = self.state.store

        def stored(value: Any) -> Any:
            if isinstance(value, bool) or value is None:
                return value
            if isinstance(value, int | float):
                return float(value)
            if isinstance(value, str) and value.startswith("data:"):
                from mediagen._media import decode_data_url

                data, _ = decode_data_url(value)
                return f"{self.origin}{store.write_upload(data, 'input').path()}"
            if isinstance(value, list):
                return [stored(item) for item in value]
            if isinstance(value, dict):
                return {k: stored(v) for k, v in value.items()}
            return value

        return {key: stored(value) for key, value in effective.items()}

    def echoed(self, prediction: dict[str, Any]) -> dict[str, Any]:
        """A prediction object with its input as this server echoes it."""
        with self._lock:
            record = self.records.get(str(prediction.get("id")))
        if record is not None and record.echo is not None and prediction.get("input") is not None:
            prediction = {**prediction, "input": record.echo}
        if record is not None and record.by_name:
            prediction = {**prediction, "version": "hidden"}
        return prediction

    def add_record(self, record: SimRecord) -> None:
        """Keep what the simulation knows about a new prediction."""
        with self._lock:
            self.records[record.id] = record

    def snapshot(self, prediction_id: str) -> dict[str, Any]:
        """The prediction object as the API returns it now.

        Raises:
            KeyError: No such prediction.
        """
        state = self.state
        stored = state.store.get(prediction_id)
        if stored is None:
            raise KeyError(prediction_id)
        body: dict[str, Any] = json.loads(json.dumps(state.service.fresh(stored).to_json(self.origin)))
        return self.echoed(body)

    def wait_for(self, prediction_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """Wait (bounded) until a prediction has ended; its object then (or as it is at the timeout)."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            body = self.snapshot(prediction_id)
            if body["status"] in TERMINAL_STATUSES or time.monotonic() > deadline:
                return body
            time.sleep(0.01)

    @property
    def predictions(self) -> dict[str, dict[str, Any]]:
        """Every prediction created through the API, oldest first, as the API returns it now."""
        with self._lock:
            ids = list(self.records)
        return {pid: self.snapshot(pid) for pid in ids}

    def resolve_uri(self, uri: str) -> bytes | None:
        """The bytes behind one of this server's upload or output URLs (None: not one of them)."""
        if not uri.startswith(self.origin + "/"):
            return None
        parts = uri.removeprefix(self.origin + "/").split("/")
        if len(parts) != 4:
            return None
        store = self.state.store
        kind, pid, key, name = parts
        found = store.upload_file(pid, key, name) if kind == "uploads" else store.output_file(pid, key, name)
        return None if found is None else Path(found).read_bytes()
