"""Replicate's prediction API, served from mediagen models.

| method | path | |
|---|---|---|
| POST | `/v1/models/{owner}/{name}/predictions` | create (`Prefer: wait[=N]`, `Cancel-After`, webhooks) |
| POST | `/v1/predictions` | create by `version` (`owner/name`, `owner/name:<id>` or `<id>`) |
| GET | `/v1/predictions` | the token's predictions, newest first, `page_size` (100) a page (`next` cursor, `created_after`) |
| GET | `/v1/predictions/{id}` | one prediction |
| POST | `/v1/predictions/{id}/cancel` | cancel; a running one ends `canceled` |
| GET | `/v1/models`, `/v1/models/{owner}/{name}` | model objects, `latest_version.openapi_schema` included |
| GET | `/v1/models/{owner}/{name}/versions[/{id}]` | versions |
| POST | `/v1/files` | upload an input file (multipart `content`); `urls.get` is its capability URL |
| GET | `/v1/files` | the token's uploads, newest first (`next` is an absolute URL) |
| GET, DELETE | `/v1/files/{id}` | one of the token's uploads; DELETE removes its bytes too (204) |
| GET | `/v1/webhooks/default/secret` | this token's webhook signing secret |
| GET | `/v1/account` | who the token is |

What the official clients rely on is kept: a bare `Prefer: wait` waits 60 s, and a prediction
not done by then is answered as `starting` (replicate-python treats any other status of a sync
answer as final); outputs are absolute URLs built from the host the caller used.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .auth import error_response
from .predictions import InputError, LimitError, parse_cancel_after
from .store import PredictionRecord, UploadRecord, iso

if TYPE_CHECKING:
    from .app import ServeState
    from .schema import ModelDescription

__all__ = ["routes", "base_url", "state_of"]

_PREFER = re.compile(r"^\s*wait(?:\s*=\s*(\d+))?\s*$")
_MAX_WAIT_S = 60
_CREATE_KEYS = frozenset({"input", "webhook", "webhook_events_filter", "webhook_completed", "stream"})


def state_of(request: Request) -> ServeState:
    """The server's state."""
    state: ServeState = request.app.state.mediagen
    return state


def base_url(request: Request) -> str:
    """Scheme, host and root path the caller used, without a trailing slash."""
    return str(request.base_url).rstrip("/")


def _not_found(request: Request, what: str = "The requested resource could not be found.") -> Response:
    return error_response(request.url.path, 404, what)


def _invalid(request: Request, fields: list[dict[str, str]]) -> Response:
    detail = "".join(f"- {f['field']}: {f['description']}\n" for f in fields)
    return error_response(request.url.path, 422, detail, extra={"invalid_fields": fields})


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(
            [{"type": "invalid_json", "field": "", "description": f"the body is not JSON: {exc}"}]
        ) from exc


def _prefer_wait(request: Request) -> float | None:
    header = request.headers.get("prefer")
    if header is None:
        return None
    match = _PREFER.match(header)
    if match is None:
        raise InputError([{"type": "invalid", "field": "Prefer", "description": "use 'wait' or 'wait=N' (N 1..60)"}])
    if match[1] is None:
        return float(_MAX_WAIT_S)
    seconds = int(match[1])
    if not 1 <= seconds <= _MAX_WAIT_S:
        raise InputError([{"type": "invalid", "field": "Prefer", "description": "wait=N takes N from 1 to 60"}])
    return float(seconds)


async def _create(request: Request, model: ModelDescription, body: dict[str, Any]) -> Response:
    state = state_of(request)
    try:
        unknown = sorted(set(body) - _CREATE_KEYS)
        if unknown:
            raise InputError(
                [
                    {
                        "type": "additional_property_not_allowed",
                        "field": "",
                        "description": f"Additional property {name} is not allowed",
                    }
                    for name in unknown
                ]
            )
        if "input" not in body:
            raise InputError([{"type": "required", "field": "", "description": "input is required"}])
        wait_s = _prefer_wait(request)
        cancel_after = request.headers.get("cancel-after")
        webhook = body.get("webhook")
        events = body.get("webhook_events_filter")
        if webhook is None and body.get("webhook_completed"):
            webhook, events = body["webhook_completed"], ["completed"]
        record = await state.service.create(
            model,
            body["input"],
            token=request.state.token,
            origin=base_url(request),
            webhook=webhook,
            webhook_events=events,
            cancel_after_s=None
            if cancel_after is None
            else parse_cancel_after(cancel_after, state.settings.min_cancel_after_s),
            trace_headers=request.headers,
        )
    except InputError as exc:
        state.count_error("invalid_input")
        return _invalid(request, exc.fields)
    except LimitError as exc:
        if exc.budget:
            state.count_error("budget_exceeded")
            return error_response(request.url.path, 402, str(exc), title="Billing required")
        state.count_error("rate_limited")
        return error_response(
            request.url.path, 429, str(exc), headers={"retry-after": str(max(1, round(exc.retry_after)))}
        )
    base = base_url(request)
    headers = {"location": f"{base}/v1/predictions/{record.id}"}
    if wait_s is None:
        return JSONResponse(record.to_json(base), status_code=201, headers=headers)
    done = await state.service.wait(record, wait_s)
    headers["preference-applied"] = f"wait={int(wait_s)}"
    # Not done in time: "starting", the one status the official clients read as "go and poll".
    return JSONResponse(
        record.to_json(base, status=None if done else "starting"), status_code=201 if done else 202, headers=headers
    )


