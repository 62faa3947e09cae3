"""`request.options` of the diffusers backend: the settings no other backend has, checked here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mediagen import InvalidRequestError

if TYPE_CHECKING:
    from .loading import ViewInfo

__all__ = ["DiffusersOptions", "SCHEDULER_ALIASES", "SELECTORS", "parse_options", "pipeline_kwargs"]


class DiffusersOptions(BaseModel):
    """Settings of the diffusers backend that no other backend has, passed as `request.options`.

    Each reaches the pipeline's argument of the same name when the pipeline has one; otherwise it
    comes back as a warning.

    Examples:
        >>> req = mg.ImageRequest(prompt="a fox", options={"scheduler": "euler_a", "clip_skip": 1})  # doctest: +SKIP
    """

    # Keys that are not fields here are the pipeline's own `__call__` arguments
    # (`use_resolution_binning`, `max_area` ...), checked against its signature in `plan_request`.
    model_config = ConfigDict(extra="allow", frozen=True)

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
    """Real classifier-free guidance (a second pass with the negative prompt) where the pipeline has it: above 1, with a negative prompt (see *Two kinds of guidance*)."""
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

# Pipeline arguments the mapping sets from request fields (or must own: generators, callbacks,
# outputs); `options` cannot set them, and the error says which request field does.
_OWNED: Mapping[str, str] = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "image": "image",
    "images": "images",
    "mask_image": "mask",
    "control_image": "control_image",
    "height": "height",
    "width": "width",
    "num_inference_steps": "steps",
    "guidance_scale": "guidance",
    "max_guidance_scale": "guidance",
    "strength": "strength",
    "controlnet_conditioning_scale": "control_scale",
    "num_frames": "frames",
    "fps": "fps",
    "frame_rate": "fps",
    "audio_end_in_s": "duration_s",
    "audio_length_in_s": "duration_s",
    "num_images_per_prompt": "n",
    "num_videos_per_prompt": "n",
    "num_waveforms_per_prompt": "n",
    "generator": "seed",
    "latents": "",
    "output_type": "",
    "return_dict": "",
    "callback": "",
    "callback_steps": "",
    "callback_on_step_end": "",
    "callback_on_step_end_tensor_inputs": "",
}


def pipeline_kwargs(opts: DiffusersOptions, view: ViewInfo) -> dict[str, Any]:
    """The options that are the pipeline's own arguments, checked against its `__call__`.

    Raises:
        InvalidRequestError: A key the pipeline does not take, or one a request field sets.
    """
    extra = dict(opts.model_extra or {})
    for name in sorted(extra):
        if name in _OWNED:
            field_name = _OWNED[name]
            hint = f"set it through the request field {field_name!r}" if field_name else "the backend sets it"
            raise InvalidRequestError(f"options.{name} cannot be passed to {view.class_name}: {hint}")
        if name not in view.params or name.startswith("__"):
            accepted = sorted(p for p in view.params if p not in _OWNED and p not in ("self", "kwargs"))
            raise InvalidRequestError(
                f"unknown option {name!r} for the diffusers backend with {view.class_name}; it accepts "
                f"{', '.join(DiffusersOptions.model_fields)} and the pipeline's own arguments: {', '.join(accepted)}"
            )
        _check_plain(f"options.{name}", extra[name])
    return extra


# The largest number an option may hold: the request fields cap sides at 8192 px, so an area
# (FLUX.1 Kontext's `max_area`) or any count beyond 8192 x 8192 is a mistake or an attack.
_LARGEST_NUMBER = 8192 * 8192


def _check_plain(where: str, value: Any, depth: int = 0) -> None:
    """Options reach the pipeline as given: allow plain JSON-like data only, with bounded numbers."""
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, (int, float)):
        if not abs(value) <= _LARGEST_NUMBER:  # also refuses NaN
            raise InvalidRequestError(f"{where} = {value!r} is out of range (at most {_LARGEST_NUMBER})")
        return
    if isinstance(value, (list, tuple, dict)) and depth < 4 and len(value) <= 1024:
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            _check_plain(f"{where}[{key!r}]", item, depth + 1)
        return
    raise InvalidRequestError(
        f"{where} must be plain data (numbers, strings, lists, dicts), not {type(value).__name__}"
    )


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

    Keys that are not `DiffusersOptions` fields are kept as pipeline arguments; `plan_request`
    checks them against the pipeline's `__call__` once it knows the pipeline.

    Raises:
        InvalidRequestError: A bad value.
    """
    try:
        return DiffusersOptions(**options)
    except ValidationError as exc:
        problems = "; ".join(f"options.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidRequestError(
            f"invalid options for the diffusers backend: {problems}",
            errors=[dict(e) for e in exc.errors()],
        ) from exc
