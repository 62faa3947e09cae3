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
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["SpeedOptions", "apply_speed", "denoiser_of", "unfused"]

logger = logging.getLogger("mediagen")

_DENOISERS = ("transformer", "unet", "prior")
_CONVOLUTIONAL = ("unet", "vae", "controlnet")


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

    @property
    def any(self) -> bool:
        """Whether any option is on."""
        return self.channels_last or self.fuse_qkv or self.compile != "off" or self.attention_backend is not None


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
        if options.compile == "regional" and getattr(denoiser, "_repeated_blocks", None):
            denoiser.compile_repeated_blocks(fullgraph=True)
            applied.append("compile:regional")
        else:
            denoiser.compile(fullgraph=True)
            applied.append("compile:full")
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