async def create_by_model(request: Request) -> Response:
    """`POST /v1/models/{owner}/{name}/predictions`."""
    model = state_of(request).model(request.path_params["owner"], request.path_params["name"])
    if model is None:
        return _not_found(request)
    try:
        body = await _json_body(request)
    except InputError as exc:
        return _invalid(request, exc.fields)
    if not isinstance(body, dict):
        return _invalid(request, [{"type": "invalid_type", "field": "", "description": "the body must be an object"}])
    return await _create(request, model, body)


async def create_by_version(request: Request) -> Response:
    """`POST /v1/predictions` with `version`."""
    state = state_of(request)
    try:
        body = await _json_body(request)
    except InputError as exc:
        return _invalid(request, exc.fields)
    if not isinstance(body, dict) or not isinstance(body.get("version"), str):
        return _invalid(request, [{"type": "required", "field": "", "description": "version is required"}])
    version = body.pop("version")
    model = state.model_for_version(version)
    if model is None:
        return error_response(
            request.url.path,
            422,
            "The specified version does not exist (or perhaps you don't have permission to use it?)",
            title="Invalid version or not permitted",
        )
    return await _create(request, model, body)


async def get_prediction(request: Request) -> Response:
    """`GET /v1/predictions/{id}`."""
    record = await state_of(request).service.get(request.path_params["id"], request.state.token)
    if record is None:
        return _not_found(request)
    return JSONResponse(record.to_json(base_url(request)))


async def cancel_prediction(request: Request) -> Response:
    """`POST /v1/predictions/{id}/cancel`."""
    service = state_of(request).service
    record = await service.get(request.path_params["id"], request.state.token)
    if record is None:
        return _not_found(request)
    record = await service.cancel(record)
    return JSONResponse(record.to_json(base_url(request)))


_Row = TypeVar("_Row", PredictionRecord, UploadRecord)


def _cursor(record: PredictionRecord | UploadRecord) -> str:
    return base64.urlsafe_b64encode(json.dumps([record.created_at, record.id]).encode()).decode().rstrip("=")


def _read_cursor(text: str) -> tuple[float, str]:
    try:
        created, prediction_id = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        return float(created), str(prediction_id)
    except (ValueError, TypeError) as exc:
        raise InputError(
            [{"type": "invalid", "field": "cursor", "description": "not a cursor of this server"}]
        ) from exc


async def list_predictions(request: Request) -> Response:
    """`GET /v1/predictions`: newest first, `next` an absolute URL (the official client follows it)."""
    state = state_of(request)
    token = request.state.token
    try:
        cursor = request.query_params.get("cursor")
        before = _read_cursor(cursor) if cursor else None
        after_text = request.query_params.get("created_after")
        after = None
        if after_text:
            try:
                after = datetime.fromisoformat(after_text.replace("Z", "+00:00")).timestamp()
            except ValueError as exc:
                raise InputError(
                    [{"type": "invalid", "field": "created_after", "description": "not an ISO 8601 time"}]
                ) from exc
    except InputError as exc:
        return _invalid(request, exc.fields)
    size = state.settings.page_size
    records = await asyncio.to_thread(
        state.store.page, token.name if token else "", before=before, created_after=after, limit=size + 1
    )
    base = base_url(request)
    return _page(request, "/v1/predictions", records, size, lambda stored: state.service.fresh(stored).to_json(base))


async def list_models(request: Request) -> Response:
    """`GET /v1/models`."""
    state = state_of(request)
    base = base_url(request)
    results = [await state.model_json(m, base) for m in state.models.values()]
    return JSONResponse({"previous": None, "next": None, "results": results})


async def get_model(request: Request) -> Response:
    """`GET /v1/models/{owner}/{name}`: the full model object replicate-python validates."""
    state = state_of(request)
    model = state.model(request.path_params["owner"], request.path_params["name"])
    if model is None:
        return _not_found(request)
    return JSONResponse(await state.model_json(model, base_url(request)))


async def list_versions(request: Request) -> Response:
    """`GET /v1/models/{owner}/{name}/versions`."""
    model = state_of(request).model(request.path_params["owner"], request.path_params["name"])
    if model is None:
        return _not_found(request)
    return JSONResponse({"previous": None, "next": None, "results": [model.version_json()]})


async def get_version(request: Request) -> Response:
    """`GET /v1/models/{owner}/{name}/versions/{id}`."""
    model = state_of(request).model(request.path_params["owner"], request.path_params["name"])
    if model is None or model.version != request.path_params["id"]:
        return _not_found(request)
    return JSONResponse(model.version_json())


