"""The Google backend: Imagen 4, Gemini image models and Veo on the Gemini API.

`GoogleBackend.run` reads top to bottom: find the model's family, check and map the request, send it
(Imagen and Veo over the documented REST endpoints, Gemini image models through the official
`google-genai` client), and turn the answer into artifacts. Since google-genai 3, the official client
refuses Imagen and Veo in Gemini-API mode (it serves them on Vertex only), so those two are spoken
over REST here, with the same key, endpoint and error handling.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from mediagen._config import DEFAULT_MAX_DOWNLOAD_BYTES
from mediagen.artifacts import Artifact
from mediagen.backend import Backend, Capabilities, RunContext
from mediagen.errors import UnsupportedRequestError
from mediagen.policies import ConcurrencyLimiter, RateLimiter, RetryPolicy
from mediagen.requests import ImageRequest, Request, Task, VideoRequest
from mediagen.results import GenerationWarning, Result, Timings, Usage

from .client import DEFAULT_TIMEOUT_S, GoogleConnection, env_key
from .errors import PROVIDER, refusal
from .mapping import gemini_request, imagen_body, veo_body
from .models import GeminiImageModel, GoogleModel, ImagenModel, VeoModel, resolve
from .options import GoogleOptions
from .outputs import GeminiFileVideo, gemini_images, imagen_images, veo_uris
from .transport import GoogleTransport

if TYPE_CHECKING:
    from google import genai

__all__ = ["GoogleBackend", "DEFAULT_MAX_CONCURRENCY"]

DEFAULT_MAX_CONCURRENCY = 64
"""Calls (and Veo operations) in flight at once."""

_TASKS: frozenset[Task] = frozenset({"text-to-image", "image-to-image", "text-to-video", "image-to-video"})


class GoogleBackend(Backend):
    """Runs mediagen requests on the Gemini API (`google:imagen-4.0-generate-001`, `google:veo-3.0-generate-001`).

    Apart from `__init__`, all methods are private or part of the contract.

    Args:
        api_key: API key; defaults to `$GOOGLE_API_KEY`, else `$GEMINI_API_KEY`. Never in mediagen.toml.
        base_url: API root without version; defaults to `$GOOGLE_GEMINI_BASE_URL`, else Google's.
        client: A ready `google.genai.Client` for Gemini image models (never closed here).
        max_concurrency: Calls and operations in flight at once (None: no cap).
        requests_per_minute: Billable calls sent in any minute, evenly (None: no limit of its own).
        max_retries: Tries of each call, the first included (billable ones only while provably not
            run), 1 to 100; a job's `policy.retry` replaces this and `retry_base_delay`.
        retry_base_delay: First backoff between tries, in seconds.
        poll_interval: Shortest wait between polls of a Veo operation, in seconds.
        max_poll_interval: Longest wait between polls.
        timeout: Seconds one request may take.
        max_download_bytes: Size cap of each video download.

    Examples:
        >>> async with mg.Client() as client:  # doctest: +SKIP
        ...     still = await client.image("a red fox", model="google:imagen-4.0-generate-001", aspect_ratio="16:9")
        ...     clip = await client.video("the fox runs", image=still.artifacts[0], model="google:veo-3.0-generate-001")
        ...     await clip.artifacts[0].asave("fox.mp4")
    """

    provider = "google"
    tasks = _TASKS
    remote = True
    handles_retries = True

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        client: genai.Client | None = None,
        max_concurrency: int | None = DEFAULT_MAX_CONCURRENCY,
        requests_per_minute: int | None = None,
        max_retries: int = 6,
        retry_base_delay: float = 0.5,
        poll_interval: float = 5.0,
        max_poll_interval: float = 20.0,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
    ) -> None:
        super().__init__(
            base_url=base_url,
            max_concurrency=max_concurrency,
            requests_per_minute=requests_per_minute,
            max_retries=max_retries,
            retry_base_delay=retry_base_delay,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
            timeout=timeout,
            max_download_bytes=max_download_bytes,
        )
        self._api_key = api_key
        self._base_url = base_url
        self._client = client
        self._timeout = timeout
        self._max_concurrency = max_concurrency
        self._max_download_bytes = max_download_bytes
        self._retry = RetryPolicy(attempts=max_retries, backoff_base_s=retry_base_delay)
        self._slots = ConcurrencyLimiter(max_concurrency)
        self._pace = RateLimiter(requests_per_minute)
        self._poll = (poll_interval, max_poll_interval)
        self._transport: GoogleTransport | None = None
        self._connecting = asyncio.Lock()

    # -- the contract -----------------------------------------------------------------------------

    async def capabilities(self, model: str) -> Capabilities:
        """What `model` does, by family."""
        return resolve(model).capabilities()

    async def run(self, request: Request, model: str, ctx: RunContext) -> Result:
        """Run `request` on `model`.

        Args:
            request: An `ImageRequest` (Imagen, Gemini image) or a `VideoRequest` (Veo).
            model: A Gemini API model name.
            ctx: Deadline, events, warnings.

        Returns:
            The result; images arrive in memory, Veo videos are fetched on first read
            (`options={"download": True}` fetches them now).
        """
        started = time.monotonic()

        # 1. Check the model's family against the request, and the options.
        info = resolve(model)
        options = GoogleOptions.parse(request.options, model=model)
        _check_family(info, request, model)
        if not info.known:
            ctx.warn(GenerationWarning.other(f"google:{model} is not in mediagen's table; mapped as its family"))
        transport = await self._connect()

        # 2-4. Map, send, collect: per family.
        raw: Any
        if isinstance(info, ImagenModel):
            assert isinstance(request, ImageRequest)
            artifacts, raw = await self._imagen(request, info, options, transport, ctx)
            usage = Usage(images=len(artifacts))
        elif isinstance(info, GeminiImageModel):
            assert isinstance(request, ImageRequest)
            artifacts, raw = await self._gemini(request, info, options, transport, ctx)
            usage = Usage(images=len(artifacts))
        else:
            assert isinstance(request, VideoRequest)
            artifacts, raw, seconds = await self._veo(request, info, options, transport, ctx)
            usage = Usage(video_s=seconds * len(artifacts))
        if len(artifacts) < request.n:
            ctx.warn(GenerationWarning.other(f"asked for {request.n} output(s), Google returned {len(artifacts)}"))

        # 5. The result.
        total = time.monotonic() - started
        return Result(
            artifacts=artifacts,
            provider=PROVIDER,
            model=model,
            seeds=[request.seed if isinstance(info, GeminiImageModel) else None] * len(artifacts),
            timings=Timings(run_s=total, total_s=total),
            usage=usage,
            warnings=list(ctx.warnings),
            raw=raw,
        )

    async def aclose(self) -> None:
        """Close the clients this backend built (a client passed in stays open)."""
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.connection.aclose()

    @classmethod
    def availability(cls) -> str | None:
        """Why the backend cannot run here: no key in the environment (the constructor may still get one)."""
        if env_key()[0] is None:
            return "GEMINI_API_KEY (or GOOGLE_API_KEY) is not set (or pass api_key= to GoogleBackend)"
        return None

    def describe(self) -> dict[str, Any]:
        """Endpoint, limits, what is in flight and requests sent."""
        transport = self._transport
        return {
            "base_url": transport.connection.base_url if transport else self._base_url or "(from the environment)",
            "max_concurrency": self._max_concurrency,
            "in_flight": self._slots.in_use,
            "requests": dict(transport.stats) if transport else {},
        }

    def __repr__(self) -> str:
        where = self._transport.connection.base_url if self._transport else self._base_url or "env"
        return f"<GoogleBackend {where} max_concurrency={self._max_concurrency}>"

    # -- helpers ----------------------------------------------------------------------------------

    async def _connect(self) -> GoogleTransport:
        """The transport, built on first use (a missing key is reported then, not at import).

        Built in a worker thread: loading the TLS trust store would stall the event loop.
        """
        async with self._connecting:
            if self._transport is None:
                self._transport = await asyncio.to_thread(self._build)
        return self._transport

    def _build(self) -> GoogleTransport:
        if self._transport is None:
            connection = GoogleConnection(
                api_key=self._api_key,
                base_url=self._base_url,
                client=self._client,
                timeout=self._timeout,
                max_connections=(self._max_concurrency or 128) + 16,
            )
            self._transport = GoogleTransport(
                connection,
                retry=self._retry,
                slots=self._slots,
                pace=self._pace,
                poll_interval=self._poll[0],
                max_poll_interval=self._poll[1],
            )
        return self._transport

    async def _imagen(
        self,
        request: ImageRequest,
        info: ImagenModel,
        options: GoogleOptions,
        transport: GoogleTransport,
        ctx: RunContext,
    ) -> tuple[list[Artifact], Any]:
        body = imagen_body(request, info, options, ctx)
        async with transport.slots:
            answer = await transport.rest(
                "POST", f"models/{info.name}:predict", ctx=ctx, model=info.name, kind="predict", body=body
            )
        images, filtered = await asyncio.to_thread(imagen_images, answer, model=info.name)
        if not images and filtered:
            raise refusal("; ".join(filtered), model=info.name)
        if filtered:
            ctx.warn(
                GenerationWarning.other(f"Google's filters removed {len(filtered)} image(s): {'; '.join(filtered)}")
            )
        raw = {
            "predictions": [
                {k: v for k, v in p.items() if k != "bytesBase64Encoded"} for p in answer.get("predictions") or []
            ]
        }
        return list(images), raw

    async def _gemini(
        self,
        request: ImageRequest,
        info: GeminiImageModel,
        options: GoogleOptions,
        transport: GoogleTransport,
        ctx: RunContext,
    ) -> tuple[list[Artifact], Any]:
        contents, config = await asyncio.to_thread(gemini_request, request, info, options, ctx)
        models = transport.connection.official.aio.models

        async def send(timeout: float) -> Any:
            from google.genai import types

            # The official client takes its timeout in milliseconds.
            per_call = config.model_copy(
                update={"http_options": types.HttpOptions(timeout=max(1, int(1000 * timeout)))}
            )
            return await models.generate_content(model=info.name, contents=contents, config=per_call)

        async with transport.slots:
            response = await transport.call("generateContent", send, ctx=ctx, model=info.name)
        images, texts, stopped = await asyncio.to_thread(gemini_images, response, model=info.name)
        if not images:
            if stopped is not None:
                raise refusal(stopped, model=info.name, detail=" ".join(texts) or None)
            raise refusal("the model answered with text only: " + (" ".join(texts)[:200] or "nothing"), model=info.name)
        for text in texts:
            ctx.log(text)
        raw = response.model_dump(mode="json", exclude_none=True, exclude={"sdk_http_response"})
        for candidate in raw.get("candidates") or []:
            for part in (candidate.get("content") or {}).get("parts") or []:
                (part.get("inline_data") or {}).pop("data", None)
        return list(images), raw

    async def _veo(
        self, request: VideoRequest, info: VeoModel, options: GoogleOptions, transport: GoogleTransport, ctx: RunContext
    ) -> tuple[list[Artifact], Any, float]:
        body = await asyncio.to_thread(veo_body, request, info, options, ctx)
        operation = await transport.run_operation(info.name, body, ctx=ctx, typical_s=info.typical_s)
        uris, filtered, reasons = veo_uris(operation)
        if not uris and filtered:
            raise refusal("; ".join(reasons) or f"{filtered} video(s) filtered", model=info.name)
        if filtered:
            ctx.warn(GenerationWarning.other(f"Google's filters removed {filtered} video(s): {'; '.join(reasons)}"))
        connection = transport.connection
        videos: list[Artifact] = [
            GeminiFileVideo(
                uri,
                key=connection.secrets[0],
                same_origin=connection.same_origin,
                max_bytes=self._max_download_bytes,
                attempts=self._retry.attempts,
                metadata={"provider": PROVIDER, "model": info.name, "operation": operation.get("name"), "output": i},
            )
            for i, uri in enumerate(uris)
        ]
        if options.download:
            await asyncio.gather(*(v.aread() for v in videos))
        seconds = float(body["parameters"].get("durationSeconds") or max(info.durations))
        return videos, operation, seconds


def _check_family(info: GoogleModel, request: Request, model: str) -> None:
    wanted = "video" if isinstance(info, VeoModel) else "image"
    if request.modality != wanted:
        raise UnsupportedRequestError(
            f"google:{model} makes {wanted}s; it cannot serve a {request.modality} request ({request.task})",
            feature=request.task,
            provider=PROVIDER,
            model=model,
        )
