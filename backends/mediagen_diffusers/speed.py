"""Speed options: lossless ways to make a loaded pipeline faster, applied once when it loads.

All are off by default (and in the tests), because each costs something: a warm-up, memory, or a
dependency on the GPU. They are backend settings, not per-request options, since they change the
loaded modules that every request shares. Measured effects are in docs/backends/diffusers.md.

- `channels_last`: convolution weights in NHWC layout, which cuDNN's fastest kernels want (UNets and
  VAEs; transformers have no convolutions to speak of). On a CPU it is roughly neutral.
- `fuse_qkv`: one matmul for the query, key and value projections instead of three. Helps when
  launch-bound (small batches on a big GPU) or together with `torch.compile`. LoRA adapters target
  the separate projections, so they are unfused for the duration of a LoRA request.
- `compile`: `"regional"` compiles each repeated block of the denoiser once
  (`compile_repeated_blocks`), about as fast as compiling the whole model at a fraction of the
  warm-up; `"full"` compiles the whole denoiser (`fullgraph=True`). The first call of each new
  shape or batch size pays a compile (tens of seconds).
- `attention_backend`: diffusers' attention dispatcher (`"native"`, `"flash"`, `"_native_cudnn"`,
  `"sage"` ...); some need extra packages or a recent GPU.
- `compile_mode`: torch.compile's mode. `"auto"` is torch's default, except under the `max` preset
  on CUDA, where it is `"max-autotune-no-cudagraphs"` (autotuned kernels pay off once shapes are
  fixed by the buckets; which mode is best on a given GPU is still to be measured there).
- `buckets`: with compile on, a micro-batch of n outputs is padded to the smallest bucket >= n
  (1, 4, 8, 16 by default), so that a handful of compiled graphs serve every batch instead of one
  recompile per new batch size; the padding outputs are computed and discarded. Graphs are compiled
  with static shapes (`dynamic=False`) then.
- `compile_cache`: keep what was compiled across processes (`mediagen_local.compile_cache`).

The `max` preset (`speed="max"` in the settings) turns on channels_last, full compile with buckets,
the compile cache and the `auto` mode above; options set explicitly beside it still win.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "DEFAULT_BUCKETS",
    "CompileMode",
    "SpeedOptions",
    "apply_speed",
    "bucket_for",
    "compile_mode_for",
    "denoiser_of",
    "unfused",
]

logger = logging.getLogger("mediagen")

_DENOISERS = ("transformer", "unet", "prior")
_CONVOLUTIONAL = ("unet", "vae", "controlnet")

DEFAULT_BUCKETS: tuple[int, ...] = (1, 4, 8, 16)
"""Batch sizes a compiled pipeline's micro-batches are padded to, unless the settings say otherwise."""

