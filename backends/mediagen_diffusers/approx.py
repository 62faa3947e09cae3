"""Approximate speed-ups: faster outputs that differ from the exact ones (opt-in, and marked).

Unlike the lossless options of `speed.py`, these change what a model makes for a seed, so each one
is off by default, named in what the backend says it applied (`describe()["approximate"]`), in every
result's `raw["approximate"]` and in every artifact's `metadata["approximate"]`. Measured speed-ups
and PSNR/SSIM against the exact path are in docs/performance.md (`benchmarks/local_throughput.py
--approx ...`).

- `step_cache`: diffusers' cache hooks reuse work from earlier denoising steps:
  `"first-block"` (First Block Cache: when the first transformer block's output barely changed since
  the previous step, the rest of the blocks are skipped and their last residual reused; the
  threshold is `step_cache_threshold`), `"faster"` (FasterCache, attention-level part: the spatial
  attention of every other step is reused), `"pyramid"` (Pyramid Attention Broadcast: likewise, for
  the middle of the schedule) and `"taylorseer"` (TaylorSeer: attention outputs forecast from a
  Taylor series between full steps). They hook a *transformer* denoiser with diffusers' `CacheMixin`
  (FLUX, Wan, LTX, HunyuanVideo, CogVideoX, Qwen-Image ...); UNets (SD 1.5, SDXL) and transformers
  without it (SD3, PixArt, Sana) are refused with `UnsupportedRequestError`, never run exactly in
  silence. Caveat: the hooks decide per pipeline call whether to skip, from the whole batch, so an
  output made with a step cache may depend on what it was batched with (set `max_batch=1` where
  that matters).
- `quantize="fp8"`: the denoiser's linear weights stored in float8 (e4m3) by torchao
  (`Float8WeightOnlyConfig`; `pip install 'mediagen[fp8]'`), halving their memory; the matmuls run
  in the compute dtype. Made for CUDA; it also runs (torchao dequantizes in plain torch ops)
  on the CPU, where the tests run it; refused on MPS.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mediagen import ConfigError, UnsupportedRequestError

__all__ = [
    "ApproxOptions",
    "ApproxState",
    "StepCache",
    "apply_approx",
    "approx_call",
    "step_cache_error",
    "step_cache_refusal",
]

logger = logging.getLogger("mediagen")

StepCache = Literal["off", "first-block", "faster", "pyramid", "taylorseer"]

DEFAULT_FIRST_BLOCK_THRESHOLD = 0.05
"""diffusers' own default (`FirstBlockCacheConfig.threshold`)."""

_DENOISERS = ("transformer", "unet", "prior")
# Cache hooks that read the running pipeline's timestep (through `current_timestep_callback`).
_TIMESTEP_HOOKS = ("faster", "pyramid")


class ApproxOptions(BaseModel):
    """Approximate speed settings of the diffusers backend (all off by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step_cache: StepCache = "off"
    """Reuse work across denoising steps with one of diffusers' cache hooks (transformer denoisers)."""
    step_cache_threshold: float | None = Field(None, gt=0.0, le=1.0)
    """First Block Cache only: skip the remaining blocks when the first block's output changed by less
    than this (mean absolute relative difference); higher is faster and less exact (default 0.05)."""
    quantize: Literal["off", "fp8"] = "off"
    """Store the denoiser's linear weights in float8 (torchao; made for CUDA, runs on the CPU)."""

    @property
    def any(self) -> bool:
        """Whether any approximate option is on."""
        return self.step_cache != "off" or self.quantize != "off"

    def check(self) -> None:
        """Refuse settings that contradict each other (raised when the backend is made).

        Raises:
            ConfigError: A threshold without First Block Cache.
        """
        if self.step_cache_threshold is not None and self.step_cache != "first-block":
            raise ConfigError(
                "step_cache_threshold applies to step_cache='first-block' only "
                f"(step_cache is {self.step_cache!r}); remove it or choose first-block"
            )


