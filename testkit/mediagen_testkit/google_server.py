"""A loopback fake of the Gemini API (v1beta) for Imagen, Gemini image models and Veo, for offline tests.

:class:`GoogleServer` answers:

- ``POST /v1beta/models/{model}:predict`` (Imagen: ``instances[{prompt}]``, ``parameters{sampleCount,
  aspectRatio, imageSize, personGeneration, outputOptions}``) with ``predictions[{bytesBase64Encoded,
  mimeType}]``;
- ``POST /v1beta/models/{model}:generateContent`` (Gemini image models: text and ``inlineData`` parts
  in, a text part and an ``inlineData`` image out), which the official ``google-genai`` client can use;
- ``POST /v1beta/models/{model}:predictLongRunning`` (Veo) with an operation ``name``, polled with
  ``GET /v1beta/{name}`` until ``done``; the finished operation names the video at
  ``/v1beta/files/{id}:download?alt=media``, which needs the key and redirects to ``/storage/...``
  (where the key must not arrive: ``stats["key_leaked"]`` counts it if it does). Veo 3 videos carry a
  soundtrack. There is no cancel for operations (``...:cancel`` is a 404, and counted).

A wrong key answers 400 ``INVALID_ARGUMENT`` with reason ``API_KEY_INVALID``, as the real API does;
errors use Google's shape (``{"error": {"code", "message", "status", "details"}}``), 429 carries a
``RetryInfo``. Each image's colour comes from its prompt and index (:meth:`GoogleServer.colour_for`).
Faults come from :class:`mediagen_testkit.fake_http.Faults`; ``stats["billed"]`` counts jobs run.

Example:
    ```python
    from google import genai
    from google.genai import types
    from mediagen_testkit.google_server import GoogleServer

    with GoogleServer() as server:
        client = genai.Client(api_key=server.api_key, http_options=types.HttpOptions(base_url=server.url))
        client.models.generate_content(model="gemini-2.5-flash-image", contents="a fox")
    ```
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import secrets
import threading
import time
from typing import Any

from . import media_fixtures as media
from .fake_http import Faults, LoopbackServer, Reply, Request

__all__ = ["GoogleServer", "IMAGEN_MODELS", "GEMINI_IMAGE_MODELS", "VEO_MODELS"]

IMAGEN_MODELS = frozenset({"imagen-4.0-generate-001", "imagen-4.0-fast-generate-001", "imagen-4.0-ultra-generate-001"})
GEMINI_IMAGE_MODELS = frozenset({"gemini-2.5-flash-image"})
VEO_MODELS = frozenset({"veo-3.0-generate-001", "veo-3.0-fast-generate-001", "veo-2.0-generate-001"})

_IMAGEN_SIZES = {"1:1": (1024, 1024), "3:4": (896, 1280), "4:3": (1280, 896), "9:16": (768, 1408), "16:9": (1408, 768)}
_GEMINI_SIZES = {
    "1:1": (1024, 1024), "2:3": (832, 1248), "3:2": (1248, 832), "3:4": (864, 1184), "4:3": (1184, 864),
    "4:5": (896, 1152), "5:4": (1152, 896), "9:16": (768, 1344), "16:9": (1344, 768), "21:9": (1536, 672),
}  # fmt: skip
_STATUS = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def _decode_bytes(text: str) -> bytes:
    """Proto3 JSON `bytes`: standard or URL-safe base64, padded or not (google-genai sends URL-safe)."""
    text = text.replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _error(status: int, message: str, *, details: list[dict[str, Any]] | None = None) -> Reply:
    error: dict[str, Any] = {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}
    if details:
        error["details"] = details
    return Reply.json(status, {"error": error})


class GoogleServer(LoopbackServer):
    """The Gemini API's media endpoints on `127.0.0.1`.

    Args:
        api_key: The key the server accepts (`x-goog-api-key` header or `?key=`).
        faults: Faults to inject (see `fake_http.Faults`); operation polls and downloads count as
            faultable too, creates and generations are the billable ones.
        job_s: Seconds each Imagen / Gemini call takes.
        video_s: Seconds (server clock) a Veo operation runs before it is done.
        size_divisor: Images are made at the API's size divided by this (small files, same shape).
        echo_key_in_errors: Quote a rejected key in the error body (a careless server, or a proxy in
            between, may): for tests that the key is hidden all the same. Each echo counts in
            `stats["keys_echoed"]`.
    """

    server_name = "gemini-fake/1.0"

    def __init__(
        self,
        *,
        api_key: str = "AIzaSy-test-loopback-0123456789",
        faults: Faults | None = None,
        job_s: float = 0.0,
        video_s: float = 0.3,
        size_divisor: int = 8,
        port: int = 0,
        echo_key_in_errors: bool = False,
    ) -> None:
        super().__init__(faults=faults, port=port)
        self.api_key = api_key
        self.echo_key_in_errors = echo_key_in_errors
        self.job_s = job_s
        self.video_s = video_s
        self.size_divisor = size_divisor
        self.operations: dict[str, dict[str, Any]] = {}
        """Operation name → `{"model", "body", "started", "files"}`."""
        self.files: dict[str, bytes] = {}
        self.received_images: list[list[tuple[str, bytes]]] = []
        """The inline images of each generateContent call: `(mime type, bytes)`."""
        self._tokens: dict[str, str] = {}
        self._videos: dict[tuple[str, int], bytes] = {}
        self._ids = itertools.count(1)
        self.jobs_started = threading.Event()

    @property
    def url(self) -> str:
        """The base URL to give a client (no API version): `http://127.0.0.1:<port>`."""
        return self.origin

    # -- routing ------------------------------------------------------------------------------------

    def route(self, req: Request) -> tuple[str, bool, Any]:
        path = req.path
        if req.method == "POST" and path.startswith("/v1beta/models/") and ":" in path:
            model, _, verb = path.removeprefix("/v1beta/models/").partition(":")
            fn = {
                "predict": self._predict,
                "generateContent": self._generate_content,
                "predictLongRunning": self._start_video,
            }.get(verb)
            return f"models.{verb}", fn is not None, (lambda r, fn=fn, model=model: fn(r, model)) if fn else None
        if req.method == "GET" and path.startswith("/v1beta/models/") and "/operations/" in path:
            return "operations.get", True, self._get_operation
        if req.method == "POST" and "/operations/" in path:
            self.stats.incr("cancel_attempts")
            return "operations.cancel", False, None
        if req.method == "GET" and path.startswith("/v1beta/files/") and path.endswith(":download"):
            return "files.download", True, self._download
        if req.method == "GET" and path.startswith("/storage/"):
            return "storage", False, self._storage
        return f"{req.method} {path}", False, None

    def check_auth(self, req: Request, route: str) -> Reply | None:
        if route == "storage":
            return None
        key = req.header("x-goog-api-key") or req.arg("key")
        if key == self.api_key:
            return None
        if not key:
            return _error(
                403,
                "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
            )
        message = "API key not valid. Please pass a valid API key."
        if self.echo_key_in_errors:
            message = f"API key not valid ({key!r}). Please pass a valid API key."
            self.stats.incr("keys_echoed")
        return _error(
            400,
            message,
            details=[
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                },
                {
                    "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                    "locale": "en-US",
                    "message": "API key not valid. Please pass a valid API key.",
                },
            ],
        )

    def fault_reply(self, status: int, retry_after_s: float | None) -> Reply:
        if status == 429:
            details = [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {
                            "quotaMetric": "generativelanguage.googleapis.com/generate_requests_per_model",
                            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel",
                        }
                    ],
                }
            ]
            if retry_after_s is not None:
                details.append(
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after_s:g}s"}
                )
            return _error(
                429, "You exceeded your current quota, please check your plan and billing details.", details=details
            )
        if status == 503:
            return _error(503, "The model is overloaded. Please try again later.")
        return _error(
            status,
            "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
        )

    def not_found(self, req: Request) -> Reply:
        return _error(404, f"Method not found: {req.method} {req.path}")

    # -- helpers ------------------------------------------------------------------------------------

    @staticmethod
    def seed_for(prompt: str, index: int = 0) -> int:
        """The seed the fake draws output `index` of `prompt` with."""
        return int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16) + index

    @staticmethod
    def colour_for(prompt: str, index: int = 0) -> tuple[int, int, int]:
        """The colour of output `index` for `prompt`."""
        return media.seed_colour(GoogleServer.seed_for(prompt, index))

    def _image(self, size: tuple[int, int], seed: int, fmt: str = "png") -> bytes:
        w, h = (max(16, s // self.size_divisor) for s in size)
        return media.image_bytes(w, h, seed=seed, fmt=fmt)  # type: ignore[arg-type]

    def _unknown_model(self, model: str, verb: str) -> Reply:
        return _error(
            404,
            f"models/{model} is not found for API version v1beta, or is not supported for {verb}. Call ListModels to see the list of available models and their supported methods.",
        )

    # -- Imagen -------------------------------------------------------------------------------------

    def _predict(self, req: Request, model: str) -> Reply:
        if model not in IMAGEN_MODELS:
            return self._unknown_model(model, "predict")
        body = req.json()
        instances = body.get("instances") if isinstance(body, dict) else None
        if not instances or not isinstance(instances[0], dict) or not instances[0].get("prompt"):
            return _error(400, "* Predict request: instances[0].prompt is required.")
        extra = set(instances[0]) - {"prompt"}
        if extra:
            return _error(
                400,
                f"Invalid JSON payload received. Unknown name \"{sorted(extra)[0]}\" at 'instances[0]': Cannot find field.",
            )
        params = body.get("parameters") or {}
        allowed = {
            "sampleCount",
            "aspectRatio",
            "imageSize",
            "personGeneration",
            "outputOptions",
            "includeRaiReason",
            "includeSafetyAttributes",
            "language",
            "guidanceScale",
            "safetySetting",
        }
        unknown = set(params) - allowed
        if unknown:
            return _error(
                400,
                f"Invalid JSON payload received. Unknown name \"{sorted(unknown)[0]}\" at 'parameters': Cannot find field.",
            )
        n = int(params.get("sampleCount") or 4)
        limit = 1 if "ultra" in model else 4
        if not 1 <= n <= limit:
            return _error(400, f"sampleCount must be between 1 and {limit}.")
        aspect = params.get("aspectRatio") or "1:1"
        if aspect not in _IMAGEN_SIZES:
            return _error(400, f"Unsupported aspect ratio: {aspect}.")
        size = params.get("imageSize") or "1K"
        if size not in ("1K", "2K") or (size == "2K" and "fast" in model):
            return _error(400, f"Unsupported image size: {size} for {model}.")
        person = params.get("personGeneration")
        if person is not None and str(person).lower() not in ("dont_allow", "allow_adult", "allow_all"):
            return _error(400, f"Invalid personGeneration: {person}.")
        mime = ((params.get("outputOptions") or {}).get("mimeType")) or "image/png"
        fmt = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}.get(mime)
        if fmt is None:
            return _error(400, f"Unsupported output mime type: {mime}.")
        self.jobs_started.set()
        if self.job_s:
            time.sleep(self.job_s)
        w, h = _IMAGEN_SIZES[aspect]
        scale = 2 if size == "2K" else 1
        prompt = str(instances[0]["prompt"])
        predictions = [
            {
                "bytesBase64Encoded": base64.b64encode(
                    self._image((w * scale, h * scale), self.seed_for(prompt, i), fmt)
                ).decode(),
                "mimeType": mime,
            }
            for i in range(n)
        ]
        self.stats.incr("billed")
        self.stats.incr("images_made", n)
        return Reply.json(200, {"predictions": predictions})

    # -- Gemini image models ------------------------------------------------------------------------

    def _generate_content(self, req: Request, model: str) -> Reply:
        if model not in GEMINI_IMAGE_MODELS:
            return self._unknown_model(model, "generateContent")
        body = req.json()
        contents = body.get("contents") if isinstance(body, dict) else None
        if not contents:
            return _error(400, "* GenerateContentRequest.contents: contents is not specified")
        text: list[str] = []
        images: list[tuple[str, bytes]] = []
        for content in contents:
            for part in content.get("parts") or []:
                if "text" in part:
                    text.append(str(part["text"]))
                elif "inlineData" in part or "inline_data" in part:
                    # Proto3 JSON takes field names in lowerCamel or as declared; google-genai 3 sends
                    # `inlineData` holding `mime_type`.
                    inline = part.get("inlineData") or part.get("inline_data") or {}
                    mime = inline.get("mimeType") or inline.get("mime_type")
                    try:
                        data = _decode_bytes(str(inline.get("data") or ""))
                    except ValueError:
                        return _error(
                            400,
                            "Invalid value at 'contents[0].parts[1].inline_data.data' (TYPE_BYTES), Base64 decoding failed",
                        )
                    if mime not in ("image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"):
                        return _error(400, f"Unsupported MIME type: {mime}")
                    images.append((str(mime), data))
        config = body.get("generationConfig") or {}
        modalities = [str(m).upper() for m in config.get("responseModalities") or []]
        if modalities and "IMAGE" not in modalities:
            return Reply.json(200, self._content_response(model, [{"text": "I can only describe it in words."}]))
        aspect = ((config.get("imageConfig") or {}).get("aspectRatio")) or "1:1"
        if aspect not in _GEMINI_SIZES:
            return _error(
                400,
                f"* GenerateContentRequest.generation_config.image_config.aspect_ratio: unsupported aspect ratio {aspect}",
            )
        prompt = " ".join(text)
        self.jobs_started.set()
        if self.job_s:
            time.sleep(self.job_s)
        with self._lock:
            self.received_images.append(images)
        seed = self.seed_for(prompt, 0)
        image = self._image(_GEMINI_SIZES[aspect], seed)
        self.stats.incr("billed")
        self.stats.incr("images_made")
        parts: list[dict[str, Any]] = [
            {"text": f"Here is {prompt[:40]}"},
            {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(image).decode()}},
        ]
        return Reply.json(200, self._content_response(model, parts))

    @staticmethod
    def _content_response(model: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 1290, "totalTokenCount": 1302},
            "modelVersion": model,
            "responseId": secrets.token_urlsafe(12),
        }

    # -- Veo ----------------------------------------------------------------------------------------

    def _start_video(self, req: Request, model: str) -> Reply:
        if model not in VEO_MODELS:
            return self._unknown_model(model, "predictLongRunning")
        body = req.json()
        instances = body.get("instances") if isinstance(body, dict) else None
        if not instances or not isinstance(instances[0], dict):
            return _error(400, "* PredictLongRunningRequest: instances is required.")
        instance = instances[0]
        if not instance.get("prompt") and not instance.get("image"):
            return _error(400, "A prompt or an image is required.")
        image = instance.get("image")
        if image is not None:
            if set(image) - {"bytesBase64Encoded", "mimeType"} or not image.get("bytesBase64Encoded"):
                return _error(400, "Invalid image: use bytesBase64Encoded and mimeType.")
        params = body.get("parameters") or {}
        allowed = {
            "sampleCount",
            "aspectRatio",
            "resolution",
            "durationSeconds",
            "negativePrompt",
            "personGeneration",
            "enhancePrompt",
        }
        unknown = set(params) - allowed
        if unknown:
            return _error(
                400,
                f"Invalid JSON payload received. Unknown name \"{sorted(unknown)[0]}\" at 'parameters': Cannot find field.",
            )
        veo2 = model.startswith("veo-2")
        seconds = params.get("durationSeconds", 8)
        if (veo2 and seconds not in (5, 6, 7, 8)) or (not veo2 and seconds != 8):
            return _error(400, f"durationSeconds {seconds} is out of range for {model}.")
        if params.get("aspectRatio", "16:9") not in ("16:9", "9:16"):
            return _error(400, f"Unsupported aspect ratio: {params.get('aspectRatio')}.")
        if params.get("resolution", "720p") not in (("720p",) if veo2 else ("720p", "1080p")):
            return _error(400, f"Unsupported resolution: {params.get('resolution')} for {model}.")
        n = int(params.get("sampleCount") or 1)
        if not 1 <= n <= (2 if veo2 else 1):
            return _error(400, f"sampleCount {n} is out of range for {model}.")
        name = f"models/{model}/operations/{secrets.token_hex(6)}"
        with self._lock:
            self.operations[name] = {"model": model, "body": body, "started": time.monotonic(), "files": None}
        self.jobs_started.set()
        self.stats.incr("billed")
        self.stats.incr("operations")
        return Reply.json(200, {"name": name})

    def _get_operation(self, req: Request) -> Reply:
        name = req.path.removeprefix("/v1beta/")
        with self._lock:
            op = self.operations.get(name)
        if op is None:
            return _error(404, f"Operation {name} not found.")
        self.stats.incr("polls")
        if time.monotonic() - op["started"] < self.video_s:
            return Reply.json(200, {"name": name})
        if op["files"] is None:
            # Made outside the lock (ffmpeg takes a while); a second poll racing here makes the same bytes.
            params = op["body"].get("parameters") or {}
            prompt = str(op["body"]["instances"][0].get("prompt") or "image")
            made = [
                self.video_bytes(op["model"], self.seed_for(prompt, i))
                for i in range(int(params.get("sampleCount") or 1))
            ]
            with self._lock:
                if op["files"] is None:
                    names: list[str] = []
                    for data in made:
                        file_id = f"{next(self._ids):04d}{secrets.token_hex(4)}"
                        self.files[file_id] = data
                        names.append(file_id)
                    op["files"] = names
        samples = [{"video": {"uri": f"{self.origin}/v1beta/files/{f}:download?alt=media"}} for f in op["files"]]
        return Reply.json(
            200,
            {
                "name": name,
                "done": True,
                "response": {
                    "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse",
                    "generateVideoResponse": {"generatedSamples": samples},
                },
            },
        )

    def video_bytes(self, model: str, seed: int) -> bytes:
        """The MP4 the fake makes for a model and seed (Veo 3: with a soundtrack); cached."""
        key = (model, seed)
        with self._lock:
            if key in self._videos:
                return self._videos[key]
        data = media.mp4_bytes(64, 48, frames=8, fps=24, seed=seed)
        if not model.startswith("veo-2"):
            import mediagen as mg

            tone = mg.Audio(media.wav_bytes(8 / 24, sample_rate=24000, frequency=220.0 + seed % 400))
            data = mg.mux(mg.Video(data), tone).read()
        with self._lock:
            self._videos[key] = data
        return data

    def _download(self, req: Request) -> Reply:
        file_id = req.path.removeprefix("/v1beta/files/").removesuffix(":download")
        if file_id not in self.files or req.arg("alt") != "media":
            return _error(404, f"File {file_id} not found.")
        token = secrets.token_urlsafe(16)
        with self._lock:
            self._tokens[token] = file_id
        # Storage is another host, as on Google's side (`localhost` is not `127.0.0.1` to a client).
        return Reply(302, b"", "text/plain", {"Location": f"http://localhost:{self.port}/storage/{token}"})

    def _storage(self, req: Request) -> Reply:
        if req.header("x-goog-api-key") or req.arg("key"):
            self.stats.incr("key_leaked")
        token = req.path.removeprefix("/storage/")
        with self._lock:
            file_id = self._tokens.get(token)
        if file_id is None:
            return Reply(403, b"<Error><Code>AccessDenied</Code></Error>", "application/xml")
        self.stats.incr("downloads")
        return Reply(200, self.files[file_id], "video/mp4")
