"""The diffusers backend: Hugging Face diffusers pipelines on this machine's GPU (or CPU).

`run` maps a request onto the model's pipeline (mapping.py), queues it with the device's
micro-batcher, and turns the outputs into artifacts (outputs.py). The batch itself runs on the
device worker thread (`_run_batch`): it fetches the pipeline from the cache (loading it the first
time, loading.py), concatenates the batched requests' per-output inputs and generators, applies the
batch's LoRA set and scheduler, calls the pipeline with a step callback that reports progress and
interrupts a batch nobody waits for any more, and hands back per-request outputs.

Concurrency safety comes from the worker: one call at a time per device, so the pipelines that
`from_pipe` made from one model (and which share its modules and scheduler object) never run at
once. Schedulers reset their state in `set_timesteps` at the start of every call; a scheduler swapped
in by `options.scheduler` and the LoRA adapters are undone when the call ends, however it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import platform
import secrets
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mediagen import (
    Backend,
    Capabilities,
    ConfigError,
    Event,
    GenerationFailedError,
    GenerationWarning,
    Image,
    InvalidRequestError,
    LoRA,
    MediagenError,
    ModelNotFoundError,
    Preview,
    Request,
    Result,
    RunContext,
    Timings,
    Usage,
)
from mediagen.requests import Task
from mediagen_local import (
    DEFAULT_BATCH_WINDOW_S,
    DEFAULT_MAX_BATCH,
    Batch,
    LocalRuntime,
    Placement,
    dtype_name,
    is_accelerator,
    is_out_of_memory,
    module_bytes,
    parse_settings,
    planned_runtime,
    start_runtime,
)
from mediagen_local.compile_cache import CompileCache, use_inductor_cache_dir
from mediagen_local.hints import slow_work_hint

from .approx import (
    ApproxOptions,
    ApproxState,
    StepCache,
    apply_approx,
    approx_call,
    step_cache_error,
    step_cache_refusal,
)
from .loading import (
    ModelInfo,
    estimate_weights,
    hub_errors,
    load_controlnet,
    load_pipeline,
    make_view,
    quiet_logger,
    resolve_model,
    resolve_reference,
)
from .mapping import plan_request
from .options import parse_options
from .outputs import collect, safety_flags, to_artifacts
from .plan import Plan
from .previews import RGBFit, fit_rgb, latent_preview
from .speed import DEFAULT_BUCKETS, CompileMode, SpeedOptions, apply_speed, bucket_for, unfused

__all__ = ["DiffusersBackend", "DiffusersSettings"]

logger = logging.getLogger("mediagen")

_GB = 1024**3

# peft warns each time a second adapter is added to a model; several LoRAs at once are the point here.
warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute", category=UserWarning)


class DiffusersSettings(BaseModel):
    """`[providers.diffusers]` in mediagen.toml (or `mg.Client(providers={"diffusers": {...}})`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str = "auto"
    """`auto` (CUDA, then MPS, then CPU), or a torch device: `cuda`, `cuda:1`, `mps`, `cpu`."""
    dtype: str = "auto"
    """Weights' dtype: `auto` (bf16 on CUDA where supported, else fp16; fp16 on MPS; fp32 on CPU),
    `float32`, `float16` or `bfloat16`."""
    max_batch: int = Field(DEFAULT_MAX_BATCH, ge=1, le=256)
    """Most outputs one pipeline call makes (concurrent requests and `n` count toward it)."""
    batch_window_s: float = Field(DEFAULT_BATCH_WINDOW_S, ge=0.0, le=10.0)
    """How long an idle device waits for another request to batch with, after the latest one arrived
    (a burst is collected for up to 8 windows)."""
    memory_budget_gb: float | None = Field(None, gt=0.0)
    """Device memory the loaded models may hold; None takes 85 % of what is free (75 % of RAM on CPU)."""
    offload: Literal["auto", "never", "always"] = "auto"
    """Model CPU offload on accelerators: when a model does not fit (`auto`), `never`, or `always`."""
    allow_deprecated: bool = False
    """Run pipelines diffusers has deprecated (TextToVideoSD, I2VGenXL ...)."""
    default_control_model: str | None = None
    """ControlNet used when a request with `control_image` names none."""
    channels_last: bool = False
    """Speed: channels-last memory layout for UNet/VAE/ControlNet (see `speed.py`)."""
    fuse_qkv: bool = False
    """Speed: fused attention query/key/value projections."""
    compile: Literal["off", "regional", "full"] = "off"
    """Speed: torch.compile the denoiser's repeated blocks (`regional`) or all of it (`full`)."""
    attention_backend: str | None = None
    """Speed: diffusers attention backend (`native`, `flash`, `_native_cudnn`, `sage` ...)."""
    speed: Literal["default", "max"] = "default"
    """Speed preset: `max` turns on `channels_last`, `compile = "full"` with batch buckets, the
    compile cache and, on CUDA, `max-autotune-no-cudagraphs`; settings given beside it win."""
    compile_mode: CompileMode = "auto"
    """Speed: torch.compile mode (`auto`, `default`, `reduce-overhead`, `max-autotune`,
    `max-autotune-no-cudagraphs`); `auto` is torch's default except under `speed = "max"` on CUDA."""
    batch_buckets: tuple[int, ...] | None = Field(None, max_length=16)
    """Speed: with compile on, batches are padded to the smallest of these sizes that fits (None:
    1, 4, 8, 16 when compiling, no padding otherwise; `[]`: never pad). Sizes above `max_batch` are
    dropped and `max_batch` is added, so every batch has a bucket."""
    compile_cache: bool = True
    """Speed: keep compiled artifacts under the mediagen cache, so a new process skips compiling."""

    @field_validator("batch_buckets")
    @classmethod
    def _check_buckets(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and any(size < 1 or size > 256 for size in value):
            raise ValueError("batch bucket sizes must be between 1 and 256")
        return value if value is None else tuple(sorted(set(value)))

    step_cache: StepCache = "off"
    """Approximate: reuse work across denoising steps with a diffusers cache hook (see `approx.py`)."""
    step_cache_threshold: float | None = Field(None, gt=0.0, le=1.0)
    """Approximate: First Block Cache's threshold (default 0.05; higher is faster and less exact)."""
    quantize: Literal["off", "fp8"] = "off"
    """Approximate: the denoiser's weights in float8 (torchao, `mediagen[fp8]`)."""

    @property
    def approx(self) -> ApproxOptions:
        """The approximate options among the settings."""
        return ApproxOptions(
            step_cache=self.step_cache, step_cache_threshold=self.step_cache_threshold, quantize=self.quantize
        )

    @property
    def speed_options(self) -> SpeedOptions:
        """The speed options among the settings, with the `speed` preset applied."""
        given = self.model_fields_set
        maximal = self.speed == "max"
        compile = self.compile if "compile" in given or not maximal else "full"
        buckets = self.batch_buckets
        if buckets is None:
            buckets = DEFAULT_BUCKETS if compile != "off" else ()
        if buckets:
            buckets = tuple(sorted({size for size in buckets if size < self.max_batch} | {self.max_batch}))
        return SpeedOptions(
            channels_last=self.channels_last if "channels_last" in given or not maximal else True,
            fuse_qkv=self.fuse_qkv,
            compile=compile,
            attention_backend=self.attention_backend,
            compile_mode=self.compile_mode,
            buckets=buckets,
            compile_cache=self.compile_cache,
            preset=self.speed,
        )


@dataclass(frozen=True)
class _Work:
    """One request as the batcher carries it."""

    info: ModelInfo
    plan: Plan
    previews: int | None = None
    """Emit a `Preview` every this many steps (the request's `previews`), or None."""
    emit: Callable[[Event], None] | None = None
    """Thread-safe way to the request's event sink (for previews)."""


@dataclass(frozen=True)
class _Share:
    """One request's part of a batch's outputs."""

    values: list[Any]
    load_s: float
    nsfw: list[bool | None]
    """Per output: whether the pipeline's safety checker flagged it (None: the pipeline has none)."""
    approximate: tuple[str, ...] = ()
    """The approximate options the outputs were made with (empty: exact)."""


@dataclass
class _Loaded:
    """How a model was loaded (for memory fallbacks and `describe`)."""

    placement: Placement
    low_memory: bool = False
    speed: list[str] = field(default_factory=list)
    approx: ApproxState | None = None
    compile_cache: CompileCache | None = None
    """Where this model's compiled artifacts are kept across processes (compile on only)."""


# The device, its worker, this backend's pipeline cache and its batcher of `_Work`.
_Runtime: TypeAlias = LocalRuntime[_Work, _Share]


class _Interrupted(Exception):
    """Raised from the step reporter of pipelines without step callbacks, to stop a cancelled batch."""


class DiffusersBackend(Backend):
    """Hugging Face diffusers pipelines on the local device: images, video and 3D meshes.

    Models are hub ids or directories written by `save_pretrained`. Concurrent compatible requests
    are micro-batched into one pipeline call; each keeps its own seed. Settings come from
    `[providers.diffusers]` (see `DiffusersSettings`); per-request knobs from `options` (see
    `DiffusersOptions`).

    Apart from `__init__`, all methods are private or part of the contract.

    Examples:
        >>> async with mg.Client() as client:  # doctest: +SKIP
        ...     res = await client.image("a red fox", model="diffusers:stabilityai/sdxl-turbo", steps=2)
    """

    provider: ClassVar[str] = "diffusers"
    tasks: ClassVar[frozenset[Task]] = frozenset(
        {
            "text-to-image",
            "image-to-image",
            "inpaint",
            "controlnet",
            "text-to-video",
            "image-to-video",
            "text-to-3d",
            "image-to-3d",
            "text-to-audio",
            "text-to-music",
            "text-to-sound",
        }
    )

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.config = parse_settings(DiffusersSettings, settings, "diffusers")
        self.config.approx.check()
        if self.config.quantize != "off" and self.config.fuse_qkv:
            # Fusing concatenates the projections' weights, which float8 tensors do not allow.
            raise ConfigError("quantize='fp8' and fuse_qkv cannot be combined; choose one")
        self._refusals: dict[str, str | None] = {}
        self._speed = self.config.speed_options
        self._models: dict[str, ModelInfo] = {}
        self._loaded: dict[str, _Loaded] = {}
        self._rgb_fits: dict[str, RGBFit | None] = {}
        self._runtime: _Runtime | None = None
        self._setup_lock = threading.Lock()
        self._closed = False

    # -- the contract ---------------------------------------------------------------------------

    async def capabilities(self, model: str) -> Capabilities:
        """What `model` can do, read from its `model_index.json` (nothing is loaded)."""
        info = await self._model_info(model)
        return Capabilities(tasks=info.tasks, max_outputs_per_call=self.config.max_batch)

    async def run(self, request: Request, model: str, ctx: RunContext) -> Result:
        """Generate with a diffusers pipeline, batched with concurrent compatible requests."""
        # 1. Check the request: the model, what it can do, the options; start the device worker.
        if self._closed:
            raise RuntimeError("this DiffusersBackend is closed; create a new one")
        info = await self._model_info(model)
        refusal = self._refusals.get(model)
        if refusal is not None:
            raise step_cache_error(model, self.config.step_cache, refusal)
        opts = parse_options(request.options)
        runtime = await self._ensure_runtime()
        ctx.check_deadline()

        # 2. Map it onto the pipeline: what does not map becomes a warning (an error when strict).
        await _fetch_inputs(request)
        seeds = _seeds(request)
        plan = plan_request(
            request, info, opts, ctx, seeds=seeds, default_control_model=self.config.default_control_model
        )

        hint = slow_work_hint(
            runtime.device,
            size=plan.size,
            steps=plan.call.get("num_inference_steps"),
            frames=plan.call.get("num_frames"),
            n=plan.n,
        )
        if hint:
            logger.warning("%s:%s: %s", self.provider, model, hint)

        # 3. Queue it: compatible requests arriving together share one pipeline call.
        done = await runtime.batcher.submit(
            (model, plan.key()),
            _Work(info, plan, previews=ctx.previews, emit=_threadsafe(ctx) if ctx.previews else None),
            size=plan.n,
            cancelled=ctx.cancelled,
            progress=ctx.progress,
        )
        share: _Share = done.value
        values, load_s = share.values, share.load_s

        # 4. Turn the outputs into artifacts (converting frames and encoding meshes take a while:
        #    off the loop; images are cheap enough to wrap here). A safety checker's flags are kept.
        if plan.output.kind == "image":
            _warn_if_resized(values, plan, ctx)
            artifacts = to_artifacts(values, plan.output, seeds, nsfw=share.nsfw)
        else:
            artifacts = await asyncio.to_thread(to_artifacts, values, plan.output, seeds, nsfw=share.nsfw)
        if share.approximate:
            # Outputs of an approximate path say so wherever they go (saved files keep the metadata).
            for artifact in artifacts:
                artifact.metadata["approximate"] = list(share.approximate)
        flagged = [i for i, flag in enumerate(share.nsfw) if flag]
        if flagged:
            ctx.warn(
                GenerationWarning.other(
                    f"{plan.class_name}'s safety checker flagged output(s) {', '.join(map(str, flagged))} "
                    "(nsfw_content_detected) and blanked them; see each artifact's metadata"
                )
            )

        # 5. Report what it cost.
        run_s = max(0.0, done.run_s - load_s)
        return Result(
            artifacts=artifacts,
            provider=self.provider,
            model=model,
            seeds=list(seeds),
            timings=Timings(queue_s=done.queue_s, load_s=load_s, run_s=run_s),
            usage=_usage(values, plan, device_s=run_s * plan.n / max(1, done.batch_outputs), device=runtime.device),
            warnings=list(ctx.warnings),
            raw={
                "pipeline": plan.class_name,
                "call": {k: v for k, v in plan.call.items() if isinstance(v, (int, float, str, bool))},
                "batch_requests": done.batch_requests,
                "batch_outputs": done.batch_outputs,
                "device": runtime.device,
            }
            | ({"approximate": list(share.approximate)} if share.approximate else {}),
        )

    async def aclose(self) -> None:
        """Unload every pipeline this backend loaded. Safe to call twice."""
        self._closed = True
        runtime = self._runtime
        if runtime is not None:
            await runtime.worker.call(runtime.cache.clear)
            self._loaded.clear()

    @classmethod
    def availability(cls) -> str | None:
        """Why the backend cannot run here (a missing package), or None."""
        import importlib.util

        missing = [name for name in ("torch", "diffusers", "transformers") if importlib.util.find_spec(name) is None]
        if missing:
            return f"{', '.join(missing)} not installed: pip install 'mediagen[local]'"
        return None

    async def revision(self, model: str) -> str | None:
        """None for exact outputs; with approximate options on, a tag naming them.

        The result cache keys on it: an output made approximately never answers a request to a
        backend without those options, nor the other way round.
        """
        approx = self.config.approx
        if not approx.any:
            return None
        return "approx:" + ",".join(f"{k}={v}" for k, v in approx.model_dump(exclude_defaults=True).items())

    def describe(self) -> dict[str, Any]:
        """Device, settings, batching and the loaded pipelines (for `mediagen backends`)."""
        runtime = self._runtime
        state: dict[str, Any] = {"settings": self.config.model_dump(exclude_defaults=True)}
        if runtime is None:
            # Nothing is loaded before the first request; say where it would run.
            state |= planned_runtime(self.config)
            return state
        state |= runtime.describe(
            memory_budget_gb=round(runtime.cache.budget_bytes / _GB, 2),
            memory_used_gb=round(runtime.cache.used_bytes / _GB, 3),
        )
        approximate = {m: loaded.approx.applied for m, loaded in self._loaded.items() if loaded.approx}
        if any(approximate.values()):
            state["approximate"] = {m: applied for m, applied in approximate.items() if applied}
        return state

    # -- setting up (off the event loop) ----------------------------------------------------------

    async def _model_info(self, model: str) -> ModelInfo:
        info = self._models.get(model)
        if info is None:
            # Reading configs and importing diffusers the first time take a while: not on the loop.
            info = await asyncio.to_thread(self._resolve, model)
        return info

    def _resolve(self, model: str) -> ModelInfo:
        # Concurrent first requests for one model resolve it once; the others find it done.
        with self._setup_lock:
            info = self._models.get(model)
            if info is None:
                info = resolve_model(model, allow_deprecated=self.config.allow_deprecated)
                # Judged once, before any weights load: a model the step cache cannot hook fails fast.
                self._refusals[model] = step_cache_refusal(info.components, self.config.approx)
                self._models[model] = info
            return info

    async def _ensure_runtime(self) -> _Runtime:
        if self._runtime is None:
            await asyncio.to_thread(self._setup)
        assert self._runtime is not None
        return self._runtime

    def _setup(self) -> None:
        with self._setup_lock:
            if self._runtime is not None:
                return
            runtime = self._runtime = start_runtime(self.config, self._run_batch)
            logger.info("diffusers backend on %s in %s", runtime.device, dtype_name(runtime.dtype))

    # -- on the device worker -------------------------------------------------------------------

    def _run_batch(self, batch: Batch[_Work]) -> list[_Share]:
        import torch

        first = batch.payloads[0]
        info, plan = first.info, first.plan
        started = time.monotonic()
        with self._errors(info, plan, batch.size):
            pipe = self._pipeline(info, plan)
        load_s = time.monotonic() - started

        kwargs = dict(plan.call)
        seeds = [seed for work in batch.payloads for seed in work.plan.seeds]
        # Compiled graphs are reused only for a batch size they were compiled for: pad the batch up
        # to its bucket with copies of its last input; those outputs are made and thrown away.
        buckets = self._speed.buckets
        pad = 0 if plan.one_at_a_time else bucket_for(len(seeds), buckets) - len(seeds)
        if plan.per_prompt:
            # Every request of this batch has the very same inputs (they are in the batch key):
            # pass them once, and ask for all the outputs through `num_*_per_prompt`.
            for name in plan.inputs:
                kwargs[name] = plan.inputs[name][0]
            # One output per call where the pipeline cannot make several of one input (see below).
            kwargs[plan.per_prompt] = 1 if plan.one_at_a_time else len(seeds) + pad
        else:
            for name in plan.inputs:
                values_of = [value for work in batch.payloads for value in work.plan.inputs[name]]
                kwargs[name] = values_of + values_of[-1:] * pad
        # One CPU generator per output: the same noise on any device, whatever the batch (and the
        # padding, which comes after the real outputs and has generators of its own).
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds + [0] * pad]
        values: list[Any] = []
        nsfw: list[bool | None] = []
        # A pipeline that cannot make several outputs of one input in a call (Wan 2.1 image-to-video
        # repeats its image embeddings per prompt only) makes them one call each.
        calls = [[g] for g in generators] if plan.one_at_a_time else [generators]
        for call_generators in calls:
            kwargs["generator"] = call_generators
            result = self._call(pipe, kwargs, batch, info, plan)
            with self._errors(info, plan, batch.size):
                made = collect(result, plan.output.kind)
            values += made
            nsfw += safety_flags(result, len(made))
        if len(values) != len(seeds) + pad:
            raise GenerationFailedError(
                f"{plan.class_name} returned {len(values)} outputs for {len(seeds) + pad} requested",
                model=info.model,
            )
        del values[len(seeds) :], nsfw[len(seeds) :]
        loaded = self._loaded[info.model]
        if loaded.compile_cache is not None:
            # After the first batch of each new shape, so that a restart finds it compiled.
            loaded.compile_cache.save_if_new()
        approx = loaded.approx
        approximate = tuple(approx.applied) if approx else ()
        shares: list[_Share] = []
        start = 0
        for work in batch.payloads:
            end = start + work.plan.n
            shares.append(_Share(values[start:end], load_s, nsfw[start:end], approximate))
            start = end
        logger.debug(
            "%s: %d request(s), %d output(s) in %.3f s",
            plan.class_name,
            len(batch.items),
            len(seeds),
            time.monotonic() - started,
        )
        return shares

    def _call(self, pipe: Any, kwargs: dict[str, Any], batch: Batch[_Work], info: ModelInfo, plan: Plan) -> Any:
        import torch

        total = plan.steps or int(info.views[plan.view].defaults.get("num_inference_steps") or 0)
        if plan.callbacks:
            # One output per call: the batch's output indices do not apply, so no previews.
            previews = _Previewer(self, info, plan, batch if not plan.one_at_a_time else None)

            def on_step(p: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
                steps = getattr(p, "_num_timesteps", None) or total
                batch.progress(step + 1, steps)
                if previews.wanted:
                    previews(p, step + 1, steps, tensors)
                if batch.all_cancelled():
                    p._interrupt = True  # the loop skips the remaining steps (and still decodes)
                return tensors

            kwargs["callback_on_step_end"] = on_step
        loaded = self._loaded[info.model]
        for attempt in (1, 2):
            try:
                with (
                    self._errors(info, plan, len(kwargs["generator"])),
                    _step_reporter(pipe, batch, enabled=not plan.callbacks),
                    _loras(pipe, plan.loras, info, fused="fuse_qkv" in loaded.speed),
                    _scheduler(pipe, plan.scheduler),
                    approx_call(pipe, loaded.approx),
                    torch.inference_mode(),
                ):
                    return pipe(**kwargs)
            except GenerationFailedError as exc:
                # Out of memory once: decode in tiles, and on an accelerator offload, then try again.
                if attempt == 2 or not is_out_of_memory(exc) or not self._save_memory(info, pipe):
                    raise
                kwargs["generator"] = [
                    torch.Generator("cpu").manual_seed(g.initial_seed()) for g in kwargs["generator"]
                ]
        raise AssertionError("unreachable")

    def _pipeline(self, info: ModelInfo, plan: Plan) -> Any:
        runtime = self._runtime
        assert runtime is not None
        key = ("view", info.model, plan.view, plan.controlnet)
        pipe = runtime.cache.get(key)
        if pipe is not None:
            return pipe
        base_key = ("pipeline", info.model)
        base = self._base(info)
        parents: list[Any] = [base_key]
        controlnet = None
        if plan.controlnet is not None:
            controlnet = self._controlnet(plan.controlnet, keep=[base_key])
            parents.append(("controlnet", plan.controlnet))
        pipe = make_view(base, info, plan.view, runtime.dtype, controlnet)
        runtime.cache.put(
            key,
            pipe,
            parents=parents,
            label=f"{info.model} [{plan.view}] {plan.class_name}",
            placement=Placement.VIEW,
        )
        return pipe

    def _base(self, info: ModelInfo) -> Any:
        import torch

        runtime = self._runtime
        assert runtime is not None
        key = ("pipeline", info.model)
        pipe = runtime.cache.get(key)
        if pipe is not None:
            return pipe
        itemsize = torch.tensor([], dtype=runtime.dtype).element_size()
        estimate = estimate_weights(info, itemsize)
        placement = self._place(info.model, *estimate) if estimate else None
        pipe = load_pipeline(info, runtime.dtype)
        size, largest = module_bytes(pipe)
        if placement is None:
            placement = self._place(info.model, size, largest)
        loaded = _Loaded(placement)
        self._to_device(pipe, info, loaded)
        # Before the speed options: weights are quantized and hooks set before anything compiles.
        loaded.approx = apply_approx(pipe, self.config.approx, model=info.model, device=runtime.device)
        if self._speed.compile != "off" and self._speed.compile_cache:
            # Before the first compiled call: torch then finds the graphs and kernels compiled.
            use_inductor_cache_dir()
            loaded.compile_cache = CompileCache(_compile_key(info, runtime.device, runtime.dtype, self._speed))
            loaded.compile_cache.load()
        loaded.speed = apply_speed(pipe, self._speed)
        self._loaded[info.model] = loaded
        runtime.cache.put(
            key,
            pipe,
            size_bytes=largest if loaded.placement is Placement.OFFLOAD else size,
            label=f"{info.model} ({info.class_name})",
            placement=loaded.placement,
        )
        return pipe

    def _controlnet(self, ref: str, keep: list[Any]) -> Any:
        runtime = self._runtime
        assert runtime is not None
        key = ("controlnet", ref)
        model = runtime.cache.get(key)
        if model is not None:
            return model
        model = load_controlnet(ref, runtime.dtype)
        size, _ = module_bytes(model)
        runtime.cache.make_room(size, keep=keep)
        if is_accelerator(runtime.device):
            with self._oom(ref):
                model.to(runtime.device)
        runtime.cache.put(key, model, size_bytes=size, label=f"{ref} (ControlNet)")
        return model

    def _rgb_fit(self, info: ModelInfo, pipe: Any) -> RGBFit | None:
        # Fitted once per model, the first time a request asks for previews (on the device worker).
        if info.model not in self._rgb_fits:
            try:
                self._rgb_fits[info.model] = fit_rgb(getattr(pipe, "vae", None))
            except Exception:  # a preview is a nicety: never fail a generation over it
                logger.debug("no latent->RGB fit for %s", info.model, exc_info=True)
                self._rgb_fits[info.model] = None
        return self._rgb_fits[info.model]

    def _place(self, model: str, size: int, largest: int) -> Placement:
        runtime = self._runtime
        assert runtime is not None
        offload = self.config.offload
        if offload == "always" and is_accelerator(runtime.device):
            placement = Placement.OFFLOAD
        else:
            placement = runtime.cache.plan(size, largest, what=model, can_offload=offload != "never")
        runtime.cache.make_room(largest if placement is Placement.OFFLOAD else size)
        return placement

    def _to_device(self, pipe: Any, info: ModelInfo, loaded: _Loaded) -> None:
        runtime = self._runtime
        assert runtime is not None
        if not is_accelerator(runtime.device):
            return  # loaded into RAM already; offloading needs an accelerator (it raises on CPU)
        if loaded.placement is Placement.OFFLOAD:
            self._offload(pipe, loaded, info.model)
            return
        try:
            pipe.to(runtime.device)
        except Exception as exc:
            if not is_out_of_memory(exc) or self.config.offload == "never":
                raise GenerationFailedError(
                    f"could not move {info.model} to {runtime.device}: {exc}", model=info.model
                ) from exc
            pipe.to("cpu")
            self._offload(pipe, loaded, info.model)

    def _offload(self, pipe: Any, loaded: _Loaded, model: str) -> None:
        runtime = self._runtime
        assert runtime is not None
        pipe.enable_model_cpu_offload(device=runtime.device)
        loaded.placement = Placement.OFFLOAD
        _low_memory_decode(pipe)
        loaded.low_memory = True
        logger.warning("%s does not fit on %s: running it with model CPU offload (slower)", model, runtime.device)

    def _save_memory(self, info: ModelInfo, pipe: Any) -> bool:
        """After running out of memory: tile the VAE, then offload; False when nothing is left to try."""
        runtime = self._runtime
        assert runtime is not None
        loaded = self._loaded[info.model]
        changed = False
        if not loaded.low_memory:
            _low_memory_decode(pipe)
            loaded.low_memory = True
            changed = True
        if loaded.placement is Placement.DEVICE and is_accelerator(runtime.device) and self.config.offload != "never":
            base = runtime.cache.get(("pipeline", info.model))
            self._offload(base, loaded, info.model)
            changed = True
        return changed

    @contextlib.contextmanager
    def _errors(self, info: ModelInfo, plan: Plan, outputs: int) -> Iterator[None]:
        # No torch or diffusers exception leaves the backend.
        try:
            yield
        except (MediagenError, _Interrupted):
            raise
        except Exception as exc:
            runtime = self._runtime
            device = runtime.device if runtime else "?"
            if is_out_of_memory(exc):
                raise GenerationFailedError(
                    f"{info.model} ran out of memory on {device} making {outputs} output(s) at once; lower "
                    "max_batch, the size or the frames, or set memory_budget_gb / offload",
                    model=info.model,
                    detail=str(exc),
                ) from exc
            raise GenerationFailedError(
                f"{plan.class_name} failed: {type(exc).__name__}: {exc}{_strength_hint(info, plan)}",
                model=info.model,
                detail=str(exc),
            ) from exc

    @contextlib.contextmanager
    def _oom(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            raise GenerationFailedError(f"could not place {what} on the device: {exc}", model=what) from exc


def _strength_hint(info: ModelInfo, plan: Plan) -> str:
    """Why an image-to-image call may have failed: too few steps for its strength.

    Most image-to-image pipelines denoise `int(steps * strength)` steps and fail deep inside (an
    empty tensor, a reshape of 0 elements) when that is 0, e.g. 2 steps at SDXL's default 0.3.
    Others round differently and run, so this is a hint on a failure, never a refusal up front.
    """
    view = info.views.get(plan.view)
    if view is None or "strength" not in view.params or "image" not in plan.inputs:
        return ""
    steps = plan.call.get("num_inference_steps", view.defaults.get("num_inference_steps"))
    strength = plan.call.get("strength", view.defaults.get("strength"))
    if not isinstance(steps, int | float) or not isinstance(strength, int | float) or strength <= 0:
        return ""
    if steps * strength >= 1:
        return ""
    return (
        f" ({steps:g} steps at strength {strength:g} leave {steps * strength:g} of a denoising step: raise steps "
        f"to at least {math.ceil(1 / strength)}, or the strength)"
    )


# -- previews --------------------------------------------------------------------------------------


def _compile_key(info: ModelInfo, device: str, dtype: Any, speed: SpeedOptions) -> dict[str, Any]:
    """What a model's compiled graphs depend on: the key of its compile cache file."""
    import diffusers
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        kind = f"{torch.cuda.get_device_name(index)} sm{''.join(map(str, torch.cuda.get_device_capability(index)))}"
    else:
        kind = f"{device.split(':')[0]} {platform.machine()}"
    return {
        "model": info.source,
        "weights": _weights_identity(info.config_dir),
        "class": info.class_name,
        "dtype": dtype_name(dtype),
        "device": kind,
        "compile": speed.compile,
        "mode": speed.compile_mode,
        "preset": speed.preset,
        "buckets": speed.buckets,
        "channels_last": speed.channels_last,
        "fuse_qkv": speed.fuse_qkv,
        "attention": speed.attention_backend,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
    }


def _weights_identity(directory: Path) -> list[tuple[str, int]]:
    """Name and size of each weights file of a model directory (a hub snapshot's path names its commit)."""
    found: list[tuple[str, int]] = []
    with contextlib.suppress(OSError):
        for path in sorted(directory.glob("*/*")):
            if path.suffix in (".safetensors", ".bin", ".pt", ".ckpt", ".gguf"):
                found.append((path.relative_to(directory).as_posix(), path.stat().st_size))
    return found


class _Previewer:
    """Sends each request of a batch a `Preview` of its outputs every `previews` steps (on the worker)."""

    def __init__(self, backend: DiffusersBackend, info: ModelInfo, plan: Plan, batch: Batch[_Work] | None) -> None:
        self.backend = backend
        self.info = info
        self.plan = plan
        # (request, index of its first output in the batch)
        self.wanted: list[tuple[_Work, int]] = []
        self._model: tuple[RGBFit | None, int | None] | None = None
        """The model's latent -> RGB fit and latent channels, read on the first step that previews."""
        start = 0
        for work in batch.payloads if batch is not None else []:
            if work.previews and work.emit is not None:
                self.wanted.append((work, start))
            start += work.plan.n

    def __call__(self, pipe: Any, step: int, total: int, tensors: dict[str, Any]) -> None:
        latents = tensors.get("latents")
        due = [(w, s) for w, s in self.wanted if w.previews and (step % w.previews == 0 or step == total)]
        if latents is None or not due:
            return
        if self._model is None:
            # The same for every step of the call: read once.
            vae_config = getattr(getattr(pipe, "vae", None), "config", None)
            channels = getattr(vae_config, "latent_channels", None) or getattr(vae_config, "z_dim", None)
            self._model = (self.backend._rgb_fit(self.info, pipe), channels)
        fit, channels = self._model
        if hasattr(latents, "detach"):
            latents = latents.detach().float().cpu()  # one copy off the device per step, not one per output
        for work, start in due:
            for offset in range(work.plan.n):
                picture = latent_preview(
                    latents, start + offset, size=self.plan.size, latent_channels=channels, fit=fit
                )
                if picture is None:
                    return  # a latent layout previews do not know: say nothing rather than garbage
                assert work.emit is not None
                work.emit(Preview(image=Image.from_pil(picture), step=step, total=total, index=offset))


def _warn_if_resized(values: list[Any], plan: Plan, ctx: RunContext) -> None:
    """Say so when a pipeline made pictures of another size than the one it was given.

    Some pipelines size their output themselves: HiDream renders at a fixed area (1 MP on the real
    model), keeping only the aspect ratio of `width` x `height`. The caller must not believe the
    size they asked for was honoured.
    """
    asked = plan.call.get("width"), plan.call.get("height")
    if not all(isinstance(side, int) for side in asked):
        return
    made = sorted({tuple(value.size) for value in values if isinstance(getattr(value, "size", None), tuple)})
    other = [size for size in made if size != asked]
    if other:
        sizes = ", ".join(f"{w}x{h}" for w, h in other)
        ctx.warn(
            GenerationWarning.compatibility(
                "width",
                f"{plan.class_name} sizes its pictures itself: made {sizes} instead of {asked[0]}x{asked[1]}",
            )
        )


def _threadsafe(ctx: RunContext) -> Callable[[Event], None]:
    """`ctx.emit`, callable from the device worker: the event is handed to the request's loop."""
    loop = asyncio.get_running_loop()

    def emit(event: Event) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody listens any more
            loop.call_soon_threadsafe(ctx.emit, event)

    return emit


# -- helpers of a call, each undoing what it did ---------------------------------------------------


@contextlib.contextmanager
def _loras(pipe: Any, loras: tuple[LoRA, ...], info: ModelInfo, *, fused: bool) -> Iterator[None]:
    if not loras:
        yield
        return
    names: list[str] = []
    with unfused(pipe, fused):
        try:
            for index, lora in enumerate(loras):
                name = f"mediagen_{index}"
                _load_lora(pipe, lora, name, info)
                names.append(name)
            pipe.set_adapters(names, adapter_weights=[lora.scale for lora in loras])
            yield
        finally:
            if names:
                # The next request gets the model as it was: no adapter stays behind.
                pipe.unload_lora_weights()


def _load_lora(pipe: Any, lora: LoRA, adapter_name: str, info: ModelInfo) -> None:
    source, path = resolve_reference(lora.path, what="LoRA")
    weight_name = lora.weight_name
    if path is not None and path.is_file():
        source, weight_name = str(path.parent), path.name
    try:
        # diffusers warns for every component a LoRA does not touch (usually the text encoder).
        with hub_errors(lora.path, "LoRA"), quiet_logger("diffusers.loaders"):
            pipe.load_lora_weights(source, weight_name=weight_name, adapter_name=adapter_name)
    except MediagenError:
        raise
    except OSError as exc:
        raise ModelNotFoundError(f"could not read the LoRA {lora.path}: {exc}") from exc
    except (ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise InvalidRequestError(f"the LoRA {lora.path} does not fit {info.model}: {exc}") from exc


@contextlib.contextmanager
def _scheduler(pipe: Any, name: str | None) -> Iterator[None]:
    if name is None:
        yield
        return
    import diffusers

    from mediagen_local.imports import IMPORT_LOCK

    own = pipe.scheduler
    with IMPORT_LOCK:  # the lazy module resolves `name` on first use
        scheduler_cls = getattr(diffusers, name)
    pipe.scheduler = scheduler_cls.from_config(own.config)
    try:
        yield
    finally:
        pipe.scheduler = own


class _StepReporter:
    """Stands in for a pipeline's tqdm bar: reports steps, and stops a batch nobody waits for."""

    def __init__(self, batch: Batch[_Work], iterable: Any = None, total: int | None = None) -> None:
        self.batch = batch
        self.items = list(iterable) if iterable is not None else None
        self.total = len(self.items) if self.items is not None else int(total or 0)
        self.step = 0

    def __iter__(self) -> Iterator[Any]:
        for item in self.items or []:
            if self.batch.all_cancelled():
                raise _Interrupted
            yield item
            self.update()

    def __enter__(self) -> _StepReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        self.step += n
        self.batch.progress(self.step, self.total)
        if self.batch.all_cancelled():
            raise _Interrupted


@contextlib.contextmanager
def _step_reporter(pipe: Any, batch: Batch[_Work], *, enabled: bool) -> Iterator[None]:
    # Pipelines without `callback_on_step_end` (Shap-E) still walk their steps through
    # `self.progress_bar`; an instance attribute shadows the method for this one call.
    if not enabled:
        yield
        return
    pipe.progress_bar = lambda iterable=None, total=None: _StepReporter(batch, iterable, total)
    try:
        yield
    finally:
        del pipe.progress_bar


def _low_memory_decode(pipe: Any) -> None:
    vae = getattr(pipe, "vae", None)
    for method in ("enable_tiling", "enable_slicing"):
        with contextlib.suppress(AttributeError, NotImplementedError, ValueError):
            getattr(vae, method)()


# -- helpers of run --------------------------------------------------------------------------------


async def _fetch_inputs(request: Request) -> None:
    # Inputs given as URLs are downloaded here, without blocking the loop; the mapping then decodes them.
    for name in ("image", "mask", "control_image"):
        artifact = getattr(request, name, None)
        if artifact is not None:
            await artifact.aread()
    for reference in getattr(request, "images", None) or []:
        await reference.aread()


def _seeds(request: Request) -> list[int]:
    given = request.seeds()
    if given and given[0] is not None:
        return [int(seed) for seed in given if seed is not None]
    # No seed: pick one, and report it, so that the result can be made again.
    base = secrets.randbelow(2**32)
    return [(base + i) % 2**32 for i in range(request.n)]


def _usage(values: list[Any], plan: Plan, *, device_s: float, device: str) -> Usage:
    kind = plan.output.kind
    if kind == "image":
        pixels = sum(pil.width * pil.height for pil in values)
        return Usage(images=len(values), megapixels=pixels / 1e6, device_s=device_s, device=device)
    if kind == "video":
        pixels = sum(frames.shape[0] * frames.shape[1] * frames.shape[2] for frames in values)
        seconds = sum(frames.shape[0] for frames in values) / (plan.output.fps or 8.0)
        return Usage(megapixels=pixels / 1e6, video_s=seconds, device_s=device_s, device=device)
    if kind == "audio":
        return Usage(device_s=device_s, device=device)  # the client measures audio_s on the artifacts
    return Usage(meshes=len(values), device_s=device_s, device=device)