@dataclass
class StepClock:
    """The timestep of the pipeline running now, for the hooks that skip by timestep.

    The denoiser (and so its hooks) is shared by every pipeline `from_pipe` made of one model; the
    device worker runs one call at a time, so the pipeline of that call is the one to read.
    """

    pipe: Any = None

    def __call__(self) -> Any:
        pipe = self.pipe
        timestep = getattr(pipe, "current_timestep", None) if pipe is not None else None
        # Outside a call (or before the loop's first step) no range contains -1: compute, skip nothing.
        return -1 if timestep is None else timestep


@dataclass
class ApproxState:
    """What `apply_approx` did to one loaded model."""

    applied: list[str] = field(default_factory=list)
    """Labels for `describe()`, results and artifacts (`step_cache:first-block(0.05)`, `fp8:transformer`)."""
    clock: StepClock = field(default_factory=StepClock)
    denoiser: Any = None
    """The hooked denoiser, whose cache state is reset before each call (None: no step cache)."""


def _denoiser(pipe: Any) -> tuple[str, Any] | None:
    for name in _DENOISERS:
        module = getattr(pipe, name, None)
        if module is not None:
            return name, module
    return None


def _denoiser_class(components: Any) -> str | None:
    """The denoiser's class name from `model_index.json` entries (`["diffusers", "FluxTransformer2DModel"]`)."""
    for name in _DENOISERS:
        entry = components.get(name)
        if isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[1], str):
            return entry[1]
    return None


def step_cache_refusal(components: Any, options: ApproxOptions) -> str | None:
    """Why a model cannot take the step cache, judged from its `model_index.json` (nothing loaded).

    Blocking (it may import the denoiser's diffusers module): call it off the event loop.

    Args:
        components: `ModelInfo.components`.
        options: The approximate settings.

    Returns:
        The reason (for `step_cache_error`), or None when the model may run: a class that cannot be
        judged here is judged again when the hook is applied.
    """
    if options.step_cache == "off":
        return None
    class_name = _denoiser_class(components)
    if class_name is None:
        return "it has no transformer or UNet denoiser"
    import diffusers
    from diffusers.models.cache_utils import CacheMixin

    from mediagen_local.imports import IMPORT_LOCK

    with IMPORT_LOCK:  # diffusers' lazy module imports the class's module on first use
        cls = getattr(diffusers, class_name, None)
    if isinstance(cls, type) and not issubclass(cls, CacheMixin):
        return f"its denoiser {class_name} has no diffusers cache hooks (CacheMixin)"
    return None


def step_cache_error(model: str, step_cache: str, why: str) -> UnsupportedRequestError:
    """The error for a model the step cache cannot hook (`why` from `step_cache_refusal`)."""
    return UnsupportedRequestError(
        f"{model} cannot run with step_cache={step_cache!r}: {why}. diffusers' step caches hook "
        "transformer denoisers with CacheMixin (FLUX, Wan, LTX, HunyuanVideo, CogVideoX, Qwen-Image ...), "
        "not UNets (SD 1.5, SDXL) nor SD3/PixArt/Sana; serve this model from a backend without step_cache",
        feature="step_cache",
        provider="diffusers",
        model=model,
    )


def _cache_config(options: ApproxOptions, clock: StepClock) -> tuple[Any, str]:
    # The config dataclasses are untyped: reach them through Any.
    diffusers: Any = importlib.import_module("diffusers")

    if options.step_cache == "first-block":
        threshold = options.step_cache_threshold or DEFAULT_FIRST_BLOCK_THRESHOLD
        return diffusers.FirstBlockCacheConfig(threshold=threshold), f"first-block({threshold:g})"
    if options.step_cache == "faster":
        # Only FasterCache's attention-level reuse: its unconditional-branch skipping assumes the
        # pipeline stacks [uncond, cond] in one batch, which is not knowable from the module (FLUX
        # does not), so every model is treated as guidance-distilled.
        config = diffusers.FasterCacheConfig(
            spatial_attention_block_skip_range=2,
            current_timestep_callback=clock,
            is_guidance_distilled=True,
        )
        return config, "faster(attention:2)"
    if options.step_cache == "pyramid":
        return (
            diffusers.PyramidAttentionBroadcastConfig(
                spatial_attention_block_skip_range=2, current_timestep_callback=clock
            ),
            "pyramid(spatial:2)",
        )
    return diffusers.TaylorSeerCacheConfig(), "taylorseer"


