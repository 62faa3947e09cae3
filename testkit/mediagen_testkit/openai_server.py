"""A loopback fake of OpenAI's images and speech API (v1), for offline tests.

:class:`OpenAIServer` answers what the official ``openai`` client and mediagen's OpenAI backend send:

- ``POST /v1/images/generations`` (JSON) and ``POST /v1/images/edits`` (multipart: ``image`` or
  several ``image[]``, optional ``mask``), answered with ``b64_json`` images of the size asked for,
  the way GPT image models answer (they have no ``url`` output);
- ``POST /v1/audio/speech``, answered with a WAV that carries ``0xFFFFFFFF`` in its RIFF and data
  sizes, as OpenAI's streamed WAV does (24 kHz, mono, 16-bit), or raw ``pcm``.

It checks what the real API checks (bearer key, model, size rules per model, ``n``, quality, formats,
the mask's alpha channel and size) and answers in OpenAI's error shape
(``{"error": {"message", "type", "param", "code"}}``). Each image's colour comes from its prompt and
index (:meth:`OpenAIServer.colour_for`), so a test can check it got the right bytes back.

Faults come from :class:`mediagen_testkit.fake_http.Faults`; ``stats["billed"]`` counts the jobs that
ran (images made, speech spoken), which is what a duplicate create would double.

Example:
    ```python
    from openai import OpenAI
    from mediagen_testkit.openai_server import OpenAIServer

    with OpenAIServer() as server:
        client = OpenAI(api_key=server.api_key, base_url=server.url, max_retries=0)
        client.images.generate(model="gpt-image-2", prompt="a fox", size="1024x1024")
        assert server.stats["billed"] == 1
    ```
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import struct
import threading
import time
from typing import Any, cast

import numpy as np

from . import media_fixtures as media
from .fake_http import Faults, LoopbackServer, Reply, Request, form_name, parse_multipart
from .media_fixtures import ImageFormat

__all__ = [
    "ARBITRARY_SIZE_MODELS",
    "STANDARD_SIZE_MODELS",
    "SPEECH_MODELS",
    "VOICES",
    "OpenAIServer",
    "streamed_wav",
]

ARBITRARY_SIZE_MODELS = frozenset(
    {
        "gpt-image-2",
        "gpt-image-2-2026-04-21",
        "gpt-image-2.5-sunburst",
        "gpt-image-2.5-sunburst-2026-09-08",
        "gpt-image-2.5-flare",
        "gpt-image-2.5-flare-2026-09-08",
    }
)
"""Models that take any `WxH` (sides multiples of 16, ratio within 1:3..3:1, at most 3840x2160)."""
STANDARD_SIZE_MODELS = frozenset(
    {"gpt-image-1.5", "gpt-image-1-mini", "chatgpt-image-latest", "gpt-image-2.6-sunburst", "gpt-image-2.6-flare"}
)
"""Models that take only `1024x1024`, `1536x1024`, `1024x1536` or `auto`."""
SPEECH_MODELS = frozenset({"gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15", "tts-1", "tts-1-hd"})
VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar", "fable", "onyx", "nova"}
)
_RETIRED = {"dall-e-2", "dall-e-3", "gpt-image-1"}
_STANDARD_SIZES = ("1024x1024", "1536x1024", "1024x1536")
_QUALITIES = {"low", "medium", "high", "auto"}
_SPEECH_RATE = 24_000


def streamed_wav(samples: np.ndarray[Any, Any], sample_rate: int = _SPEECH_RATE) -> bytes:
    """A 16-bit mono WAV whose RIFF and data sizes are 0xFFFFFFFF, as a streamed WAV is written."""
    pcm = bytes((np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes())
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return (
        b"RIFF"
        + b"\xff\xff\xff\xff"
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + b"\xff\xff\xff\xff"
        + pcm
    )


def _error(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    return Reply.json(status, {"error": {"message": message, "type": type_, "param": param, "code": code}}, headers)


class OpenAIServer(LoopbackServer):
    """OpenAI's images and speech endpoints on `127.0.0.1`.

    Args:
        api_key: The key the server accepts (`Authorization: Bearer <key>`).
        faults: Faults to inject (see `fake_http.Faults`).
        job_s: Seconds each billable job takes (image generation, speech), so tests can cancel one.
        speech_s_per_char: Seconds of speech per character of input.
        echo_key_in_errors: Quote a rejected key whole in the 401 body (a careless server, or a
            proxy in between, may): for tests that the key is hidden all the same. Each echo counts
            in `stats["keys_echoed"]`.
    """

    server_name = "openai-fake/1.0"

    def __init__(
        self,
        *,
        api_key: str = "sk-test-loopback-0123456789",
        faults: Faults | None = None,
        job_s: float = 0.0,
        speech_s_per_char: float = 0.02,
        port: int = 0,
        echo_key_in_errors: bool = False,
    ) -> None:
        super().__init__(faults=faults, port=port)
        self.api_key = api_key
        self.echo_key_in_errors = echo_key_in_errors
        self.job_s = job_s
        self.speech_s_per_char = speech_s_per_char
        self.edits: list[dict[str, Any]] = []
        """What each accepted edit received: `images` (bytes each), `mask` (bytes or None), `fields`."""
        self.jobs_started = threading.Event()
        """Set when a billable job starts (tests wait on it before cancelling)."""

    @property
    def url(self) -> str:
        """The base URL to give a client: `http://127.0.0.1:<port>/v1`."""
        return f"{self.origin}/v1"

    # -- routing ------------------------------------------------------------------------------------

    def route(self, req: Request) -> tuple[str, bool, Any]:
        table = {
            ("POST", "/v1/images/generations"): ("images.generate", self._generate),
            ("POST", "/v1/images/edits"): ("images.edit", self._edit),
            ("POST", "/v1/audio/speech"): ("audio.speech", self._speech),
        }
        name, fn = table.get((req.method, req.path), (f"{req.method} {req.path}", None))
        return name, fn is not None, fn

    def check_auth(self, req: Request, route: str) -> Reply | None:
        value = req.header("authorization") or ""
        scheme, _, key = value.partition(" ")
        if scheme.lower() == "bearer" and key.strip() == self.api_key:
            return None
        if not value:
            return _error(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                code=None,
            )
        shown = key[:3] + "*" * 4 + key[-4:] if len(key) > 8 else "****"
        if self.echo_key_in_errors:
            shown = key.strip()
            self.stats.incr("keys_echoed")
        return _error(
            401,
            f"Incorrect API key provided: {shown}. You can find your API key at https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        )

    def fault_reply(self, status: int, retry_after_s: float | None) -> Reply:
        if status == 429:
            headers = {"x-ratelimit-limit-requests": "50", "x-ratelimit-remaining-requests": "0"}
            if retry_after_s is not None:
                headers["retry-after"] = f"{retry_after_s:g}"
            return _error(
                429,
                "Rate limit reached for images per min. Please try again in 1s.",
                type_="requests",
                code="rate_limit_exceeded",
                headers=headers,
            )
        if status == 503:
            return _error(503, "The engine is currently overloaded, please try again later", type_="server_error")
        return _error(
            status, "The server had an error while processing your request. Sorry about that!", type_="server_error"
        )

    def not_found(self, req: Request) -> Reply:
        return _error(404, f"Invalid URL ({req.method} {req.path})")

    # -- images -------------------------------------------------------------------------------------

    @staticmethod
    def colour_for(prompt: str, index: int = 0) -> tuple[int, int, int]:
        """The colour of output `index` for `prompt` (what a test compares decoded pixels with)."""
        return media.seed_colour(OpenAIServer.seed_for(prompt, index))

    @staticmethod
    def seed_for(prompt: str, index: int = 0) -> int:
        """The seed the fake draws output `index` of `prompt` with."""
        return int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16) + index

    def _check_image_params(self, fields: dict[str, Any]) -> tuple[Reply | None, tuple[int, int]]:
        model = str(fields.get("model") or "gpt-image-1.5")
        if model in _RETIRED:
            return _error(
                404,
                f"The model `{model}` has been deprecated, learn more here: https://platform.openai.com/docs/deprecations",
                code="model_not_found",
            ), (0, 0)
        if model not in ARBITRARY_SIZE_MODELS | STANDARD_SIZE_MODELS:
            return _error(
                404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found"
            ), (0, 0)
        prompt = fields.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            return _error(
                400, "Missing required parameter: 'prompt'.", param="prompt", code="missing_required_parameter"
            ), (0, 0)
        if len(prompt) > 32000:
            return _error(400, "Invalid 'prompt': string too long.", param="prompt", code="string_above_max_length"), (
                0,
                0,
            )
        n = int(fields.get("n") or 1)
        if not 1 <= n <= 10:
            return _error(
                400, f"Invalid 'n': integer must be between 1 and 10, got {n}.", param="n", code="invalid_value"
            ), (0, 0)
        quality = fields.get("quality")
        if quality is not None and quality not in _QUALITIES | (
            {"xhigh", "max"} if model.startswith("gpt-image-2.5") else set()
        ):
            return _error(
                400,
                f"Invalid value: '{quality}'. Supported values are: 'low', 'medium', 'high', and 'auto'.",
                param="quality",
                code="invalid_value",
            ), (0, 0)
        fmt = fields.get("output_format") or "png"
        if fmt not in ("png", "jpeg", "webp"):
            return _error(
                400,
                f"Invalid value: '{fmt}'. Supported values are: 'png', 'jpeg', and 'webp'.",
                param="output_format",
                code="invalid_value",
            ), (0, 0)
        if fields.get("background") == "transparent" and fmt == "jpeg":
            return _error(
                400,
                "Transparent background requires output_format png or webp.",
                param="background",
                code="invalid_value",
            ), (0, 0)
        if fields.get("response_format") is not None:
            return _error(
                400, "Unknown parameter: 'response_format'.", param="response_format", code="unknown_parameter"
            ), (0, 0)
        size = str(fields.get("size") or "auto")
        if size == "auto":
            return None, (1024, 1024)
        if model in STANDARD_SIZE_MODELS:
            if size not in _STANDARD_SIZES:
                return _error(
                    400,
                    f"Invalid value: '{size}'. Supported values are: '1024x1024', '1024x1536', '1536x1024', and 'auto'.",
                    param="size",
                    code="invalid_value",
                ), (0, 0)
        try:
            w, h = (int(x) for x in size.split("x"))
        except ValueError:
            return _error(400, f"Invalid value: '{size}'.", param="size", code="invalid_value"), (0, 0)
        if model in ARBITRARY_SIZE_MODELS:
            problem = None
            if w % 16 or h % 16:
                problem = "width and height must both be divisible by 16"
            elif max(w / h, h / w) > 3:
                problem = "the aspect ratio must be between 1:3 and 3:1"
            elif max(w, h) > 3840 or w * h > 3840 * 2160:
                problem = "the maximum supported resolution is 3840x2160"
            if problem:
                return _error(400, f"Invalid size '{size}': {problem}.", param="size", code="invalid_value"), (0, 0)
        return None, (w, h)

    def _images(self, fields: dict[str, Any], size: tuple[int, int], *, edit: bool) -> Reply:
        self.jobs_started.set()
        if self.job_s:
            time.sleep(self.job_s)
        n = int(fields.get("n") or 1)
        fmt = str(fields.get("output_format") or "png")
        prompt = str(fields["prompt"])
        data = []
        for i in range(n):
            image = media.image_bytes(size[0], size[1], seed=self.seed_for(prompt, i), fmt=cast(ImageFormat, fmt))
            data.append({"b64_json": base64.b64encode(image).decode()})
        self.stats.incr("billed")
        self.stats.incr("images_made", n)
        tokens = 272 * n * max(1, size[0] * size[1] // (1024 * 1024))
        return Reply.json(
            200,
            {
                "created": int(time.time()),
                "data": data,
                "background": fields.get("background") or "opaque",
                "output_format": fmt,
                "quality": fields.get("quality") or "medium",
                "size": f"{size[0]}x{size[1]}",
                "usage": {
                    "input_tokens": len(prompt.split()) + (258 if edit else 0),
                    "input_tokens_details": {"image_tokens": 258 if edit else 0, "text_tokens": len(prompt.split())},
                    "output_tokens": tokens,
                    "total_tokens": tokens + len(prompt.split()),
                },
            },
        )

    def _generate(self, req: Request) -> Reply:
        try:
            fields = req.json()
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.")
        if not isinstance(fields, dict):
            return _error(400, "We could not parse the JSON body of your request.")
        if any(k in fields for k in ("image", "mask")):
            return _error(400, "Unknown parameter: 'image'.", param="image", code="unknown_parameter")
        problem, size = self._check_image_params(fields)
        return problem or self._images(fields, size, edit=False)

    def _edit(self, req: Request) -> Reply:
        content_type = req.header("content-type") or ""
        if not content_type.startswith("multipart/form-data"):
            return _error(400, "Invalid Content-Type header (expected multipart/form-data).")
        fields: dict[str, Any] = {}
        images: list[bytes] = []
        mask: bytes | None = None
        for headers, data in parse_multipart(req.body, content_type):
            name, _filename = form_name(headers)
            if name in ("image", "image[]"):
                images.append(data)
            elif name == "mask":
                mask = data
            elif name:
                fields[name] = data.decode()
        if not images:
            return _error(400, "Missing required parameter: 'image'.", param="image", code="missing_required_parameter")
        if len(images) > 16:
            return _error(400, "Invalid 'image': too many images (at most 16).", param="image", code="invalid_value")
        from PIL import Image

        decoded = []
        for i, data in enumerate(images):
            try:
                img = Image.open(io.BytesIO(data))
                img.load()
            except Exception:
                return _error(
                    400,
                    f"Invalid image file or mode for image {i + 1}, please check your image file.",
                    param="image",
                    code="invalid_image_file",
                )
            if img.format not in ("PNG", "JPEG", "WEBP"):
                return _error(
                    400,
                    f"Invalid image file or mode for image {i + 1}: {img.format} is not supported (png, webp or jpg).",
                    param="image",
                    code="invalid_image_file",
                )
            decoded.append(img)
        if mask is not None:
            try:
                m = Image.open(io.BytesIO(mask))
                m.load()
            except Exception:
                return _error(
                    400,
                    "Invalid mask image file, please check your image file.",
                    param="mask",
                    code="invalid_image_file",
                )
            if m.format != "PNG" or "A" not in m.getbands():
                return _error(
                    400,
                    "Invalid input image - format must be in ['RGBA', 'LA', 'L'], got RGB.",
                    param="mask",
                    code="invalid_image_file",
                )
            if m.size != decoded[0].size:
                return _error(
                    400,
                    "Invalid mask image - mask size does not match image size.",
                    param="mask",
                    code="invalid_image_file",
                )
        for key in ("n",):
            if key in fields:
                fields[key] = int(fields[key])
        problem, size = self._check_image_params(fields)
        if problem:
            return problem
        if fields.get("size") in (None, "auto"):
            size = decoded[0].size
        with self._lock:
            self.edits.append({"images": images, "mask": mask, "fields": dict(fields)})
        return self._images(fields, size, edit=True)

    # -- speech -------------------------------------------------------------------------------------

    def _speech(self, req: Request) -> Reply:
        try:
            fields = req.json()
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.")
        model = fields.get("model")
        if model not in SPEECH_MODELS:
            return _error(
                404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found"
            )
        text = fields.get("input")
        if not isinstance(text, str) or not text:
            return _error(400, "Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
        if len(text) > 4096:
            return _error(
                400,
                "[{'type': 'string_too_long', 'loc': ('body', 'input'), 'msg': 'String should have at most 4096 characters'}]",
                param="input",
            )
        voice = fields.get("voice")
        if isinstance(voice, dict):
            voice = voice.get("id")
        if voice not in VOICES and not (isinstance(voice, str) and voice.startswith("voice_")):
            return _error(
                400,
                f"Invalid value: '{voice}'. Supported values are: {', '.join(sorted(VOICES))}.",
                param="voice",
                code="invalid_value",
            )
        if fields.get("instructions") and str(model).startswith("tts-1"):
            return _error(
                400, "instructions is not supported for this model.", param="instructions", code="unsupported_parameter"
            )
        speed = float(fields.get("speed") or 1.0)
        if not 0.25 <= speed <= 4.0:
            return _error(
                400, f"Invalid 'speed': {speed} is not between 0.25 and 4.0.", param="speed", code="invalid_value"
            )
        fmt = fields.get("response_format") or "mp3"
        if fmt not in ("wav", "pcm"):
            return _error(
                400,
                f"the loopback server makes 'wav' and 'pcm' only, not {fmt!r}",
                param="response_format",
                code="invalid_value",
            )
        self.jobs_started.set()
        if self.job_s:
            time.sleep(self.job_s)
        samples = self.speech_samples(text, str(voice), speed)
        self.stats.incr("billed")
        if fmt == "pcm":
            return Reply(200, (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes(), "audio/pcm")
        return Reply(200, streamed_wav(samples), "audio/wav")

    def speech_samples(self, text: str, voice: str, speed: float = 1.0) -> np.ndarray[Any, Any]:
        """The float samples the fake speaks for `text` (24 kHz): a tone per voice, as long as the text."""
        n = max(_SPEECH_RATE // 10, round(len(text) * self.speech_s_per_char / speed * _SPEECH_RATE))
        frequency = 200.0 + (int(hashlib.sha256(voice.encode()).hexdigest()[:4], 16) % 400)
        t = np.arange(n) / _SPEECH_RATE
        return (0.3 * np.sin(2 * math.pi * frequency * t)).astype(np.float32)