async def create_file(request: Request) -> Response:
    """`POST /v1/files`: keep an input file (multipart `content`); its `urls.get` goes into an input."""
    state = state_of(request)
    form = await request.form(max_files=1, max_fields=4)
    try:
        content = form.get("content")
        if content is None or isinstance(content, str):
            return _invalid(request, [{"type": "required", "field": "content", "description": "content is required"}])
        data = await content.read()
        metadata_text = form.get("metadata")
        filename = content.filename or "upload"
        content_type = content.content_type or "application/octet-stream"
    finally:
        await form.close()
    try:
        metadata = json.loads(metadata_text) if isinstance(metadata_text, str) else {}
    except json.JSONDecodeError:
        metadata = None
    if not isinstance(metadata, dict):
        return _invalid(
            request, [{"type": "invalid", "field": "metadata", "description": "metadata must be a JSON object"}]
        )
    token = request.state.token
    upload = await asyncio.to_thread(
        state.store.write_upload,
        data,
        filename,
        token=token.name if token else "",
        content_type=content_type,
        metadata=metadata,
    )
    return JSONResponse(_file_json(request, upload), status_code=201)


def _file_json(request: Request, upload: UploadRecord) -> dict[str, Any]:
    """A file object as Replicate's API (and replicate-python's `File`) has it."""
    retention_s = (state_of(request).settings.retention_days or 1.0) * 86400
    return {
        "id": upload.id,
        "name": upload.name,
        "content_type": upload.content_type,
        "size": upload.size,
        "etag": upload.md5,
        "checksums": {"sha256": upload.sha256, "md5": upload.md5},
        "metadata": upload.metadata,
        "created_at": iso(upload.created_at),
        "expires_at": iso(upload.created_at + retention_s),
        "urls": {"get": base_url(request) + upload.path()},
    }


async def get_file(request: Request) -> Response:
    """`GET /v1/files/{id}`: one of the calling token's uploads."""
    token = request.state.token
    upload = await asyncio.to_thread(
        state_of(request).store.get_upload, request.path_params["file_id"], token.name if token else ""
    )
    return _not_found(request, "File not found") if upload is None else JSONResponse(_file_json(request, upload))


async def delete_file(request: Request) -> Response:
    """`DELETE /v1/files/{id}`: remove one of the calling token's uploads (204; 404 when it has none)."""
    token = request.state.token
    gone = await asyncio.to_thread(
        state_of(request).store.delete_upload, request.path_params["file_id"], token.name if token else ""
    )
    return Response(status_code=204) if gone else _not_found(request, "File not found")


async def list_files(request: Request) -> Response:
    """`GET /v1/files`: the calling token's uploads, newest first, paginated like predictions."""
    state = state_of(request)
    token = request.state.token
    try:
        cursor = request.query_params.get("cursor")
        before = _read_cursor(cursor) if cursor else None
    except InputError as exc:
        return _invalid(request, exc.fields)
    size = state.settings.page_size
    uploads = await asyncio.to_thread(state.store.uploads, token.name if token else "", before=before, limit=size + 1)
    return _page(request, "/v1/files", uploads, size, lambda upload: _file_json(request, upload))


def _page(request: Request, path: str, rows: Sequence[_Row], size: int, to_json: Callable[[_Row], Any]) -> Response:
    """One page of a list: at most `size` of `rows` (one more was read to know whether more follow)."""
    shown = rows[:size]
    more = len(rows) > size and bool(shown)
    next_url = f"{base_url(request)}{path}?cursor={_cursor(shown[-1])}" if more else None
    return JSONResponse({"previous": None, "next": next_url, "results": [to_json(row) for row in shown]})


async def webhook_secret(request: Request) -> Response:
    """`GET /v1/webhooks/default/secret`: the calling token's signing secret."""
    token = request.state.token
    return JSONResponse({"key": state_of(request).webhooks.secret_for(token.name if token else "")})


async def account(request: Request) -> Response:
    """`GET /v1/account`."""
    token = request.state.token
    name = token.name if token else "local"
    return JSONResponse({"type": "organization", "username": name, "name": name, "github_url": None})


def routes() -> list[Route]:
    """The routes of the Replicate-compatible API."""
    return [
        Route("/v1/models/{owner}/{name}/predictions", create_by_model, methods=["POST"]),
        Route("/v1/predictions", create_by_version, methods=["POST"]),
        Route("/v1/predictions", list_predictions, methods=["GET"]),
        Route("/v1/predictions/{id}", get_prediction, methods=["GET"]),
        Route("/v1/predictions/{id}/cancel", cancel_prediction, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{owner}/{name}", get_model, methods=["GET"]),
        Route("/v1/models/{owner}/{name}/versions", list_versions, methods=["GET"]),
        Route("/v1/models/{owner}/{name}/versions/{id}", get_version, methods=["GET"]),
        Route("/v1/files", create_file, methods=["POST"]),
        Route("/v1/files", list_files, methods=["GET"]),
        Route("/v1/files/{file_id}", get_file, methods=["GET"]),
        Route("/v1/files/{file_id}", delete_file, methods=["DELETE"]),
        Route("/v1/webhooks/default/secret", webhook_secret, methods=["GET"]),
        Route("/v1/account", account, methods=["GET"]),
    ]