def apply_approx(pipe: Any, options: ApproxOptions, *, model: str, device: str) -> ApproxState:
    """Apply the approximate options to a loaded pipeline (on the device worker, after placing it).

    Unlike `apply_speed`, an option that cannot be applied fails the load: outputs must never be
    believed approximate when they are exact, nor exact when they are not.

    Args:
        pipe: The loaded pipeline, on its device.
        options: The approximate settings.
        model: The model, for messages.
        device: The torch device the pipeline runs on.

    Returns:
        What was applied.

    Raises:
        UnsupportedRequestError: The model or the device cannot take an option.
        ConfigError: fp8 was asked for without torchao installed.
    """
    state = ApproxState()
    if not options.any:
        return state
    found = _denoiser(pipe)
    if found is None:
        what = "step_cache" if options.step_cache != "off" else "quantize"
        raise UnsupportedRequestError(
            f"{model} has no denoiser (transformer or UNet) for {what}", feature=what, provider="diffusers", model=model
        )
    name, denoiser = found
    if options.quantize == "fp8":
        _fp8(denoiser, name, model=model, device=device)
        state.applied.append(f"fp8:{name}")
    if options.step_cache != "off":
        if not callable(getattr(denoiser, "enable_cache", None)):
            raise step_cache_error(
                model, options.step_cache, f"its denoiser {type(denoiser).__name__} has no cache hooks"
            )
        if options.step_cache in _TIMESTEP_HOOKS and not hasattr(type(pipe), "current_timestep"):
            raise step_cache_error(
                model, options.step_cache, f"{type(pipe).__name__} does not report its timestep to the hooks"
            )
        config, label = _cache_config(options, state.clock)
        try:
            denoiser.enable_cache(config)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # e.g. First Block Cache on a transformer whose blocks diffusers has not registered.
            raise step_cache_error(model, options.step_cache, f"diffusers refused the hook ({exc})") from exc
        state.denoiser = denoiser
        state.applied.append(f"step_cache:{label}")
    return state


def _fp8(denoiser: Any, name: str, *, model: str, device: str) -> None:
    if importlib.util.find_spec("torchao") is None:
        raise ConfigError("quantize='fp8' needs torchao: pip install 'mediagen[fp8]'")
    if not device.startswith(("cuda", "cpu")):
        # float8 tensors need kernels that MPS and the others do not have.
        raise UnsupportedRequestError(
            f"quantize='fp8' runs on CUDA or the CPU; this backend runs on {device}",
            feature="quantize",
            provider="diffusers",
            model=model,
        )
    if device.startswith("cpu"):
        # torchao dequantizes in plain torch ops here, not in the kernels it was made for.
        logger.warning(
            "%s: fp8 weights on the CPU are dequantized by plain torch ops; measure before relying on it", model
        )
    torchao: Any = importlib.import_module("torchao.quantization")  # untyped
    torchao.quantize_(denoiser, torchao.Float8WeightOnlyConfig())
    logger.info("%s: %s weights in float8 (torchao)", model, name)


@contextlib.contextmanager
def approx_call(pipe: Any, state: ApproxState | None) -> Iterator[None]:
    """Around one pipeline call: point the timestep clock at `pipe`, and start from a clean cache.

    Pipelines reset the hooks' state when a call ends normally; a call that failed or was
    interrupted would leave the previous call's residuals behind for the next one.
    """
    if state is None or state.denoiser is None:
        yield
        return
    reset = getattr(state.denoiser, "_reset_stateful_cache", None)
    if callable(reset):
        reset()
    state.clock.pipe = pipe
    try:
        yield
    finally:
        state.clock.pipe = None
