"""`request.options` of the diffusers backend: the settings no other backend has, checked here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mediagen import InvalidRequestError

__all__ = ["DiffusersOptions", "SCHEDULER_ALIASES", "SELECTORS", "parse_options"]


class DiffusersOptions(BaseModel):
    """Settings of the diffusers backend that no other backend has, passed as `request.options`.

    Each reaches the pipeline's argument of the same name when the pipeline has one; otherwise it
    comes back as a warning.

    Examples:
        >>> req = mg.ImageRequest(prompt="a fox", options={"scheduler": "euler_a", "clip_skip": 1})  # doctest: +SKIP
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    scheduler: str | None = None
    """Sampler for this request: a scheduler class compatible with the model's own
    (`"EulerAncestralDiscreteScheduler"`) or a short name (`euler`, `euler_a`, `ddim`, `dpm++`, `unipc` ...)."""
    control_model: str | None = None
    """ControlNet to use when the request does not name one in `control_model` (hub id or directory)."""
    control_guidance_start: float | None = Field(None, ge=0.0, le=1.0)
    """Fraction of the steps after which ControlNet starts steering."""
    control_guidance_end: float | None = Field(None, ge=0.0, le=1.0)
    """Fraction of the steps after which ControlNet stops steering."""
    guidance_rescale: float | None = Field(None, ge=0.0, le=1.0)
    """Rescales guided noise to fix over-exposure (SD, SDXL, LTX); 0.7 is the paper's value."""
    true_cfg_scale: float | None = Field(None, ge=0.0, le=100.0)
    """Real classifier-free guidance for guidance-distilled models (Flux): above 1 the negative prompt takes effect."""
    clip_skip: int | None = Field(None, ge=0, le=12)
    """CLIP layers to skip from the end when encoding the prompt (some fine-tunes expect 1 or 2)."""
    eta: float | None = Field(None, ge=0.0, le=1.0)
    """DDIM's eta: 0 is deterministic, 1 is DDPM-like noise."""
    max_sequence_length: int | None = Field(None, ge=1, le=4096)
    """Prompt tokens the T5-style text encoder reads (Flux, SD3, Wan, LTX, CogVideoX)."""
    padding_mask_crop: int | None = Field(None, ge=0)
    """Inpaint only a crop around the mask, with this many pixels of margin (sharper small edits)."""
    decode_chunk_size: int | None = Field(None, ge=1)
    """Frames the VAE decodes at once (SVD, AnimateDiff): lower saves memory."""
    motion_bucket_id: int | None = Field(None, ge=0, le=1023)
    """How much motion Stable Video Diffusion adds (127 by default; higher moves more)."""
    noise_aug_strength: float | None = Field(None, ge=0.0, le=10.0)
    """Noise added to SVD's conditioning image: more departs further from it."""
    min_guidance_scale: float | None = Field(None, ge=0.0, le=100.0)
    """SVD's guidance on the first frame (it rises to `guidance` on the last)."""
    normalize: float | bool | None = None
    """Audio: peak-normalise each sound, True to 0.99 of full scale, a number to that level."""


SELECTORS = frozenset({"scheduler", "control_model"})
"""Options that are not pipeline arguments of the same name (they select a component)."""

SCHEDULER_ALIASES: Mapping[str, str] = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "pndm": "PNDMScheduler",
    "lms": "LMSDiscreteScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "dpm++_2m": "DPMSolverMultistepScheduler",
    "dpm++_sde": "DPMSolverSDEScheduler",
    "dpm_single": "DPMSolverSinglestepScheduler",
    "kdpm2": "KDPM2DiscreteScheduler",
    "kdpm2_a": "KDPM2AncestralDiscreteScheduler",
    "deis": "DEISMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
    "flow_euler": "FlowMatchEulerDiscreteScheduler",
}
"""Short scheduler names accepted by `options.scheduler`."""


def parse_options(options: Mapping[str, Any]) -> DiffusersOptions:
    """Validate `request.options` for this backend.

    Raises:
        InvalidRequestError: An unknown key (the message lists the accepted ones) or a bad value.
    """
    unknown = sorted(set(options) - set(DiffusersOptions.model_fields))
    if unknown:
        raise InvalidRequestError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for the diffusers backend; "
            f"it accepts: {', '.join(DiffusersOptions.model_fields)}"
        )
    try:
        return DiffusersOptions(**options)
    except ValidationError as exc:
        problems = "; ".join(f"options.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidRequestError(
            f"invalid options for the diffusers backend: {problems}",
            errors=[dict(e) for e in exc.errors()],
        ) from exc
