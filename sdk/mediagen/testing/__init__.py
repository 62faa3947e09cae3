"""Test helpers that ship with mediagen, so apps built on it can test offline.

- `FakeBackend`: the `test` provider (`model="test:anything"` needs no setup). Deterministic from
  the seed, tiny real artifacts, records what it was asked.
- `FunctionBackend`: a backend whose `run` is your function (sync or async).
- `allow_remote_requests(False)` (re-exported from `mediagen`): hosted backends refuse to send.

mediagen's own loopback provider servers and tiny-model recipes are not here: they live in the
separate test kit (`testkit/`, package `mediagen_testkit`), which apps do not install.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from ..artifacts import Artifact, Audio, Image, Mesh, Video
from ..backend import Backend, Capabilities, RunContext, allow_remote_requests
from ..requests import TASKS, AudioRequest, ImageRequest, MeshRequest, Request, Task, VideoRequest
from ..results import Result, Usage

__all__ = ["FakeBackend", "FunctionBackend", "allow_remote_requests"]


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


class FakeBackend(Backend):
    """A deterministic backend for tests: same request and seed, same bytes.

    Args:
        steps: Progress events emitted per call.
        step_delay_s: Sleep between steps (to test progress, cancellation and deadlines).
        max_outputs_per_call: Advertised limit, so the client splits `n`.
        tasks: Tasks advertised (all by default).
        error: Raised by `run` instead of generating (to test failures and fallbacks).
        **settings: Kept in `settings`, like any backend's.

    Attributes:
        calls: How many times `run` was called.
        requests: Every request received, in order.
        last_request: The most recent request.
        cancelled: How many runs were cancelled part-way.
    """

    __test__ = False  # not a pytest test class, despite the module name
    provider: ClassVar[str] = "test"

    def __init__(
        self,
        *,
        steps: int = 3,
        step_delay_s: float = 0.0,
        max_outputs_per_call: int | None = None,
        tasks: frozenset[Task] | None = None,
        error: BaseException | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(**settings)
        self.steps = steps
        self.step_delay_s = step_delay_s
        self.max_outputs_per_call = max_outputs_per_call
        self.advertised = tasks if tasks is not None else frozenset(TASKS)
        self.error = error
        self.calls = 0
        self.requests: list[Request] = []
        self.last_request: Request | None = None
        self.cancelled = 0
        self.closed = False

    async def capabilities(self, model: str) -> Capabilities:
        return Capabilities(tasks=self.advertised, max_outputs_per_call=self.max_outputs_per_call)

    async def run(self, request: Request, model: str, ctx: RunContext) -> Result:
        # 1. Record the call.
        self.calls += 1
        self.requests.append(request)
        self.last_request = request

        # 2. "Work", step by step, so progress, cancellation and deadlines can be observed.
        try:
            for step in range(1, self.steps + 1):
                if self.step_delay_s:
                    await asyncio.sleep(self.step_delay_s)
                ctx.progress(step, self.steps)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.error is not None:
            raise self.error

        # 3. Make one artifact per output from (model, prompt, seed).
        seeds = [s if s is not None else random.randrange(2**32) for s in request.seeds()]
        artifacts = [_fake_artifact(request, model, seed) for seed in seeds]
        if request.options:
            ctx.warn("options", f"the test backend ignores options {sorted(request.options)}")
        return Result(
            artifacts=artifacts,
            provider=self.provider,
            model=model,
            seeds=list(seeds),
            usage=Usage(device_s=0.0, device="cpu"),
            raw={"fake": True, "steps": self.steps},
        )

    async def aclose(self) -> None:
        self.closed = True

    def describe(self) -> dict[str, Any]:
        return {"calls": self.calls}


def _fake_artifact(request: Request, model: str, seed: int) -> Artifact:
    import numpy as np

    rng = _rng(model, request.prompt, request.negative_prompt, seed)
    color = np.array([rng.randrange(256) for _ in range(3)], dtype=np.float32)
    meta = {"seed": seed}
    if isinstance(request, ImageRequest):
        width, height = request.size(default=64)
        ramp = np.linspace(0.6, 1.0, width, dtype=np.float32)[None, :, None]
        pixels = np.broadcast_to(color * ramp, (height, width, 3)).round().astype(np.uint8)
        if request.image is not None:
            # img2img: blend in the source so tests can see the input was used.
            src = np.asarray(request.image.to_pil().convert("RGB").resize((width, height)), dtype=np.float32)
            pixels = ((pixels.astype(np.float32) + src) / 2).round().astype(np.uint8)
        image = Image.from_array(pixels, metadata=meta)
        if request.output_format and request.output_format != "png":
            media_type = f"image/{request.output_format}"
            return Image(image._encode_as(media_type), media_type=media_type, metadata=meta)
        return image
    if isinstance(request, VideoRequest):
        width, height = request.width or 32, request.height or 32
        fps = request.fps or 8.0
        count = request.num_frames(default_frames=8, default_fps=fps)
        fade = np.linspace(0.3, 1.0, count, dtype=np.float32)[:, None, None, None]
        frames = np.broadcast_to(color * fade, (count, height, width, 3)).round().astype(np.uint8)
        return Video.from_frames(frames, fps=fps, metadata=meta)
    if isinstance(request, AudioRequest):
        rate = request.sample_rate or 16_000
        duration = request.duration_s or (
            max(0.5, len(request.prompt or "") * 0.06) if request.kind == "speech" else 1.0
        )
        t = np.arange(int(rate * duration), dtype=np.float32) / rate
        freq = 220.0 + rng.randrange(440)
        samples = 0.5 * np.sin(2 * math.pi * freq * t)
        return Audio.from_samples(samples, rate, metadata=meta)
    assert isinstance(request, MeshRequest)
    scale = 0.5 + rng.random()
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64) * scale
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    colors = np.tile(np.append(color, 255).astype(np.uint8), (4, 1))
    mesh = Mesh.from_arrays(vertices, faces, colors, metadata=meta)
    media_type = {"glb": "model/gltf-binary", "obj": "model/obj", "ply": "model/ply"}[request.format]
    return Mesh(mesh._encode_as(media_type), media_type=media_type, metadata=meta)


RunFunction = Callable[[Request, str, RunContext], "Result | list[Artifact] | Artifact | Awaitable[Any]"]


class FunctionBackend(Backend):
    """A backend whose `run` is a function, for scripted behaviour in tests.

    The function takes `(request, model, ctx)`, may be sync or async, and returns a `Result`, a
    list of artifacts, or one artifact.

    Examples:
        >>> backend = FunctionBackend(lambda req, model, ctx: mg.Image.from_array(np.zeros((8, 8, 3))))  # doctest: +SKIP
        >>> client = mg.Client(backends={"fn": backend})  # doctest: +SKIP
    """

    __test__ = False
    provider: ClassVar[str] = "function"

    def __init__(self, function: RunFunction, *, provider: str | None = None, **settings: Any) -> None:
        super().__init__(**settings)
        self.function = function
        if provider is not None:
            self.provider = provider  # type: ignore[misc]
        self.calls = 0

    async def run(self, request: Request, model: str, ctx: RunContext) -> Result:
        self.calls += 1
        out = self.function(request, model, ctx)
        if inspect.isawaitable(out):
            out = await out
        if isinstance(out, Result):
            return out
        artifacts = [out] if isinstance(out, Artifact) else list(out)
        return Result(artifacts=artifacts, provider=self.provider, model=model, seeds=request.seeds()[: len(artifacts)])
