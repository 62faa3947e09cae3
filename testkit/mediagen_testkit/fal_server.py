"""A loopback fake of fal's queue API, for offline tests and benchmarks.

:class:`FalServer` runs a small threaded HTTP server on ``127.0.0.1`` that answers what fal's queue
REST API and its storage API answer, as the official ``fal_client`` (1.x) and fal's docs describe them:

=====================================================  ==========================================
``POST /{app id}[?fal_webhook=url]``                   submit: ``request_id``, ``status_url``,
                                                       ``response_url``, ``cancel_url``,
                                                       ``queue_position``; header ``x-fal-request-id``
``GET /{owner}/{alias}/requests/{id}/status[?logs=1]``  ``IN_QUEUE`` (``queue_position``) →
                                                       ``IN_PROGRESS`` (``logs``) → ``COMPLETED``
                                                       (``logs``, ``metrics``, ``error``)
``GET /{owner}/{alias}/requests/{id}``                  the app's output JSON; the app's error
                                                       status when it failed
``PUT /{owner}/{alias}/requests/{id}/cancel``           202 ``CANCELLATION_REQUESTED``,
                                                       400 ``ALREADY_COMPLETED``, 404 ``NOT_FOUND``
``POST /storage/upload/initiate``                       ``{upload_url, file_url}``; the bytes go by
                                                       ``PUT upload_url`` (no key: a signed URL)
``GET /files/...``                                      output and uploaded files (no key: a CDN)
=====================================================  ==========================================

Status, result and cancel URLs use only the owner/alias part of the app id (``fal-ai/flux`` for
``fal-ai/flux/schnell``), as fal's do. Every call but file downloads and signed uploads needs
``Authorization: Key <key>``. Jobs move through the queue on the server's own clock
(``time_scale`` speeds it up) and produce real files: PNG/JPEG images, MP4 videos, WAV audio and GLB
meshes, made deterministically from the seed so a test can check the bytes.

Faults come from a :class:`FaultPlan`: a 429 or a 5xx on every k-th call, dropped connections
(before or after a submit is queued), latency; :class:`ServerStats` counts what happened (jobs
queued, cancels seen, duplicates by body) so tests can prove a client never queued a job twice.

Choices of this fake where fal documents nothing (flagged so nobody mistakes them for fal's word):
an injected 5xx comes from the "ingress" (no ``x-fal-request-id`` header, an nginx-style HTML body)
unless ``FaultPlan.error_source="queue"``; a result asked for before the job completes answers 400;
a cancelled job completes with ``error_type="request_cancelled"``.

Example:
    ```python
    from mediagen_testkit.fal_server import FalServer

    with FalServer(time_scale=0.01) as server:
        backend = FalBackend(key=server.key, base_url=server.url, storage_url=server.url)
        ...
        assert server.stats.jobs_queued == 1
    ```
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import ssl
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from . import media_fixtures as media
from .fake_http import LoopbackHTTPServer, RequestHandler

__all__ = [
    "FakeApp",
    "FalServer",
    "FaultPlan",
    "JobRecord",
    "ServerStats",
    "default_apps",
    "expected_image",
]

Handler = Callable[[dict[str, Any], "FalServer", "JobRecord"], dict[str, Any]]
"""An app: ``(input, server, job) -> output JSON``; raise :class:`AppError` to fail the job."""


class AppError(Exception):
    """Raised by an app handler to fail its job with an HTTP status and a body (as fal apps do)."""

    def __init__(self, status: int, body: Any, error_type: str | None = None) -> None:
        super().__init__(str(body))
        self.status = status
        self.body = body
        self.error_type = error_type


@dataclass
class FakeApp:
    """One endpoint of the fake: what it takes, how long it runs, what it returns.

    Attributes:
        endpoint: The full app id (``fal-ai/flux/schnell``).
        handler: Makes the output from the input.
        required: Input names the app refuses to run without (422, like fal's validation).
        steps: Progress lines logged while running (``step/steps``).
        queue_s: Seconds a job waits in the queue (scaled by the server's ``time_scale``).
        run_s: Seconds a job runs.
    """

    endpoint: str
    handler: Handler
    required: tuple[str, ...] = ("prompt",)
    steps: int = 4
    queue_s: float = 0.5
    run_s: float = 2.0


@dataclass
class FaultPlan:
    """Faults the server injects; counting is global across threads.

    Attributes:
        status_429_every: Every k-th authenticated call gets 429 with ``Retry-After``.
        retry_after: The ``Retry-After`` value sent with those 429s; None omits it.
        status_500_every: Every k-th authenticated call gets 500.
        status_503_every: Every k-th authenticated call gets 503.
        error_source: ``"ingress"``: injected 5xx answer before the queue (nothing queued, no
            ``x-fal-request-id``); ``"queue"``: a submit is queued first, then answered 500 with its
            ``x-fal-request-id`` (the case a client must resolve without submitting again).
        drop_every: Every k-th call has its connection closed without an answer.
        drop_after_submit: A dropped submit is queued first (the client cannot know it exists).
        only_submits: Faults hit submits only (reads pass).
        latency_s: Real seconds slept before each answer.
        long_jobs: Seconds every job runs instead of its app's ``run_s`` (not scaled).
    """

    status_429_every: int | None = None
    retry_after: str | None = "0"
    status_500_every: int | None = None
    status_503_every: int | None = None
    error_source: str = "ingress"
    drop_every: int | None = None
    drop_after_submit: bool = False
    only_submits: bool = False
    latency_s: float = 0.0
    long_jobs: float | None = None


class ServerStats:
    """Thread-safe counters of what the server saw.

    Attributes:
        requests: Calls received (dropped ones included).
        by_route: ``"METHOD route"`` → count (``"POST submit"``, ``"GET status"`` ...).
        jobs_queued: Jobs actually queued (faulted-before submits excluded).
        bodies: SHA-256 of each queued submit body (app id + JSON) → jobs queued with it.
        cancels: Cancel calls for an existing job, by request id.
        faults: Faults injected.
        uploads: Files stored through the storage API.
        webhooks: Webhook deliveries answered with 2xx.
        keyed_file_reads: File downloads and signed uploads that carried an ``Authorization`` header
            (a client leaking its key to the file host; should stay 0).
        keys_echoed: Rejected keys quoted in a 401 body (``echo_key_in_errors``).
        peak_in_flight: Most calls handled at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.by_route: Counter[str] = Counter()
        self.jobs_queued = 0
        self.bodies: Counter[str] = Counter()
        self.cancels: Counter[str] = Counter()
        self.faults = 0
        self.uploads = 0
        self.webhooks = 0
        self.keyed_file_reads = 0
        self.keys_echoed = 0
        self.in_flight = 0
        self.peak_in_flight = 0

    def incr(self, name: str, n: int = 1) -> None:
        """Add `n` to counter `name`."""
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def route(self, key: str) -> None:
        """Count a call of a route."""
        with self._lock:
            self.requests += 1
            self.by_route[key] += 1

    @property
    def duplicates(self) -> int:
        """Jobs queued from a body already queued before (a client that submitted twice)."""
        with self._lock:
            return sum(n - 1 for n in self.bodies.values() if n > 1)

    def snapshot(self) -> dict[str, Any]:
        """The counters as a plain dict."""
        with self._lock:
            return {
                "requests": self.requests,
                "by_route": dict(self.by_route),
                "jobs_queued": self.jobs_queued,
                "duplicates": sum(n - 1 for n in self.bodies.values() if n > 1),
                "cancels": sum(self.cancels.values()),
                "faults": self.faults,
                "uploads": self.uploads,
                "webhooks": self.webhooks,
                "keyed_file_reads": self.keyed_file_reads,
                "keys_echoed": self.keys_echoed,
                "peak_in_flight": self.peak_in_flight,
            }


@dataclass
class JobRecord:
    """A queued job, its clock and its fate."""

    request_id: str
    app: FakeApp
    base: str
    input: dict[str, Any]
    created: float
    queue_s: float
    run_s: float
    webhook: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    cancelled_at: float | None = None
    output: dict[str, Any] | None = None
    error: AppError | None = None
    finished: bool = False


# -- media the apps return, deterministic in the seed ---------------------------------------------


@functools.lru_cache(maxsize=256)
def _image(width: int, height: int, seed: int, fmt: str) -> bytes:
    return media.image_bytes(width, height, seed=seed, fmt=fmt)  # type: ignore[arg-type]


def expected_image(seed: int, width: int = 64, height: int = 64, fmt: str = "png") -> bytes:
    """The bytes the fake image apps return for `seed` at this size (for tests that check bytes)."""
    return _image(width, height, seed % 2**32, fmt)


_IMAGE_SIZES = {
    "square_hd": (64, 64),
    "square": (32, 32),
    "portrait_4_3": (48, 64),
    "portrait_16_9": (36, 64),
    "landscape_4_3": (64, 48),
    "landscape_16_9": (64, 36),
}


def _seed_of(inp: dict[str, Any]) -> int:
    seed = inp.get("seed")
    if isinstance(seed, int):
        return seed
    return int.from_bytes(hashlib.sha256(json.dumps(inp, sort_keys=True).encode()).digest()[:4], "big")


def _size_of(inp: dict[str, Any]) -> tuple[int, int]:
    size = inp.get("image_size", "square_hd")
    if isinstance(size, dict):
        # Real sizes are big; the fake keeps files small by scaling the longer side to 64.
        w, h = int(size.get("width", 64)), int(size.get("height", 64))
        scale = 64 / max(w, h)
        return max(8, round(w * scale)), max(8, round(h * scale))
    if size not in _IMAGE_SIZES:
        raise AppError(
            422, {"detail": [{"loc": ["body", "image_size"], "msg": f"unknown size {size!r}", "type": "enum"}]}
        )
    return _IMAGE_SIZES[str(size)]


def _file(server: FalServer, data: bytes, name: str, content_type: str, **extra: Any) -> dict[str, Any]:
    url = server.serve_bytes(data, name, content_type)
    return {"url": url, "content_type": content_type, "file_name": name, "file_size": len(data), **extra}


def image_app(endpoint: str, *, max_images: int = 4, run_s: float = 1.0) -> FakeApp:
    """A FLUX-like text-to-image app: ``images[]`` of File objects, ``seed``, ``has_nsfw_concepts``."""

    def handle(inp: dict[str, Any], server: FalServer, job: JobRecord) -> dict[str, Any]:
        n = int(inp.get("num_images", 1))
        if not 1 <= n <= max_images:
            raise AppError(
                422, {"detail": [{"loc": ["body", "num_images"], "msg": f"must be 1..{max_images}", "type": "range"}]}
            )
        seed = _seed_of(inp)
        width, height = _size_of(inp)
        fmt = "jpeg" if inp.get("output_format") == "jpeg" else "png"
        images = [
            _file(
                server,
                _image(width, height, (seed + i) % 2**32, fmt),
                f"image{i}.{fmt}",
                f"image/{fmt}",
                width=width,
                height=height,
            )
            for i in range(n)
        ]
        return {
            "images": images,
            "seed": seed,
            "has_nsfw_concepts": [False] * n,
            "prompt": inp.get("prompt"),
            "timings": {"inference": job.run_s},
        }

    return FakeApp(endpoint, handle, run_s=run_s)


def edit_app(endpoint: str) -> FakeApp:
    """An image-editing app (FLUX fill/kontext-like): needs ``image_url`` (and ``mask_url`` when named so)."""
    app = image_app(endpoint)
    app.required = ("prompt", "image_url")
    return app


def video_app(endpoint: str, *, image: bool = False) -> FakeApp:
    """A Kling-like video app: ``duration`` "5"/"10", ``aspect_ratio``; output ``video`` File."""

    def handle(inp: dict[str, Any], server: FalServer, job: JobRecord) -> dict[str, Any]:
        duration = inp.get("duration", "5")
        if duration not in ("5", "10"):
            raise AppError(
                422, {"detail": [{"loc": ["body", "duration"], "msg": "must be '5' or '10'", "type": "enum"}]}
            )
        ratio = inp.get("aspect_ratio", "16:9")
        width, height = {"16:9": (64, 36), "9:16": (36, 64), "1:1": (48, 48)}.get(ratio, (64, 36))
        data, ext, content_type = media.video_bytes(
            width - width % 4, height - height % 4, frames=8, fps=8, seed=_seed_of(inp)
        )
        return {"video": _file(server, data, f"video.{ext}", content_type)}

    return FakeApp(endpoint, handle, required=("prompt", "image_url") if image else ("prompt",), run_s=3.0)


def audio_app(endpoint: str) -> FakeApp:
    """A Stable-Audio-like app: ``seconds_total`` (0..47), ``steps``; output ``audio_file`` File (WAV)."""

    def handle(inp: dict[str, Any], server: FalServer, job: JobRecord) -> dict[str, Any]:
        seconds = inp.get("seconds_total", 30)
        if not isinstance(seconds, int) or not 0 <= seconds <= 47:
            raise AppError(
                422,
                {"detail": [{"loc": ["body", "seconds_total"], "msg": "must be an integer 0..47", "type": "range"}]},
            )
        # Short files: a tenth of the asked length keeps tests quick, the rate says the rest.
        data = media.wav_bytes(max(0.1, seconds / 10), sample_rate=8000, frequency=220 + _seed_of(inp) % 400)
        return {"audio_file": _file(server, data, "audio.wav", "audio/wav")}

    return FakeApp(endpoint, handle, run_s=2.0)


def mesh_app(endpoint: str) -> FakeApp:
    """A TRELLIS-like image-to-3D app: needs ``image_url``; output ``model_mesh`` File (GLB)."""

    def handle(inp: dict[str, Any], server: FalServer, job: JobRecord) -> dict[str, Any]:
        data = media.glb_bytes(seed=_seed_of(inp) % 1000)
        return {
            "model_mesh": _file(server, data, "model.glb", "model/gltf-binary"),
            "timings": {"inference": job.run_s},
        }

    return FakeApp(endpoint, handle, required=("image_url",), steps=6, run_s=3.0)


def default_apps() -> list[FakeApp]:
    """The apps a fresh server knows: the curated families of mediagen's fal backend, plus a generic one."""
    return [
        image_app("fal-ai/flux/schnell"),
        image_app("fal-ai/flux/dev"),
        image_app("fal-ai/flux-pro/v1.1"),
        image_app("fal-ai/flux-pro/v1.1-ultra", max_images=1),
        edit_app("fal-ai/flux-pro/v1/fill"),
        edit_app("fal-ai/flux-pro/kontext"),
        video_app("fal-ai/kling-video/v2.1/master/text-to-video"),
        video_app("fal-ai/kling-video/v2.1/master/image-to-video", image=True),
        audio_app("fal-ai/stable-audio"),
        mesh_app("fal-ai/trellis"),
        image_app("acme/any-image"),
    ]


# -- the HTTP server --------------------------------------------------------------------------------


class _Drop(Exception):
    """Close the connection without answering."""


@dataclass
class _Answer:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def _json(status: int, obj: Any, headers: dict[str, str] | None = None) -> _Answer:
    return _Answer(status, json.dumps(obj).encode(), headers=dict(headers or {}))


_INGRESS_BODY = b"<html><head><title>{code}</title></head><body><center><h1>{code}</h1></center><hr><center>nginx</center></body></html>"


class FalServer:
    """The fake fal queue, on a loopback port.

    Args:
        key: The API key it accepts (``Authorization: Key <key>``).
        apps: Apps it serves; :func:`default_apps` when None.
        time_scale: Multiplies every app's queue and run time (0.01 makes a 2 s job take 20 ms).
        host: Loopback address to bind.
        port: Port; 0 picks a free one.
        certfile: Serve https with this certificate (PEM, key included or in `keyfile`): how the
            official ``fal_client``, which speaks https only, is pointed at the fake.
        keyfile: The certificate's private key, when not in `certfile`.
        echo_key_in_errors: Quote a rejected key in the 401 body (a careless server, or a proxy in
            between, may): for tests that the key is hidden all the same. Each echo counts in
            `stats.keys_echoed`.
    """

    def __init__(
        self,
        *,
        key: str = "fal-test-key:secret",
        apps: list[FakeApp] | None = None,
        time_scale: float = 0.01,
        host: str = "127.0.0.1",
        port: int = 0,
        certfile: str | None = None,
        keyfile: str | None = None,
        echo_key_in_errors: bool = False,
    ) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the fake fal server binds loopback addresses only, not {host!r}")
        self.key = key
        self.echo_key_in_errors = echo_key_in_errors
        self.time_scale = time_scale
        self.faults = FaultPlan()
        self.stats = ServerStats()
        self.apps: dict[str, FakeApp] = {a.endpoint: a for a in (apps if apps is not None else default_apps())}
        self.jobs: dict[str, JobRecord] = {}
        self.webhook_deliveries: list[dict[str, Any]] = []
        self._files: dict[str, tuple[bytes, str]] = {}
        self._pending_uploads: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()
        self._counter = 0
        self._host, self._port = host, port
        self._tls: ssl.SSLContext | None = None
        if certfile is not None:
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.load_cert_chain(certfile, keyfile)
        self._httpd: LoopbackHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FalServer:
        """Start serving in a background thread."""
        self._httpd = LoopbackHTTPServer((self._host, self._port), self, self._tls, version="fal-fake/1.0")
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fal-fake", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The queue root (what mediagen's ``base_url`` and ``storage_url`` take)."""
        assert self._httpd is not None, "start the server first"
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{self._host}:{self._httpd.server_port}"

    def add_app(self, app: FakeApp) -> None:
        """Serve one more app."""
        self.apps[app.endpoint] = app

    def serve_bytes(self, data: bytes, name: str, content_type: str) -> str:
        """Store bytes and return the URL they are served at (no key needed, like fal's CDN)."""
        file_id = uuid.uuid4().hex[:16]
        with self._lock:
            self._files[file_id] = (data, content_type)
        return f"{self.url}/files/{file_id}/{urllib.parse.quote(name)}"

    def file_bytes(self, url: str) -> bytes:
        """The bytes behind a URL this server handed out (uploads included)."""
        file_id = urllib.parse.urlsplit(url).path.split("/")[2]
        return self._files[file_id][0]

    def job(self, request_id: str) -> JobRecord:
        """A job by id."""
        return self.jobs[request_id]

    # -- the job clock --------------------------------------------------------------------------

    def _state(self, job: JobRecord, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        if job.cancelled_at is not None:
            return "COMPLETED"
        elapsed = now - job.created
        if elapsed < job.queue_s:
            return "IN_QUEUE"
        if elapsed < job.queue_s + job.run_s:
            return "IN_PROGRESS"
        return "COMPLETED"

    def _finish(self, job: JobRecord) -> None:
        """Make the output once, the first time anyone looks at a completed job."""
        with self._lock:
            if job.finished:
                return
            job.finished = True
        if job.cancelled_at is None:
            try:
                job.output = job.app.handler(dict(job.input), self, job)
            except AppError as exc:
                job.error = exc
        else:
            job.error = AppError(400, {"detail": "Request was cancelled"}, "request_cancelled")
        if job.webhook:
            threading.Thread(target=self._deliver, args=(job,), daemon=True).start()

    def _logs(self, job: JobRecord, now: float) -> list[dict[str, Any]]:
        ran = now - job.created - job.queue_s
        if ran < 0:
            return []
        done = job.app.steps if job.run_s <= 0 else min(job.app.steps, int(job.app.steps * ran / job.run_s))
        stamp = datetime.now(timezone.utc).isoformat()
        logs = [{"message": f"Running {job.app.endpoint}", "level": "INFO", "source": "user", "timestamp": stamp}]
        for step in range(1, done + 1):
            pct = round(100 * step / job.app.steps)
            bar = "#" * (pct // 10)
            logs.append(
                {
                    "message": f"{pct:3d}%|{bar:<10}| {step}/{job.app.steps} [00:0{step}<00:00, 1.00it/s]",
                    "level": "INFO",
                    "source": "user",
                    "timestamp": stamp,
                }
            )
        return logs

    def _status_body(self, job: JobRecord, logs: bool) -> dict[str, Any]:
        now = time.monotonic()
        state = self._state(job, now)
        urls = self._urls(job.base, job.request_id)
        body: dict[str, Any] = {"status": state, "request_id": job.request_id, **urls}
        if state == "IN_QUEUE":
            with self._lock:
                ahead = sum(
                    1 for j in self.jobs.values() if j.created < job.created and self._state(j, now) == "IN_QUEUE"
                )
            body["queue_position"] = ahead
            return body
        body["logs"] = self._logs(job, now) if logs else None
        if state == "COMPLETED":
            self._finish(job)
            body["metrics"] = {"inference_time": job.run_s}
            if job.error is not None:
                body["error"] = json.dumps(job.error.body)
                body["error_type"] = job.error.error_type or "app_error"
        return body

    def _urls(self, base: str, request_id: str) -> dict[str, str]:
        root = f"{self.url}/{base}/requests/{request_id}"
        return {"response_url": root, "status_url": root + "/status", "cancel_url": root + "/cancel"}

    def _deliver(self, job: JobRecord) -> None:
        url = str(job.webhook)
        host = urllib.parse.urlsplit(url).hostname or ""
        if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
            return  # never reach past this machine
        ok = job.error is None
        payload = {
            "request_id": job.request_id,
            "gateway_request_id": job.request_id,
            "status": "OK" if ok else "ERROR",
            "payload": job.output if ok else (job.error.body if job.error else None),
            "error": None if ok else f"Invalid status code: {job.error.status if job.error else 500}",
        }
        self.webhook_deliveries.append(payload)
        try:
            req = urllib.request.Request(
                url, data=json.dumps(payload).encode(), method="POST", headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=5) as answer:
                if 200 <= answer.status < 300:
                    self.stats.incr("webhooks")
        except OSError:
            pass

    # -- routing --------------------------------------------------------------------------------

    def _handle(self, handler: RequestHandler) -> None:
        self.stats.incr("in_flight")
        with self.stats._lock:
            self.stats.peak_in_flight = max(self.stats.peak_in_flight, self.stats.in_flight)
        try:
            length = int(handler.headers.get("Content-Length") or 0)
            body = handler.rfile.read(length) if length > 0 else b""
            try:
                answer = self._route(handler, body)
            except _Drop:
                self.stats.incr("faults")
                handler.close_connection = True
                try:
                    handler.connection.shutdown(2)
                except OSError:
                    pass
                return
            if self.faults.latency_s:
                time.sleep(self.faults.latency_s)
            handler.send_response(answer.status)
            handler.send_header("Content-Type", answer.content_type)
            handler.send_header("Content-Length", str(len(answer.body)))
            for name, value in answer.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            if handler.command != "HEAD":
                handler.wfile.write(answer.body)
        finally:
            self.stats.incr("in_flight", -1)

    def _route(self, handler: RequestHandler, body: bytes) -> _Answer:
        split = urllib.parse.urlsplit(handler.path)
        path = split.path.strip("/")
        query = urllib.parse.parse_qs(split.query)
        parts = [urllib.parse.unquote(p) for p in path.split("/")] if path else []
        method = handler.command

        # Files and signed uploads need no key (a CDN, a pre-signed URL).
        if method == "GET" and parts[:1] == ["files"] and len(parts) >= 2:
            self.stats.route("GET file")
            if handler.headers.get("Authorization"):
                self.stats.incr("keyed_file_reads")
            with self._lock:
                found = self._files.get(parts[1])
            if found is None:
                return _json(404, {"detail": "File not found"})
            return _Answer(200, found[0], content_type=found[1])
        if method == "PUT" and parts[:2] == ["storage", "put"] and len(parts) == 3:
            self.stats.route("PUT upload")
            if handler.headers.get("Authorization"):
                self.stats.incr("keyed_file_reads")
            with self._lock:
                pending = self._pending_uploads.pop(parts[2], None)
            if pending is None:
                return _json(403, {"detail": "upload URL unknown or used"})
            file_id, content_type = pending
            with self._lock:
                self._files[file_id] = (body, handler.headers.get("Content-Type") or content_type)
            self.stats.incr("uploads")
            return _Answer(200, b"")

        kind = self._kind(method, parts)
        self.stats.route(f"{method} {kind}")
        presented = handler.headers.get("Authorization")
        if presented != f"Key {self.key}":
            detail = "Invalid or missing API key. Pass 'Authorization: Key <FAL_KEY>'."
            if self.echo_key_in_errors and presented:
                detail = f"Invalid API key {presented.removeprefix('Key ')!r}. Pass 'Authorization: Key <FAL_KEY>'."
                self.stats.incr("keys_echoed")
            return _json(401, {"detail": detail})
        fault = self._fault(kind)
        if fault is not None:
            if fault == "drop" and not (kind == "submit" and self.faults.drop_after_submit):
                raise _Drop
            if fault in ("429",):
                self.stats.incr("faults")
                headers = {"Retry-After": self.faults.retry_after} if self.faults.retry_after is not None else {}
                return _json(429, {"detail": "Too many requests: concurrent request limit reached"}, headers)
            if fault in ("500", "503") and self.faults.error_source == "ingress":
                self.stats.incr("faults")
                code = int(fault)
                return _Answer(code, _INGRESS_BODY.replace(b"{code}", str(code).encode()), content_type="text/html")
        try:
            answer = self._serve(kind, method, parts, query, handler, body)
        except AppError as exc:
            return _json(exc.status, exc.body)
        if fault is not None:
            # The queue took the call and then failed (or the line dropped) while answering it.
            self.stats.incr("faults")
            if fault == "drop":
                raise _Drop
            code = int(fault)
            return _json(
                code,
                {"detail": "Internal Server Error"},
                {"x-fal-request-id": answer.headers.get("x-fal-request-id", str(uuid.uuid4()))},
            )
        return answer

    def _kind(self, method: str, parts: list[str]) -> str:
        if parts[:2] == ["storage", "upload"]:
            return "upload"
        if len(parts) >= 4 and parts[2] == "requests":
            if len(parts) == 4:
                return "result"
            if len(parts) == 5 and parts[4] in ("status", "cancel"):
                return parts[4]
        return "submit" if method == "POST" else "unknown"

    def _fault(self, kind: str) -> str | None:
        plan = self.faults
        if plan.only_submits and kind != "submit":
            return None
        with self._lock:
            self._counter += 1
            n = self._counter
        if plan.drop_every and n % plan.drop_every == 0:
            return "drop"
        if plan.status_429_every and n % plan.status_429_every == 0:
            return "429"
        if plan.status_503_every and n % plan.status_503_every == 0:
            return "503"
        if plan.status_500_every and n % plan.status_500_every == 0:
            return "500"
        return None

    def _serve(
        self,
        kind: str,
        method: str,
        parts: list[str],
        query: dict[str, list[str]],
        handler: RequestHandler,
        body: bytes,
    ) -> _Answer:
        if kind == "upload" and method == "POST":
            return self._initiate_upload(body)
        if kind == "submit":
            return self._submit("/".join(parts), query, handler, body)
        if kind in ("status", "result", "cancel"):
            base, request_id = "/".join(parts[:2]), parts[3]
            job = self.jobs.get(request_id)
            if job is None or job.base != base:
                return _json(404, {"detail": f"Request {request_id} not found"})
            if kind == "status" and method == "GET":
                return _json(200, self._status_body(job, logs=query.get("logs", ["0"])[0] in ("1", "true", "True")))
            if kind == "result" and method == "GET":
                return self._result(job)
            if kind == "cancel" and method == "PUT":
                return self._cancel(job)
        return _json(405, {"detail": "Method not allowed"})

    def _submit(self, endpoint: str, query: dict[str, list[str]], handler: RequestHandler, body: bytes) -> _Answer:
        app = self.apps.get(endpoint)
        if app is None:
            return _json(404, {"detail": f"Application '{endpoint}' not found"})
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            return _json(400, {"detail": "body is not JSON"})
        if not isinstance(payload, dict):
            return _json(422, {"detail": [{"loc": ["body"], "msg": "must be an object", "type": "type_error"}]})
        missing = [name for name in app.required if name not in payload]
        if missing:
            # fal's apps validate with pydantic: 422 with a detail list.
            return _json(
                422,
                {
                    "detail": [
                        {"loc": ["body", m], "msg": "field required", "type": "value_error.missing"} for m in missing
                    ]
                },
            )
        parts = endpoint.split("/")
        base = "/".join(parts[:2])
        request_id = str(uuid.uuid4())
        run_s = self.faults.long_jobs if self.faults.long_jobs is not None else app.run_s * self.time_scale
        job = JobRecord(
            request_id=request_id,
            app=app,
            base=base,
            input=payload,
            created=time.monotonic(),
            queue_s=app.queue_s * self.time_scale,
            run_s=run_s,
            webhook=query["fal_webhook"][0] if query.get("fal_webhook") else None,
            headers={k.lower(): v for k, v in handler.headers.items() if k.lower().startswith("x-fal-")},
        )
        digest = hashlib.sha256(endpoint.encode() + b"\n" + json.dumps(payload, sort_keys=True).encode()).hexdigest()
        with self._lock:
            self.jobs[request_id] = job
            position = sum(1 for j in self.jobs.values() if self._state(j) == "IN_QUEUE") - 1
        with self.stats._lock:
            self.stats.jobs_queued += 1
            self.stats.bodies[digest] += 1
        return _json(
            200,
            {
                "request_id": request_id,
                "gateway_request_id": request_id,
                "queue_position": max(0, position),
                **self._urls(base, request_id),
            },
            {"x-fal-request-id": request_id},
        )

    def _result(self, job: JobRecord) -> _Answer:
        if self._state(job) != "COMPLETED":
            return _json(400, {"detail": "Request is still in progress"})
        self._finish(job)
        headers = {"x-fal-request-id": job.request_id}
        if job.error is not None:
            return _json(job.error.status, job.error.body, headers)
        return _json(200, job.output, headers)

    def _cancel(self, job: JobRecord) -> _Answer:
        with self.stats._lock:
            self.stats.cancels[job.request_id] += 1
        if self._state(job) == "COMPLETED":
            return _json(400, {"status": "ALREADY_COMPLETED"})
        job.cancelled_at = time.monotonic()
        return _json(202, {"status": "CANCELLATION_REQUESTED"})

    def _initiate_upload(self, body: bytes) -> _Answer:
        try:
            meta = json.loads(body or b"{}")
        except ValueError:
            return _json(400, {"detail": "body is not JSON"})
        name = str(meta.get("file_name") or "upload.bin")
        content_type = str(meta.get("content_type") or "application/octet-stream")
        token, file_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
        with self._lock:
            self._pending_uploads[token] = (file_id, content_type)
        return _json(
            200,
            {
                "upload_url": f"{self.url}/storage/put/{token}",
                "file_url": f"{self.url}/files/{file_id}/{urllib.parse.quote(name)}",
            },
        )
