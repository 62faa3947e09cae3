"""The transformers backend: MusicGen for music, VITS / MMS-TTS for speech, on the shared local runtime.

A request is checked against the model's configuration first (`loading.resolve_model`, no weights),
mapped to the family's settings (`mapping`), then run on the device worker that every local backend
shares (`mediagen_local`), with the model kept in the runtime's pipeline cache.

Music requests with the same settings that arrive together share one `generate` call: prompts are
padded to one batch, and each output samples from its own generator (`sampling.SeededSampler`), so
it comes out the same whatever it was batched with. VITS draws its noise from torch's global
generator, so speech runs one output at a time, each under its own seed.

Examples:
    >>> async with mg.Client(providers={"transformers": {"device": "cpu"}}) as client:  # doctest: +SKIP
    ...     res = await client.audio("lofi beat", kind="music", duration_s=5, seed=1,
    ...                              model="transformers:facebook/musicgen-small")
    ...     res.artifacts[0].save("beat.wav")
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mediagen import (
    AudioRequest,
    Backend,
    Capabilities,
    GenerationFailedError,
    GenerationWarning,
    InvalidRequestError,
    MediagenError,
    Request,
    Result,
    RunContext,
    Timings,
    UnsupportedRequestError,
    Usage,
)
from mediagen.requests import Task
from mediagen_local import (
    DEFAULT_BATCH_WINDOW_S,
    DEFAULT_MAX_BATCH,
    Batch,
    LocalRuntime,
    dtype_name,
    module_bytes,
    parse_settings,
    planned_runtime,
    start_runtime,
)
from mediagen_local.audio import finish_audio, fit_samples

from .loading import LoadedModel, ModelInfo, load_model, resolve_model
from .mapping import MusicSettings, SpeechSettings, map_music, map_speech, output_seeds, parse_options

__all__ = ["TransformersBackend", "TransformersSettings"]

# Progress events per call at most: MusicGen takes 50 steps a second of audio, one event each is noise.
_PROGRESS_EVENTS = 100


class TransformersSettings(BaseModel):
    """Settings of the transformers backend, from `[providers.transformers]` in `mediagen.toml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str = "auto"
    """`auto` (CUDA, then MPS, then the CPU), or a torch device such as `cuda:1` or `cpu`."""
    dtype: str = "auto"
    """Weights dtype: `auto` (bf16/fp16 on GPUs, fp32 on the CPU), `float32`, `float16` or `bfloat16`."""
    memory_budget_gb: float | None = Field(None, gt=0)
    """Device memory the loaded models may hold; None takes a share of what is free."""
    max_batch: int = Field(DEFAULT_MAX_BATCH, ge=1, le=64)
    """Most music outputs one `generate` call makes."""
    batch_window_s: float = Field(DEFAULT_BATCH_WINDOW_S, ge=0.0, le=10.0)
    """How long an idle device waits for more music requests to batch with the first."""


@dataclass(frozen=True)
class _MusicJob:
    """One request's share of a batched MusicGen call."""

    info: ModelInfo
    prompt: str
    seeds: tuple[int, ...]
    settings: MusicSettings


# The device, its worker, the models loaded on it, and the music batcher.
_Runtime: TypeAlias = LocalRuntime[_MusicJob, list[np.ndarray[Any, Any]]]


class TransformersBackend(Backend):
    """Music and speech from transformers models, on this machine's accelerator (or its CPU).

    Args:
        **settings: `TransformersSettings` fields (`device`, `dtype`, `memory_budget_gb`, `max_batch`,
            `batch_window_s`).

    Raises:
        InvalidRequestError: A setting is unknown or out of range.

    Apart from `__init__`, all methods are private or part of the contract.
    """

    provider: ClassVar[str] = "transformers"
    tasks: ClassVar[frozenset[Task]] = frozenset({"text-to-music", "text-to-speech", "text-to-audio"})

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.config = parse_settings(TransformersSettings, settings, "transformers")
        self._infos: dict[str, ModelInfo] = {}
        self._runtime: _Runtime | None = None
        # A thread lock, not an asyncio one: tests and notebooks use one backend from several loops.
        self._setup_lock = threading.Lock()
        self._closed = False

    # -- the contract ---------------------------------------------------------------------------

    async def capabilities(self, model: str) -> Capabilities:
        info = await self._info(model)
        # One generate call makes all of a music request's outputs: keep it within a batch.
        limit = self.config.max_batch if info.family == "musicgen" else None
        return Capabilities(tasks=info.tasks, max_duration_s=info.max_duration_s, max_outputs_per_call=limit)

    async def run(self, request: Request, model: str, ctx: RunContext) -> Result:
        # 1. Check the request against the model's configuration; nothing is loaded yet.
        if self._closed:
            raise RuntimeError("this TransformersBackend is closed; create a new one")
        if not isinstance(request, AudioRequest):
            raise UnsupportedRequestError(
                f"the transformers backend makes audio; a {request.modality} request needs another provider",
                feature=request.task,
                supported_by=["diffusers", "replicate"],
            )
        info = await self._info(model)
        if request.task not in info.tasks:
            raise UnsupportedRequestError(
                f"{model} ({info.model_type}) cannot do {request.task}; it does {', '.join(sorted(info.tasks))}",
                feature=request.task,
            )
        options = parse_options(request, info, ctx)
        seeds = output_seeds(request)
        prompt = request.prompt or ""

        # 2. Map it to the family's settings (the voice is checked here, still before loading).
        if info.family == "musicgen":
            settings: MusicSettings | SpeechSettings = map_music(request, info, options, ctx)
        else:
            settings = map_speech(request, info, options, ctx)

        # 3. Load the model on the device (cached after the first request).
        runtime = await self._get_runtime()
        loaded_at = time.monotonic()
        _, load_s = await runtime.worker.call(self._ensure_loaded, runtime, info)
        queue_s = time.monotonic() - loaded_at - load_s

        # 4. Generate: music through the batcher, speech one output at a time.
        if isinstance(settings, MusicSettings):
            job = _MusicJob(info=info, prompt=prompt, seeds=tuple(seeds), settings=settings)
            done = await runtime.batcher.submit(
                key=(info.source, settings),
                payload=job,
                size=len(seeds),
                cancelled=ctx.cancelled,
                progress=ctx.progress,
            )
            waveforms = done.value
            notes: list[GenerationWarning] = []
            queue_s += done.queue_s
            run_s = done.run_s
            # The call's time is shared by every output batched into it.
            device_s = run_s * len(seeds) / max(1, done.batch_outputs)
            raw: dict[str, Any] = {"batch_requests": done.batch_requests, "batch_outputs": done.batch_outputs}
            num_samples: int | None = settings.num_samples
        else:
            started = time.monotonic()
            waveforms, notes, run_s = await runtime.worker.call(
                self._speak, runtime, info, prompt, seeds, settings, ctx
            )
            queue_s += time.monotonic() - started - run_s
            device_s = run_s
            raw = {}
            num_samples = settings.num_samples
        for note in notes:
            ctx.warn(note)

        # 5. Finish each waveform: exact length, then the rate and peak level asked for, loudness measured.
        artifacts = [
            finish_audio(
                wave,
                info.sampling_rate,
                num_samples=num_samples,
                peak=options.peak(),
                target_rate=request.sample_rate,
                metadata={"seed": seed, "model": model, "provider": self.provider},
            )
            for wave, seed in zip(waveforms, seeds, strict=True)
        ]
        return Result(
            artifacts=list(artifacts),
            provider=self.provider,
            model=model,
            seeds=list(seeds),
            timings=Timings(queue_s=max(0.0, queue_s), load_s=load_s, run_s=run_s),
            usage=Usage(audio_s=sum(a.duration_s for a in artifacts), device_s=device_s, device=runtime.device),
            raw={"model_type": info.model_type, "settings": dict(settings.__dict__), **raw},
        )

    async def aclose(self) -> None:
        self._closed = True
        runtime, self._runtime = self._runtime, None
        if runtime is not None:
            # The worker is shared with other backends: only this backend's models leave.
            await runtime.worker.call(runtime.cache.clear)

    @classmethod
    def availability(cls) -> str | None:
        import importlib.util

        missing = [p for p in ("torch", "transformers") if importlib.util.find_spec(p) is None]
        return f"missing {', '.join(missing)}: pip install 'mediagen[local]'" if missing else None

    def describe(self) -> dict[str, Any]:
        runtime = self._runtime
        # Nothing is loaded before the first request; say where it would run.
        state: dict[str, Any] = planned_runtime(self.config) if runtime is None else runtime.describe()
        return state

    # -- configuration and runtime --------------------------------------------------------------

    async def _info(self, model: str) -> ModelInfo:
        info = self._infos.get(model)
        if info is None:
            info = self._infos[model] = await asyncio.to_thread(resolve_model, model)
        return info

    async def _get_runtime(self) -> _Runtime:
        if self._runtime is None:
            # Choosing the device imports torch: seconds, so never on the event loop.
            await asyncio.to_thread(self._setup)
        assert self._runtime is not None
        return self._runtime

    def _setup(self) -> None:
        with self._setup_lock:
            if self._runtime is None:
                self._runtime = start_runtime(self.config, self._make_music)

    # -- on the device worker -------------------------------------------------------------------

    def _ensure_loaded(self, runtime: _Runtime, info: ModelInfo) -> tuple[LoadedModel, float]:
        """The model on the device, loading it (and evicting others) when it is not cached."""
        key: Hashable = (self.provider, info.source, dtype_name(runtime.dtype))
        cached = runtime.cache.get(key)
        if cached is not None:
            return cached, 0.0
        started = time.monotonic()
        loaded = load_model(info, runtime.dtype)
        size, largest = module_bytes(loaded.model)
        # transformers models move to the device whole; there is no offload path here.
        runtime.cache.plan(size, largest, what=info.model, can_offload=False)
        runtime.cache.make_room(size)
        loaded.model.to(runtime.device)
        loaded.device = runtime.device
        runtime.cache.put(key, loaded, size_bytes=size, label=f"transformers:{info.model}")
        return loaded, time.monotonic() - started

    def _make_music(self, batch: Batch[_MusicJob]) -> list[list[np.ndarray[Any, Any]]]:
        """One MusicGen `generate` call for every output of the batch (runs on the worker)."""
        import torch

        from mediagen_local.imports import IMPORT_LOCK

        with IMPORT_LOCK:  # sampling imports transformers classes: no racing another thread's first use
            from .sampling import CancelCriterion, SamplerLast, SeededSampler

        runtime = self._runtime
        if runtime is None:  # the backend was closed while the batch waited
            raise asyncio.CancelledError()
        jobs = batch.payloads
        info, settings = jobs[0].info, jobs[0].settings
        loaded, _ = self._ensure_loaded(runtime, info)
        prompts = [job.prompt for job in jobs for _ in job.seeds]
        seeds = [seed for job in jobs for seed in job.seeds]

        inputs = loaded.processor(text=prompts, padding=True, return_tensors="pt").to(loaded.device)
        sampler = SeededSampler(
            seeds,
            info.num_codebooks,
            top_k=settings.top_k,
            top_p=settings.top_p,
            temperature=settings.temperature,
            device=loaded.device,
            total_steps=settings.max_new_tokens,
            on_step=_throttled(batch.progress, settings.max_new_tokens),
        )
        stop = CancelCriterion(batch.all_cancelled)
        config = copy.deepcopy(loaded.model.generation_config)
        # Sampling happens in SeededSampler; generate only takes the code it leaves standing.
        config.do_sample, config.top_k, config.top_p, config.temperature = False, None, None, None
        config.guidance_scale = settings.guidance if settings.guidance > 1 else None
        config.max_new_tokens, config.max_length = settings.max_new_tokens, None
        try:
            with torch.inference_mode():
                audio = loaded.model.generate(
                    **inputs,
                    generation_config=config,
                    logits_processor=SamplerLast([sampler]),
                    stopping_criteria=[stop],
                )
        except MediagenError:
            raise
        except Exception as exc:
            raise GenerationFailedError(f"MusicGen failed: {type(exc).__name__}: {exc}", model=info.model) from exc
        if stop.stopped:
            raise asyncio.CancelledError()
        waves = audio.float().cpu().numpy()
        out: list[list[np.ndarray[Any, Any]]] = []
        start = 0
        for job in jobs:
            out.append([waves[start + i] for i in range(len(job.seeds))])
            start += len(job.seeds)
        return out

    def _speak(
        self,
        runtime: _Runtime,
        info: ModelInfo,
        text: str,
        seeds: list[int],
        settings: SpeechSettings,
        ctx: RunContext,
    ) -> tuple[list[np.ndarray[Any, Any]], list[GenerationWarning], float]:
        """Speak `text` once per seed with VITS (runs on the worker)."""
        started = time.monotonic()
        loaded, _ = self._ensure_loaded(runtime, info)
        inputs = loaded.processor(text, return_tensors="pt").to(loaded.device)
        if inputs["input_ids"].shape[-1] == 0:
            raise InvalidRequestError(
                f"none of the characters of {text[:40]!r} are in {info.model}'s vocabulary; "
                "MMS-TTS models read their own language's script (romanise with uroman for others)"
            )
        waves: list[np.ndarray[Any, Any]] = []
        notes: list[GenerationWarning] = []
        for index, seed in enumerate(seeds):
            if ctx.cancelled.is_set():
                raise asyncio.CancelledError()
            wave = self._vits(loaded, inputs, seed, settings, settings.speaking_rate)
            wanted = settings.num_samples
            if wanted is not None and wave.shape[-1] > wanted:
                # Too long for duration_s: speak faster, once, rather than cut words off.
                rate = settings.speaking_rate * wave.shape[-1] / wanted
                wave = self._vits(loaded, inputs, seed, settings, rate)
                notes.append(
                    GenerationWarning.compatibility(
                        "duration_s",
                        f"the text takes longer than {wanted / info.sampling_rate:g} s; spoke {rate:.2f}x as fast",
                    )
                )
            waves.append(fit_samples(wave[None, :], wanted)[0] if wanted is not None else wave)
            ctx.progress(index + 1, len(seeds))
        return waves, notes, time.monotonic() - started

    @staticmethod
    def _vits(
        loaded: LoadedModel, inputs: Any, seed: int, settings: SpeechSettings, rate: float
    ) -> np.ndarray[Any, Any]:
        import torch

        model = loaded.model
        saved = (model.speaking_rate, model.noise_scale, model.noise_scale_duration)
        model.speaking_rate = rate
        if settings.noise_scale is not None:
            model.noise_scale = settings.noise_scale
        if settings.noise_scale_duration is not None:
            model.noise_scale_duration = settings.noise_scale_duration
        devices = [torch.device(loaded.device)] if loaded.device.startswith("cuda") else []
        try:
            # VITS samples from the global generator; fork it so the seed stays ours and theirs stays theirs.
            with torch.random.fork_rng(devices=devices), torch.inference_mode():
                torch.manual_seed(seed)
                extra = {"speaker_id": settings.speaker_id} if settings.speaker_id is not None else {}
                output = model(**inputs, **extra)
        except Exception as exc:
            raise GenerationFailedError(
                f"VITS failed: {type(exc).__name__}: {exc}", model=str(model.name_or_path)
            ) from exc
        finally:
            model.speaking_rate, model.noise_scale, model.noise_scale_duration = saved
        length = int(output.sequence_lengths[0]) if output.sequence_lengths is not None else output.waveform.shape[-1]
        return np.asarray(output.waveform[0, :length].float().cpu().numpy())


def _throttled(report: Callable[[int, int], None], total: int) -> Callable[[int, int], None]:
    every = max(1, total // _PROGRESS_EVENTS)

    def on_step(step: int, steps: int) -> None:
        if step % every == 0 or step == steps:
            report(step, steps)

    return on_step
