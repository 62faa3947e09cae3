"""OpenAI's images and speech API, served from mediagen models.

| method | path | |
|---|---|---|
| POST | `/v1/images/generations` | `model` (`owner/name`), `prompt`, `n`, `size` (`WxH`), `response_format` (`url` or `b64_json`) |
| POST | `/v1/images/edits` | multipart: `image`, optional `mask`, `prompt`, `model`, `n`, `size`, `response_format` |
| POST | `/v1/audio/speech` | `model`, `input`, `voice`, `response_format` (`wav`, the default here, `flac` or `mp3`) |

Each call is a prediction like any other (stored, listed, counted); the answer waits for it. Beyond
OpenAI's fields, `seed`, `negative_prompt`, `steps` and `guidance` are accepted (the official
client sends them with `extra_body=`). Settings OpenAI has and mediagen does not (`quality`,
`style`, `user`) are accepted and ignored; anything else is refused.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .._media import sniff_media_type, to_data_url
from .auth import error_response
from .predictions import InputError, LimitError
from .replicate_api import base_url, state_of

if TYPE_CHECKING:
    from .schema import ModelDescription
    from .store import PredictionRecord

__all__ = ["routes"]

_EXTENSIONS = ("seed", "negative_prompt", "steps", "guidance")
_IGNORED = ("quality", "style", "user", "moderation", "background")
_AUDIO_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg"}


class _Refused(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


def _model(request: Request, name: Any, modality: str) -> ModelDescription:
    state = state_of(request)
    candidates = [m for m in state.models.values() if m.modality == modality]
    if name is None and len(candidates) == 1:
        return candidates[0]
    if not isinstance(name, str) or "/" not in name:
        raise _Refused(400, "model is required: the OWNER/NAME of a served model", param="model")
    owner, _, short = name.partition("/")
    found = state.model(owner, short)
    if found is None:
        raise _Refused(404, f"The model '{name}' does not exist", param="model", code="model_not_found")
    if found.modality != modality:
        raise _Refused(400, f"{name} makes {found.modality}, not {modality}", param="model")
    return found


def _size(value: Any) -> dict[str, int]:
    if value in (None, "auto"):
        return {}
    try:
        width, height = (int(x) for x in str(value).lower().split("x"))
    except ValueError:
        raise _Refused(400, f"size must look like 512x512, got {value!r}", param="size") from None
    return {"width": width, "height": height}


async def _run(request: Request, model: ModelDescription, given: dict[str, Any]) -> PredictionRecord:
    state = state_of(request)
    try:
        record = await state.service.create(
            model, given, token=request.state.token, origin=base_url(request), trace_headers=request.headers
        )
    except InputError as exc:
        first = exc.fields[0]["field"].removeprefix("input.") if exc.fields else None
        raise _Refused(400, str(exc), param=first) from exc
    except LimitError as exc:
        raise _Refused(429, str(exc), code="insufficient_quota" if exc.budget else "rate_limit_exceeded") from exc
    await state.service.wait(record, None)
    if record.status != "succeeded":
        raise _Refused(500 if record.status == "failed" else 499, record.error or f"the generation {record.status}")
    return record


def _image_data(request: Request, record: PredictionRecord, response_format: str) -> list[dict[str, Any]]:
    if response_format == "url":
        return [{"url": url, "revised_prompt": None} for url in record.output_urls(base_url(request)) or []]
    files = state_of(request).store.files / record.id / record.file_key
    return [
        {"b64_json": base64.b64encode((files / name).read_bytes()).decode(), "revised_prompt": None}
        for name in record.output or []
    ]


def _common(body: dict[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    unknown = sorted(set(body) - set(known) - set(_IGNORED) - set(_EXTENSIONS))
    if unknown:
        raise _Refused(400, f"Unrecognized request argument supplied: {', '.join(unknown)}", param=unknown[0])
    return {k: body[k] for k in _EXTENSIONS if body.get(k) is not None}


def _response_format(value: Any) -> str:
    chosen = value or "url"
    if chosen not in ("url", "b64_json"):
        raise _Refused(400, "response_format must be 'url' or 'b64_json'", param="response_format")
    return str(chosen)


async def _guarded(request: Request, handler: Any) -> Response:
    try:
        response: Response = await handler(request)
        return response
    except _Refused as exc:
        state_of(request).count_error("openai_" + (exc.code or str(exc.status)))
        headers = {"retry-after": "1"} if exc.status == 429 else None
        return error_response(request.url.path, exc.status, str(exc), param=exc.param, code=exc.code, headers=headers)


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _Refused(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise _Refused(400, "the body must be a JSON object")
    return body


async def _generations(request: Request) -> Response:
    body = await _json(request)
    given = _common(body, ("model", "prompt", "n", "size", "response_format"))
    model = _model(request, body.get("model"), "image")
    response_format = _response_format(body.get("response_format"))
    given.update(prompt=body.get("prompt"), n=body.get("n") or 1, **_size(body.get("size")))
    record = await _run(request, model, given)
    return JSONResponse({"created": int(time.time()), "data": _image_data(request, record, response_format)})


async def _edits(request: Request) -> Response:
    form = await request.form(max_files=4, max_fields=32)
    try:
        fields: dict[str, Any] = {}
        files: dict[str, str] = {}
        for key, value in form.multi_items():
            key = key.removesuffix("[]")
            if hasattr(value, "read"):
                data = await value.read()
                files.setdefault(key, to_data_url(data, getattr(value, "content_type", None)))
            else:
                fields[key] = value
    finally:
        await form.close()
    if "image" not in files:
        raise _Refused(400, "image is required: the picture to edit (a file)", param="image")
    given = _common(fields, ("model", "prompt", "n", "size", "response_format"))
    for name in ("seed", "steps"):
        if name in given:
            given[name] = _number(given[name], name, int)
    if "guidance" in given:
        given["guidance"] = _number(given["guidance"], "guidance", float)
    model = _model(request, fields.get("model"), "image")
    response_format = _response_format(fields.get("response_format"))
    given.update(
        prompt=fields.get("prompt"),
        n=_number(fields.get("n") or 1, "n", int),
        image=files["image"],
        **_size(fields.get("size")),
    )
    if "mask" in files:
        given["mask"] = files["mask"]
    record = await _run(request, model, given)
    return JSONResponse({"created": int(time.time()), "data": _image_data(request, record, response_format)})


def _number(value: Any, name: str, kind: type[int] | type[float]) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise _Refused(400, f"{name} must be a number", param=name) from None


async def _speech(request: Request) -> Response:
    body = await _json(request)
    given = _common(body, ("model", "input", "voice", "response_format", "speed", "instructions"))
    model = _model(request, body.get("model"), "audio")
    fmt = body.get("response_format") or "wav"
    if fmt not in _AUDIO_TYPES:
        raise _Refused(400, f"response_format {fmt!r} is not made here; use one of {', '.join(_AUDIO_TYPES)}")
    properties = model.input_properties
    given["prompt"] = body.get("input")
    if "speech" in (properties.get("kind", {}).get("enum") or ()):
        given["kind"] = "speech"
    if body.get("voice") is not None and "voice" in properties:
        given["voice"] = body["voice"]
    record = await _run(request, model, given)
    path = state_of(request).store.files / record.id / record.file_key / (record.output or ["?"])[0]
    data = path.read_bytes()
    if sniff_media_type(data) != _AUDIO_TYPES[fmt]:
        try:
            data = await asyncio.to_thread(_convert_audio, data, _AUDIO_TYPES[fmt])
        except Exception as exc:  # no encoder for it here (an optional soundfile codec)
            raise _Refused(400, f"cannot encode {fmt} on this server ({exc}); ask for wav") from exc
    return Response(data, media_type=_AUDIO_TYPES[fmt])


def _convert_audio(data: bytes, media_type: str) -> bytes:
    from ..artifacts import Audio

    return Audio(data)._encode_as(media_type)


async def generations(request: Request) -> Response:
    """`POST /v1/images/generations`."""
    return await _guarded(request, _generations)


async def edits(request: Request) -> Response:
    """`POST /v1/images/edits`."""
    return await _guarded(request, _edits)


async def speech(request: Request) -> Response:
    """`POST /v1/audio/speech`."""
    return await _guarded(request, _speech)


def routes() -> list[Route]:
    """The routes of the OpenAI-compatible API."""
    return [
        Route("/v1/images/generations", generations, methods=["POST"]),
        Route("/v1/images/edits", edits, methods=["POST"]),
        Route("/v1/audio/speech", speech, methods=["POST"]),
    ]
