"""The OpenAI backend: GPT image models and text-to-speech, through the official `openai` client.

`OpenAIBackend.run` reads top to bottom: check the model and the request, map it onto the API's
parameters (converting edit inputs and the mask), send it once (or again only when provably not
billed), and turn the answer into artifacts. The parts live next door: `client.py` (key and
endpoint), `models.py` (what each model takes, what was retired), `mapping.py`, `transport.py`,
`outputs.py`, `options.py`, `errors.py`.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any

from mediagen.artifacts import Artifact
from mediagen.backend import Backend, Capabilities, RunContext
from mediagen.errors import UnsupportedRequestError
from mediagen.policies import ConcurrencyLimiter, RateLimiter, RetryPolicy
from mediagen.requests import AudioRequest, ImageRequest, Request, Task
from mediagen.results import GenerationWarning, Result, Timings, Usage

from .client import DEFAULT_TIMEOUT_S, ENV_KEY, OpenAIConnection
from .errors import PROVIDER
from .mapping import ImageCall, SpeechCall, image_call, speech_call
from .models import SPEECH_MODELS, SPEECH_SHUTDOWN, ImageModelInfo, SpeechModelInfo, resolve
from .options import OpenAIOptions
from .outputs import SPEECH_SAMPLE_RATE, images_from_response, speech_artifact
from .transport import OpenAITransport

if TYPE_CHECKING:
    from openai import AsyncOpenAI

__all__ = ["OpenAIBackend", "DEFAULT_MAX_CONCURRENCY"]

DEFAULT_MAX_CONCURRENCY = 64
"""Requests in flight at once: each holds a connection for as long as the image takes."""

_TASKS: frozenset[Task] = frozenset({"text-to-image", "image-to-image", "inpaint", "text-to-speech", "text-to-audio"})


class OpenAIBackend(Backend):
    """Runs mediagen requests on OpenAI (`model="openai:gpt-image-2"`, `"openai:gpt-4o-mini-tts"`).

    Apart from `__init__`, all methods are private or part of the contract.

    Args:
        api_key: API key; defaults to `$OPENAI_API_KEY`. Never put it in mediagen.toml.
        base_url: API root ending in `/v1`; defaults to `$OPENAI_BASE_URL`, else OpenAI's.
        client: A ready `openai.AsyncOpenAI` to use (its key and endpoint win); never closed here.
        max_concurrency: Requests in flight at once (None: no cap).
        requests_per_minute: Requests sent in any minute, evenly (None: no limit of its own; a 429
            still holds every request back for the time the server names).
        max_retries: Tries of each request, the first included (only while provably not billed),
            1 to 100; a job's `policy.retry` replaces this and `retry_base_delay`.
        retry_base_delay: First backoff between tries, in seconds (doubling, with jitter).
        timeout: Seconds one request may take.

    Examples:
        >>> async with mg.Client() as client:  # doctest: +SKIP
        ...     res = await client.image("a red fox in snow", model="openai:gpt-image-2", width=1536, height=1024)
        ...     edit = await client.image("give it a scarf", model="openai:gpt-image-2",
        ...                               image=res.artifacts[0], mask="scarf-mask.png")
        ...     hello = await client.audio("Hello!", kind="speech", voice="coral", model="openai:gpt-4o-mini-tts")
    """

    provider = "openai"
    tasks = _TASKS
    remote = True
    # Only this backend knows which requests can be repeated without paying twice.
    handles_retries = True

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        client: AsyncOpenAI | None = None,
        max_concurrency: int | None = DEFAULT_MAX_CONCURRENCY,
        requests_per_minute: int | None = None,
        max_retries: int = 6,
        retry_base_delay: float = 0.5,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        # Settings are shown by `describe()`; the key and the client never are.
        super().__init__(
            base_url=base_url,
            max_concurrency=max_concurrency,
            requests_per_minute=requests_per_minute,
            max_retries=max_retries,
            retry_base_delay=retry_base_delay,
            timeout=timeout,
        )
        self._api_key = api_key
        self._base_url = base_url
        self._client = client
        self._timeout = timeout
        self._max_concurrency = max_concurrency
        self._retry = RetryPolicy(attempts=max_retries, backoff_base_s=retry_base_delay)
        self._slots = ConcurrencyLimiter(max_concurrency)
        self._pace = RateLimiter(requests_per_minute)
        self._transport: OpenAITransport | None = None
        self._connecting = asyncio.Lock()

    # -- the contract -----------------------------------------------------------------------------

    async def capabilities(self, model: str) -> Capabilities:
        """What `model` does: images (generate, edit, inpaint) or speech; refused models raise."""
        modality = "audio" if model in SPEECH_MODELS or "tts" in model else "image"
        return resolve(model, modality).capabilities()

    async def run(self, request: Request, model: str, ctx: RunContext) -> Result:
        """Run `request` on `model` as one OpenAI request.

        Args:
            request: An `ImageRequest` (generate, or edit with `image` / `images` / `mask`) or an
                `AudioRequest` with `kind="speech"`.
            model: An OpenAI model name (`gpt-image-2`, `gpt-4o-mini-tts` ...).
            ctx: Deadline, events, warnings.

        Returns:
            The result; images and speech arrive in memory (OpenAI answers with the bytes).
        """
        started = time.monotonic()

        # 1. Check the model (retired ones fail here, naming their successor) and the options.
        info = resolve(model, request.modality)
        options = OpenAIOptions.parse(request.options, model=model)
        if not info.known:
            ctx.warn(GenerationWarning.other(f"openai:{model} is not in mediagen's table of OpenAI models; sent as is"))
        transport = await self._connect()

        # 2-4. Map, send, and turn the answer into artifacts, per kind of model.
        if isinstance(info, ImageModelInfo) and isinstance(request, ImageRequest):
            # Reading files and re-encoding images (inputs, mask) takes a while: not on the event loop.
            call = await asyncio.to_thread(image_call, request, info, options, ctx, model=model)
            artifacts, raw = await self._images(call, transport, ctx, model)
            usage = _image_usage(artifacts)
        elif isinstance(info, SpeechModelInfo) and isinstance(request, AudioRequest):
            ctx.warn(
                GenerationWarning.deprecated(
                    "model", f"OpenAI announced the shutdown of {model} (all its speech models) for {SPEECH_SHUTDOWN}"
                )
            )
            speech = speech_call(request, info, options, ctx, model=model)
            artifacts, raw = await self._speech(speech, transport, ctx, model, options, request)
            usage = Usage(audio_s=sum(a.duration_s for a in artifacts if hasattr(a, "duration_s")))
        else:
            kind = "images" if isinstance(info, ImageModelInfo) else "speech"
            raise UnsupportedRequestError(
                f"openai:{model} makes {kind}; it cannot serve a {request.modality} request ({request.task})",
                feature=request.task,
                provider=PROVIDER,
                model=model,
            )
        if len(artifacts) < request.n:
            ctx.warn(GenerationWarning.other(f"asked for {request.n} output(s), OpenAI returned {len(artifacts)}"))

        # 5. The result.
        total = time.monotonic() - started
        return Result(
            artifacts=artifacts,
            provider=PROVIDER,
            model=model,
            seeds=[None] * len(artifacts),
            timings=Timings(run_s=total, total_s=total),
            usage=usage,
            warnings=list(ctx.warnings),
            raw=raw,
        )

    async def aclose(self) -> None:
        """Close the client this backend built (a client passed in stays open)."""
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.connection.aclose()

    @classmethod
    def availability(cls) -> str | None:
        """Why the backend cannot run here: no key in the environment (the constructor may still get one)."""
        if not os.environ.get(ENV_KEY):
            return f"{ENV_KEY} is not set (or pass api_key= to OpenAIBackend)"
        return None

    def describe(self) -> dict[str, Any]:
        """Endpoint, limits, what is in flight and requests sent."""
        transport = self._transport
        return {
            "base_url": transport.connection.base_url if transport else self._base_url or "(from the environment)",
            "max_concurrency": self._max_concurrency,
            "in_flight": self._slots.in_use,
            "waiting": self._slots.waiting,
            "requests": dict(transport.stats) if transport else {},
        }

    def __repr__(self) -> str:
        where = self._transport.connection.base_url if self._transport else self._base_url or "env"
        return f"<OpenAIBackend {where} max_concurrency={self._max_concurrency}>"

    # -- helpers ----------------------------------------------------------------------------------

    async def _connect(self) -> OpenAITransport:
        """The transport, built on first use (a missing key is reported then, not at import).

        Built in a worker thread: loading the TLS trust store would stall the event loop.
        """
        async with self._connecting:
            if self._transport is None:
                self._transport = await asyncio.to_thread(self._build)
        return self._transport

    def _build(self) -> OpenAITransport:
        if self._transport is None:
            connection = OpenAIConnection(
                api_key=self._api_key, base_url=self._base_url, client=self._client, timeout=self._timeout
            )
            self._transport = OpenAITransport(
                connection, retry=self._retry, slots=self._slots, pace=self._pace, timeout=self._timeout
            )
        return self._transport

    async def _images(
        self, call: ImageCall, transport: OpenAITransport, ctx: RunContext, model: str
    ) -> tuple[list[Artifact], dict[str, Any]]:
        images_api = transport.connection.official.images

        async def send(timeout: float) -> Any:
            if not call.edit:
                return await images_api.generate(**call.params, timeout=timeout)
            files: Any = call.images[0] if len(call.images) == 1 else call.images
            extra: dict[str, Any] = {} if call.mask is None else {"mask": call.mask}
            return await images_api.edit(image=files, **call.params, **extra, timeout=timeout)

        answer = await transport.call("images.edit" if call.edit else "images.generate", send, ctx=ctx, model=model)
        raw: dict[str, Any] = answer.model_dump(mode="json", exclude_none=True)
        data = raw.get("data") or []
        # The pictures live on in the artifacts; the raw payload keeps everything else.
        raw["data"] = [{k: v for k, v in item.items() if k != "b64_json"} for item in data]
        metadata = {"provider": PROVIDER, "model": model, "created": raw.get("created")}
        artifacts: list[Artifact] = list(
            await asyncio.to_thread(images_from_response, data, model=model, metadata=metadata)
        )
        return artifacts, raw

    async def _speech(
        self,
        call: SpeechCall,
        transport: OpenAITransport,
        ctx: RunContext,
        model: str,
        options: OpenAIOptions,
        request: AudioRequest,
    ) -> tuple[list[Artifact], dict[str, Any]]:
        speech_api = transport.connection.official.audio.speech

        async def send(timeout: float) -> bytes:
            answer = await speech_api.create(**call.params, timeout=timeout)
            return bytes(answer.content)

        body = await transport.call("audio.speech", send, ctx=ctx, model=model)
        metadata = {"provider": PROVIDER, "model": model, "voice": call.params["voice"]}
        audio = speech_artifact(body, fmt=options.format, model=model, metadata=metadata)
        if (
            request.sample_rate is not None
            and options.format in ("wav", "pcm")
            and request.sample_rate != SPEECH_SAMPLE_RATE
        ):
            audio = await asyncio.to_thread(audio.resample, request.sample_rate)
            audio.metadata.update(metadata)
        elif request.sample_rate is not None and options.format not in ("wav", "pcm"):
            ctx.warn("sample_rate", f"not resampled: the speech came as {options.format}; ask for format='wav'")
        raw = {k: v for k, v in call.params.items() if k != "input"} | {"bytes": len(body)}
        return [audio], raw


def _image_usage(artifacts: list[Artifact]) -> Usage:
    import io

    from PIL import Image as PILImage

    pixels = 0.0
    for artifact in artifacts:
        # Only the header is read: the size, without decoding the picture.
        with PILImage.open(io.BytesIO(artifact.read())) as header:
            pixels += header.width * header.height / 1e6
    return Usage(images=len(artifacts), megapixels=pixels)
