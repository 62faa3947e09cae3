"""`mediagen serve --engine ray`: the same HTTP API, with generation spread over Ray Serve replicas.

Two deployments:

- **api** (one replica): the `mediagen serve` ASGI app itself (Replicate- and OpenAI-compatible
  routes, auth, limits, metrics, durable SQLite jobs). Ray Serve's HTTP proxy listens on
  `--host`/`--port` and hands every request to it, so job state lives in one place: a poll or a
  cancel reaches the replica that holds the job.
- **generate** (`--replicas N`, autoscaled up to `--max-replicas`): each replica holds one
  mediagen client, so requests that land on a replica are micro-batched on its device. The api's
  client forwards every run to it through a deployment handle; Ray Serve balances the replicas.

Progress and log events cross the handle: the api streams each run from its replica
(`generate_stream`), so a prediction's `logs` (and replicate's `prediction.progress`) advance as
on one machine. Previews do not (pictures per step are not worth the trip).
"""

from __future__ import annotations

import asyncio
import math
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from .._registry import parse_model
from ..backend import Backend, Capabilities, RunContext
from ..client import Client
from ..errors import GenerationFailedError
from ..events import Log, Progress
from ..requests import Request
from ..results import Result
from ._imports import import_ray, init_ray
from .worker import GenerateWorker, WorkerOutcome, forwarded_env, unwrap

__all__ = ["GenerateDeployment", "build_serve_app", "run_ray_command"]


class GenerateDeployment(GenerateWorker):
    """The body of a `generate` replica: a Ray worker's client, which can also describe models."""

    async def capabilities(self, model: str) -> Capabilities:
        """What the model can do, as its own backend says."""
        provider, name = parse_model(model)
        return await (await self._client.backend(provider)).capabilities(name)


class _Forward(Backend):
    """Runs every request of one provider on the `generate` deployment (the api replica's client holds these)."""

    provider: ClassVar[str] = "ray-serve"

    def __init__(self, handle: Any) -> None:
        super().__init__()
        self._handle = handle

    async def capabilities(self, model: str) -> Capabilities:
        caps: Capabilities = await self._handle.capabilities.remote(f"{self.provider}:{model}")
        return caps

    async def run(self, request: Request, model: str, ctx: RunContext) -> Result:
        response = self._handle.options(stream=True).generate_stream.remote(request, f"{self.provider}:{model}")
        outcome: WorkerOutcome | None = None
        try:
            async for item in response:
                if isinstance(item, Progress | Log):
                    ctx.emit(item)  # the prediction's logs advance as the replica's steps do
                else:
                    outcome = item
        except asyncio.CancelledError:
            response.cancel()  # the replica stops the request too
            raise
        if outcome is None:
            raise GenerationFailedError("the generate replica ended the stream without a result")
        return unwrap(outcome)


def _forwarders(providers: Sequence[str], handle: Any) -> dict[str, Backend]:
    return {name: type(f"Forward_{name}", (_Forward,), {"provider": name})(handle) for name in providers}


def build_serve_app(settings: Any, providers: Sequence[str], handle: Any, metrics_public: bool) -> Any:
    """The `mediagen serve` app whose client forwards `providers` to the `generate` deployment."""
    from ..serve import create_app

    client = Client(backends=_forwarders(providers, handle))
    return create_app(settings, client=client, metrics_public=metrics_public)


def run_ray_command(
    *,
    host: str,
    port: int,
    models: Sequence[str],
    db: str | None,
    token_file: str | None,
    retention_days: float | None,
    log_level: str,
    metrics_public: bool,
    replicas: int = 1,
    max_replicas: int | None = None,
    address: str | None = None,
    cpus_per_replica: float = 1.0,
    gpus_per_replica: float = 0.0,
) -> int:
    """Deploy the app on Ray Serve and block until interrupted; returns the exit code."""
    from ..serve.command import load_settings
    from ..serve.runner import BindRefused, check_bind

    try:
        config, settings = load_settings(models=models, db=db, token_file=token_file, retention_days=retention_days)
        check_bind(host, settings)
        if max_replicas is not None and max_replicas < replicas:
            raise ValueError(f"--max-replicas ({max_replicas}) is below --replicas ({replicas})")
        resolver = Client(config=config)
        providers = sorted(
            {
                provider
                for served in settings.models
                for provider, _ in resolver.resolve_models(served.chain, served.modality or "image")
            }
        )
    except (BindRefused, ValueError, FileNotFoundError) as exc:
        print(f"mediagen serve: {exc}", file=sys.stderr)
        return 2

    ray = import_ray()
    from ray import serve

    def stop_on_term(signum: int, frame: Any) -> None:
        # A supervisor's SIGTERM shuts Ray down as Ctrl-C does: no Ray process outlives the server.
        raise KeyboardInterrupt

    env = forwarded_env()
    init_ray(
        address,
        num_cpus=max(2, int(replicas * cpus_per_replica) + 1),
        num_gpus=math.ceil(replicas * gpus_per_replica) or None,
    )
    # Installed after ray.init, which sets a handler of its own that would end the process at once.
    signal.signal(signal.SIGTERM, stop_on_term)
    try:
        serve.start(http_options={"host": host, "port": port}, logging_config={"log_level": log_level.upper()})
        scaling: dict[str, Any] = {"num_replicas": replicas}
        if max_replicas is not None and max_replicas > replicas:
            scaling = {"autoscaling_config": {"min_replicas": replicas, "max_replicas": max_replicas}}
        generate = serve.deployment(
            name="generate",
            ray_actor_options={"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica},
            max_ongoing_requests=64,
            **scaling,
        )(GenerateDeployment).bind(env)

        def builder(handle: Any) -> Any:
            return build_serve_app(settings, providers, handle, metrics_public)

        class _Api:
            def __init__(self, handle: Any) -> None:
                self.handle = handle

            def __serve_build_asgi_app__(self) -> Any:
                return builder(self.handle)

        api = serve.deployment(name="api", num_replicas=1, ray_actor_options={"num_cpus": 0.5})(
            serve.ingress()(_Api)
        ).bind(generate)
        serve.run(api, name="mediagen", route_prefix="/", blocking=False)
        shown = f"[{host}]" if ":" in host else host
        print(
            f"mediagen serve: listening on http://{shown}:{port} (Ray Serve, {replicas} replica(s))",
            file=sys.stderr,
            flush=True,
        )
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        stop: Any = serve.shutdown  # untyped in Ray
        stop()
        ray.shutdown()