CompileMode = Literal["auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


class SpeedOptions(BaseModel):
    """Speed settings of the diffusers backend (all off by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels_last: bool = False
    """Put UNet, VAE and ControlNet weights in channels-last memory layout (faster convolutions on CUDA)."""
    fuse_qkv: bool = False
    """Fuse the attention query/key/value projections into one matmul."""
    compile: Literal["off", "regional", "full"] = "off"
    """torch.compile the denoiser: its repeated blocks (`regional`) or all of it (`full`)."""
    attention_backend: str | None = None
    """diffusers attention backend for the denoiser (`native`, `flash`, `_native_cudnn`, `sage` ...)."""
    compile_mode: CompileMode = "auto"
    """torch.compile mode (see `compile_mode_for`)."""
    buckets: tuple[int, ...] = ()
    """Batch sizes micro-batches are padded to (empty: no padding)."""
    compile_cache: bool = True
    """Keep compiled artifacts across processes (only with compile on)."""
    preset: Literal["default", "max"] = "default"
    """The preset these options came from (it picks the `auto` compile mode)."""

    @property
    def any(self) -> bool:
        """Whether any option is on."""
        return self.channels_last or self.fuse_qkv or self.compile != "off" or self.attention_backend is not None


def compile_mode_for(options: SpeedOptions, device_type: str) -> str | None:
    """The torch.compile mode to use on a device of `device_type` (None: torch's default)."""
    if options.compile_mode == "auto":
        # Autotuning on a CPU compiles C++ GEMM templates for minutes for little gain; on CUDA it is
        # the mode the `max` preset stands for (to be measured against reduce-overhead on the GPU).
        return "max-autotune-no-cudagraphs" if options.preset == "max" and device_type == "cuda" else None
    return None if options.compile_mode == "default" else options.compile_mode


def bucket_for(n: int, buckets: tuple[int, ...]) -> int:
    """The batch size `n` outputs are padded to: the smallest bucket >= n, or n past the largest."""
    return min((b for b in buckets if b >= n), default=n)


def denoiser_of(pipe: Any) -> Any | None:
    """The pipeline's denoising network (transformer, UNet or prior), if it has one."""
    for name in _DENOISERS:
        module = getattr(pipe, name, None)
        if module is not None:
            return module
    return None


def apply_speed(pipe: Any, options: SpeedOptions) -> list[str]:
    """Apply the speed options to a loaded pipeline (on the device worker, after placing it).

    An option the pipeline cannot take is skipped with a log line rather than failing the load: it
    is an optimisation, and the model still works without it.

    Returns:
        What was applied, for `describe()`.
    """
    import torch

    applied: list[str] = []
    denoiser = denoiser_of(pipe)
    if options.channels_last:
        for name in _CONVOLUTIONAL:
            module = getattr(pipe, name, None)
            if isinstance(module, torch.nn.Module):
                # torch's stubs lack the memory_format overload of Module.to.
                move: Any = module.to
                move(memory_format=torch.channels_last)
                applied.append(f"channels_last:{name}")
    if options.fuse_qkv and denoiser is not None:
        try:
            denoiser.fuse_qkv_projections()
            applied.append("fuse_qkv")
        except (AttributeError, ValueError, NotImplementedError) as exc:
            logger.info("fused QKV skipped for %s: %s", type(denoiser).__name__, exc)
    if options.attention_backend and denoiser is not None:
        try:
            denoiser.set_attention_backend(options.attention_backend)
            applied.append(f"attention:{options.attention_backend}")
        except (AttributeError, ValueError, RuntimeError, ImportError) as exc:
            logger.warning("attention backend %r not used: %s", options.attention_backend, exc)
    if options.compile != "off" and denoiser is not None:
        device = getattr(denoiser, "device", None)
        mode = compile_mode_for(options, getattr(device, "type", "cpu"))
        kwargs: dict[str, Any] = {"fullgraph": True}
        if mode is not None:
            kwargs["mode"] = mode
        if options.buckets:
            # Padded batches come in a few fixed sizes: one static graph each beats a dynamic one.
            kwargs["dynamic"] = False
        suffix = f":{mode}" if mode else ""
        if options.compile == "regional" and getattr(denoiser, "_repeated_blocks", None):
            denoiser.compile_repeated_blocks(**kwargs)
            applied.append(f"compile:regional{suffix}")
        else:
            denoiser.compile(**kwargs)
            applied.append(f"compile:full{suffix}")
    return applied


@contextlib.contextmanager
def unfused(pipe: Any, fused: bool) -> Iterator[None]:
    """Undo fused QKV projections for the duration of a LoRA call, and fuse them again after.

    LoRA adapters are injected into the separate `to_q`/`to_k`/`to_v` layers, which the fused
    processors do not call; without this the adapters would silently do nothing.

    Args:
        pipe: The pipeline about to run with LoRA adapters.
        fused: Whether `apply_speed` fused its projections.
    """
    denoiser = denoiser_of(pipe)
    if not fused or denoiser is None:
        yield
        return
    denoiser.unfuse_qkv_projections()
    try:
        yield
    finally:
        denoiser.fuse_qkv_projections()
