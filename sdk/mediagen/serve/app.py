"""`create_app`: the ASGI application behind `mediagen serve`.

The app is plain Starlette, so it runs on uvicorn (what `mediagen serve` does), inside another
ASGI server, or as a Ray Serve ingress. At startup (the ASGI lifespan) it opens the prediction
store (failing predictions a dead process left running), resolves each served model to its
backend and capabilities (a model that cannot be resolved stops the start, rather than failing
the first caller), and starts a retention sweep. At shutdown it lets running predictions finish
for `shutdown_grace_s`, marks the rest failed, and closes the client it made.

Examples:
    >>> from mediagen.serve import ServeSettings, ServedModel, create_app
    >>> app = create_app(ServeSettings(models=[ServedModel(owner="acme", name="fox", model="test:fake",
    ...                                                    modality="image")]))
    >>> import uvicorn  # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import Scope

from .._config import Config
from .._files import write_atomic
from ..client import Client
from ..errors import ModelNotFoundError
from . import openai_api, replicate_api
from .auth import Authenticator, error_response
from .metrics import ServeMetrics
from .middleware import GuardMiddleware
from .predictions import PredictionService
from .schema import ModelDescription, describe_model
from .settings import ServedModel, ServeSettings, modalities_of
from .store import PredictionStore, iso
from .webhooks import WebhookSender

__all__ = ["create_app", "ServeState"]

logger = logging.getLogger("mediagen.serve")

_RETENTION_SWEEP_S = 3600.0


@dataclass
class ServeState:
    """What the routes share; `app.state.mediagen` once the app has started."""

    settings: ServeSettings
    store: PredictionStore
    client: Client
    models: dict[str, ModelDescription]
    service: PredictionService
    webhooks: WebhookSender
    metrics: ServeMetrics | None
    by_version: dict[str, ModelDescription] = field(default_factory=dict)

    def model(self, owner: str, name: str) -> ModelDescription | None:
        """A served model by its public name."""
        return self.models.get(f"{owner}/{name}")

    def model_for_version(self, version: str) -> ModelDescription | None:
        """The model of `owner/name`, `owner/name:<version>` or `<version>`."""
        ref, _, pinned = version.partition(":")
        if "/" not in ref:
            return self.by_version.get(ref)
        found = self.models.get(ref)
        if found is None or (pinned and pinned != found.version):
            return None
        return found

    async def model_json(self, model: ModelDescription, base: str) -> dict[str, Any]:
        """The model object, with its run count."""
        count = await asyncio.to_thread(self.store.run_count, model.served.owner, model.served.name)
        return model.model_json(base, count)

    def count_error(self, kind: str) -> None:
        """Count an error by kind."""
        if self.metrics is not None:
            self.metrics.errors.labels(kind).inc()


async def _describe(client: Client, served: ServedModel, settings: ServeSettings, created_at: str) -> ModelDescription:
    chain = client.resolve_models(served.chain, served.modality or "image")
    provider, model = chain[0]
    backend = await client.backend(provider)
    caps = await backend.capabilities(model)
    modality = served.modality
    if modality is None:
        found = modalities_of(caps.tasks)
        if len(found) != 1:
            raise ModelNotFoundError(
                f"{served.ref}: {provider}:{model} makes {', '.join(found) or 'nothing'}; say which one it serves, "
                f"e.g. --model image:{served.ref}=... or modality = 'image' in [serve.models]"
            )
        modality = found[0]
    return describe_model(served, modality, caps, max_outputs=settings.max_outputs, created_at=created_at)


def _master_secret(settings: ServeSettings, store: PredictionStore, keep: bool) -> bytes:
    if settings.webhook_secret:
        return settings.webhook_secret.encode()
    path = store.path.with_name(store.path.name + ".webhook-secret")
    if keep and path.is_file():
        stored = base64.b64decode(path.read_text().strip())
        if len(stored) < 16:
            # An empty or cut secret would let anyone sign webhooks: refuse rather than use it.
            raise ValueError(f"{path} holds no usable webhook secret; remove it to make a new one")
        return stored
    secret = secrets.token_bytes(32)
    if keep:
        # Owner-only, whole or not at all (a crash cannot leave an empty secret), never overwritten:
        # webhooks stay verifiable across restarts.
        write_atomic(path, base64.b64encode(secret), overwrite=False, mode=0o600)
    return secret


def create_app(
    settings: ServeSettings,
    *,
    client: Client | None = None,
    config: Config | str | os.PathLike[str] | None = None,
    metrics_public: bool = False,
) -> Starlette:
    """Build the ASGI app serving `settings.models` over Replicate's and OpenAI's APIs.

    Args:
        settings: Models, storage, tokens and limits.
        client: The client predictions run on (never closed here); by default one is made from
            `config` at startup and closed at shutdown.
        config: The configuration of the client made here (default: the usual `mediagen.toml`).
        metrics_public: Serve `/metrics` without a token even when tokens are configured.

    Returns:
        The Starlette application; its state is ready once the ASGI lifespan has started.
    """
    auth = Authenticator(settings.tokens)
    holder: dict[str, ServeState] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        temp: str | None = None
        if settings.db is None:
            temp = tempfile.mkdtemp(prefix="mediagen-serve-")
            logger.warning("no --db given: predictions live in %s and are deleted at shutdown", temp)
        store = PredictionStore(settings.db or Path(temp or ".") / "predictions.db", fsync=settings.fsync)
        interrupted = await asyncio.to_thread(store.fail_interrupted)
        if interrupted:
            logger.warning("%d prediction(s) were running when the server last stopped; marked failed", interrupted)
        own_client = client is None
        shared = client if client is not None else Client(config=config)
        webhooks = WebhookSender(
            _master_secret(settings, store, keep=temp is None), allow_http=settings.webhook_allow_http
        )
        try:
            created_at = iso(time.time()) or ""
            models = {}
            for served in settings.models:
                models[served.ref] = await _describe(shared, served, settings, created_at)
            service_ref: list[PredictionService] = []
            metrics = _make_metrics(lambda: service_ref[0].queued(), lambda: service_ref[0].running())
            if metrics is not None:
                webhooks.on_outcome = lambda outcome: metrics.webhooks.labels(outcome=outcome).inc()
            service = PredictionService(shared, store, models, settings, webhooks, metrics)
            service_ref.append(service)
            state = ServeState(settings, store, shared, models, service, webhooks, metrics)
            state.by_version = {m.version: m for m in models.values()}
            app.state.mediagen = holder["state"] = state
            sweeper = asyncio.ensure_future(_sweep(store, settings.retention_days))
            logger.info("serving %s", ", ".join(f"{ref} ({m.modality})" for ref, m in models.items()) or "no model")
        except BaseException:
            await webhooks.aclose()
            if own_client:
                await shared.aclose()
            store.close()
            raise
        try:
            yield
        finally:
            sweeper.cancel()
            await service.shutdown(settings.shutdown_grace_s)
            await webhooks.aclose()
            if own_client:
                await shared.aclose()
            store.close()
            holder.pop("state", None)
            if temp is not None:
                shutil.rmtree(temp, ignore_errors=True)

    routes: list[Route] = [
        Route("/healthz", _healthz, methods=["GET"]),
        Route("/metrics", _metrics, methods=["GET"]),
        Route("/outputs/{id}/{key}/{filename}", _output, methods=["GET", "HEAD"]),
        Route("/uploads/{id}/{key}/{filename}", _upload, methods=["GET", "HEAD"]),
        *replicate_api.routes(),
        *openai_api.routes(),
    ]

    def route_of(scope: Scope) -> str:
        for route in routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route.path
        return "(unmatched)"

    def metrics_of() -> ServeMetrics | None:
        state = holder.get("state")
        return state.metrics if state is not None else None

    middleware = [
        Middleware(
            GuardMiddleware,
            auth=auth,
            max_body_bytes=settings.max_body_bytes,
            route_of=route_of,
            metrics=metrics_of,
            metrics_public=metrics_public,
        )
    ]
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={404: _not_found, 405: _not_allowed},
    )


def _make_metrics(queued: Any, running: Any) -> ServeMetrics | None:
    try:
        return ServeMetrics(queued, running)
    except ImportError:
        logger.warning("prometheus-client is not installed: /metrics answers 501 (pip install 'mediagen[serve]')")
        return None


async def _sweep(store: PredictionStore, retention_days: float | None) -> None:
    if retention_days is None:
        return
    while True:
        removed = await asyncio.to_thread(store.purge, time.time() - retention_days * 86400)
        if removed:
            logger.info("retention: removed the data of %d prediction(s)", removed)
        await asyncio.sleep(_RETENTION_SWEEP_S)


async def _healthz(request: Request) -> Response:
    state: ServeState | None = getattr(request.app.state, "mediagen", None)
    if state is None:
        return JSONResponse({"status": "starting"}, status_code=503)
    return JSONResponse(
        {
            "status": "ok",
            # A count, not names: health checks need no token, and model names are the token-holders' business.
            "models": len(state.models),
            "queued": state.service.queued(),
            "running": state.service.running(),
        }
    )


async def _metrics(request: Request) -> Response:
    state: ServeState = request.app.state.mediagen
    if state.metrics is None:
        return Response("prometheus-client is not installed\n", status_code=501, media_type="text/plain")
    body, content_type = state.metrics.render()
    return Response(body, media_type=content_type)


async def _output(request: Request) -> Response:
    state: ServeState = request.app.state.mediagen
    params = request.path_params
    path = await asyncio.to_thread(state.store.output_file, params["id"], params["key"], params["filename"])
    if path is None:
        return error_response(request.url.path, 404, "The requested resource could not be found.")
    # Outputs never change once written: caches may keep them.
    return FileResponse(path, headers={"cache-control": "private, max-age=86400", "x-content-type-options": "nosniff"})


async def _upload(request: Request) -> Response:
    state: ServeState = request.app.state.mediagen
    params = request.path_params
    path = await asyncio.to_thread(state.store.upload_file, params["id"], params["key"], params["filename"])
    if path is None:
        return error_response(request.url.path, 404, "The requested resource could not be found.")
    return FileResponse(path, headers={"cache-control": "private, max-age=86400", "x-content-type-options": "nosniff"})


async def _not_found(request: Request, exc: Exception) -> Response:
    return error_response(request.url.path, 404, "The requested resource could not be found.")


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return error_response(request.url.path, 405, "Method not allowed.")
