"""Mapping: a typed request becomes the keyword arguments of one pipeline call.

Every request field either reaches a pipeline argument or becomes a warning (`ctx.warn`), which the
caller sees on the result, or as an error with `strict=True`. Whether an argument exists is read
from the pipeline class's own `__call__` signature, so a family that lacks one (Shap-E has no
negative prompt, SVD no prompt) is reported, never silently dropped.

The result is a `Plan` (`plan.py`): arguments shared by a batch, and per-output inputs. Seeds are
per output too, so each output comes from its own generator whatever it is batched with. Audio
requests are planned by `audio.py`; provider-specific settings are checked in `options.py`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any

from mediagen import (
    AudioRequest,
    GenerationWarning,
    Image,
    ImageRequest,
    InvalidRequestError,
    MeshRequest,
    UnsupportedRequestError,
    VideoRequest,
)
from mediagen._config import DEFAULT_IMAGE_SIZE

from .audio import plan_audio
from .families import CONTROLNET_SUFFIX, MULTI_IMAGE_CLASSES, batches_image_lists, one_output_per_call
from .loading import ModelInfo, ViewInfo
from .options import SCHEDULER_ALIASES, DiffusersOptions
from .plan import Mapper, Output, Plan, freeze

if TYPE_CHECKING:
    import PIL.Image

    from mediagen import Request, RunContext

__all__ = ["plan_request"]


# Pixel multiples the families need (their latent patch times the VAE's downscale), and video
# frame counts of the form k * step + 1 (the VAE's temporal compression).
_SIZE_MULTIPLES = {
    "Flux": 16,
    "StableDiffusion3": 16,
    "Sana": 32,
    "PixArt": 16,
    "Wan": 16,
    "CogVideoX": 16,
    "LTX": 32,
}
_FRAME_STEPS = {"Wan": 4, "LTX": 8, "CogVideoX": 4}
_DEFAULT_FPS = {"Wan": 16.0, "LTX": 25.0, "CogVideoX": 8.0, "AnimateDiff": 8.0, "StableVideoDiffusion": 7.0}


def _by_prefix(table: Mapping[str, Any], class_name: str, default: Any) -> Any:
    return next((value for prefix, value in table.items() if class_name.startswith(prefix)), default)


def plan_request(
    request: Request,
    info: ModelInfo,
    opts: DiffusersOptions,
    ctx: RunContext,
    *,
    seeds: list[int],
    default_control_model: str | None = None,
) -> Plan:
    """Map a request onto the model's pipeline.

    Args:
        request: The validated request (its input images already fetched).
        info: The model.
        opts: The request's validated options.
        ctx: Where warnings go (raises instead under `strict=True`).
        seeds: One seed per output.
        default_control_model: The backend's ControlNet when neither request nor options name one.

    Raises:
        UnsupportedRequestError: The model has no pipeline for the task, or a warning under strict.
        InvalidRequestError: An option names something the model cannot use (an unknown scheduler).
    """
    if request.task not in info.tasks:
        raise UnsupportedRequestError(
            f"{info.model} ({info.class_name}) cannot do {request.task}; it does {', '.join(sorted(info.tasks))}",
            feature=request.task,
        )
    if isinstance(request, ImageRequest):
        plan = _plan_image(request, info, opts, ctx, seeds, default_control_model)
    elif isinstance(request, VideoRequest):
        plan = _plan_video(request, info, opts, ctx, seeds)
    elif isinstance(request, MeshRequest):
        plan = _plan_mesh(request, info, opts, ctx, seeds)
    elif isinstance(request, AudioRequest):
        plan = plan_audio(request, info, opts, ctx, seeds)
    else:  # pragma: no cover - the four request types are all handled above
        raise UnsupportedRequestError(f"the diffusers backend does not make {request.modality}")
    plan.scheduler = _scheduler(opts.scheduler, info)
    return plan


# -- images ----------------------------------------------------------------------------------------


def _plan_image(
    req: ImageRequest,
    info: ModelInfo,
    opts: DiffusersOptions,
    ctx: RunContext,
    seeds: list[int],
    default_control: str | None,
) -> Plan:
    base = "inpaint" if req.mask is not None else "image-to-image" if req.image is not None else "text-to-image"
    controlnet: str | None = None
    if req.control_image is not None:
        # A ControlNet the request names wins; else the checkpoint's own (saved in its directory);
        # else the backend's default.
        controlnet = req.control_model or opts.control_model
        if controlnet is None and not info.own_controlnet:
            controlnet = default_control
            if controlnet is None:
                raise UnsupportedRequestError(
                    "control_image needs a ControlNet: pass control_model='<hub id or directory>' "
                    "(or options={'control_model': ...}, or set default_control_model for the backend)",
                    feature="control_model",
                )
    elif req.control_model is not None:
        ctx.warn("control_model", "control_model is used only with control_image; it was ignored")
    view_id = base + (CONTROLNET_SUFFIX if req.control_image is not None else "")
    if view_id not in info.views:
        raise UnsupportedRequestError(
            f"{info.model} ({info.class_name}) has no ControlNet pipeline for {base}", feature="control_image"
        )
    view = info.views[view_id]
    m = Mapper(info, view, ctx, req.n)

    m.each("prompt", req.prompt, "prompt")
    m.guidance(req.guidance, req.negative_prompt, opts)
    m.shared("num_inference_steps", req.steps, "steps")
    m.shared("strength", req.strength, "strength")
    m.shared("controlnet_conditioning_scale", req.control_scale, "control_scale")
    m.options(opts)

    size = _image_size(req, info, view, ctx)
    if size is not None and m.accepts("height"):
        m.call["width"], m.call["height"] = size
    if req.image is not None:
        # Multi-reference pipelines size their condition images themselves (FLUX.2 wants >= 64 px).
        resize_to = None if view.class_name in MULTI_IMAGE_CLASSES else size
        m.inputs["image"] = [_rgb(req.image, resize_to)] * req.n
    _reference_images(req, m)
    if size is not None and m.accepts("max_area") and "max_area" not in m.call:
        # FLUX.1 Kontext sizes its output by area (1 MP by default) and aspect ratio: the size asked for.
        m.call["max_area"] = size[0] * size[1]
    if req.mask is not None:
        m.inputs["mask_image"] = [_mask(req.mask, size)] * req.n
    if req.control_image is not None:
        # The text-to-image ControlNet pipelines call the control image `image`; the others, whose
        # `image` is the picture to start from, call it `control_image`.
        name = "control_image" if "control_image" in view.params else "image"
        m.inputs[name] = [_rgb(req.control_image, size)] * req.n
    m.call["output_type"] = "pil"

    loras = tuple(req.loras)
    if loras and not info.lora:
        for lora in loras:
            ctx.warn("loras", f"{view.class_name} cannot load LoRA adapters; {lora.path} was not applied")
        loras = ()
    return _per_prompt(
        Plan(
            view=view_id,
            class_name=view.class_name,
            controlnet=controlnet,
            call=m.call,
            inputs=m.inputs,
            seeds=seeds,
            output=Output(kind="image", format=req.output_format),
            loras=loras,
            callbacks=view.callbacks,
            size=size,
        ),
        view,
        info,
    )


def _image_size(req: ImageRequest, info: ModelInfo, view: ViewInfo, ctx: RunContext) -> tuple[int, int] | None:
    multiple = _by_prefix(_SIZE_MULTIPLES, view.class_name, 8)
    if req.width is not None or req.height is not None or req.aspect_ratio is not None:
        width, height = req.size(default=info.default_size or DEFAULT_IMAGE_SIZE, multiple=multiple)
        return _rounded_size(width, height, multiple, view, ctx)
    # Without a size, follow the input image (rounded to what the model can make); with no input
    # the pipeline's own default applies.
    first = req.image if req.image is not None else req.control_image
    if first is None and req.images:
        first = req.images[0]
    if first is not None:
        pil = first.to_pil()
        return _round(pil.width, multiple), _round(pil.height, multiple)
    return None


# -- video -----------------------------------------------------------------------------------------


def _plan_video(req: VideoRequest, info: ModelInfo, opts: DiffusersOptions, ctx: RunContext, seeds: list[int]) -> Plan:
    view = info.views[req.task]
    m = Mapper(info, view, ctx, req.n)
    name = view.class_name

    if m.accepts("prompt"):
        m.inputs["prompt"] = [req.prompt or ""] * req.n
    elif req.prompt:
        m.unsupported("prompt", f"{name} is conditioned on the image only; the prompt was ignored")
    m.shared("num_inference_steps", req.steps, "steps")
    # SVD ramps guidance from the first frame to the last; `guidance` sets where it ends.
    scale_name = "max_guidance_scale" if m.accepts("max_guidance_scale") else "guidance_scale"
    m.guidance(req.guidance, req.negative_prompt, opts, scale_name=scale_name)
    m.options(opts)

    size = _video_size(req, view, ctx)
    if size is None and req.image is not None:
        # Like image-to-image: without a size, the video takes the picture's (rounded as the model needs).
        multiple = _by_prefix(_SIZE_MULTIPLES, name, 8)
        pil = req.image.to_pil()
        size = _round(pil.width, multiple), _round(pil.height, multiple)
    if size is not None:
        m.call["width"], m.call["height"] = size
    if req.image is not None:
        m.inputs["image"] = [_rgb(req.image, size)] * req.n

    default_fps = _by_prefix(_DEFAULT_FPS, name, 8.0)
    fps = req.fps or default_fps
    if req.frames is not None or req.duration_s is not None:
        default_frames = view.defaults.get("num_frames") or info.default_frames or 16
        m.call["num_frames"] = _frames(req.num_frames(default_frames, fps), name, ctx)
    # Some families are conditioned on the frame rate; give them the one the video will play at.
    if m.accepts("fps"):
        m.call["fps"] = max(1, round(fps))
    elif m.accepts("frame_rate"):
        m.call["frame_rate"] = max(1, round(fps))
    m.call["output_type"] = "np"
    return _per_prompt(
        Plan(
            view=req.task,
            class_name=name,
            controlnet=None,
            call=m.call,
            inputs=m.inputs,
            seeds=seeds,
            output=Output(kind="video", fps=float(fps)),
            callbacks=view.callbacks,
            size=size,
        ),
        view,
        info,
    )


def _video_size(req: VideoRequest, view: ViewInfo, ctx: RunContext) -> tuple[int, int] | None:
    if req.width is None and req.height is None:
        return None
    default_w, default_h = view.defaults.get("width"), view.defaults.get("height")
    width = req.width or (default_w if isinstance(default_w, int) else req.height)
    height = req.height or (default_h if isinstance(default_h, int) else req.width)
    assert width is not None and height is not None
    return _rounded_size(width, height, _by_prefix(_SIZE_MULTIPLES, view.class_name, 8), view, ctx)


def _rounded_size(width: int, height: int, multiple: int, view: ViewInfo, ctx: RunContext) -> tuple[int, int]:
    """Round both sides to what the model makes, saying so when that changes the size asked for."""
    rounded = _round(width, multiple), _round(height, multiple)
    if rounded != (width, height):
        ctx.warn(
            _compat(
                "width" if rounded[0] != width else "height",
                f"{view.class_name} needs sides in multiples of {multiple}: made {rounded[0]}x{rounded[1]}"
                f" instead of {width}x{height}",
            )
        )
    return rounded


def _frames(wanted: int, class_name: str, ctx: RunContext) -> int:
    step = int(_by_prefix(_FRAME_STEPS, class_name, 1))
    if step == 1 or (wanted - 1) % step == 0:
        return wanted
    made = max(1, round((wanted - 1) / step)) * step + 1
    ctx.warn(_compat("frames", f"{class_name} makes 1 + a multiple of {step} frames: made {made} instead of {wanted}"))
    return made


# -- meshes ----------------------------------------------------------------------------------------


def _plan_mesh(req: MeshRequest, info: ModelInfo, opts: DiffusersOptions, ctx: RunContext, seeds: list[int]) -> Plan:
    view = info.views[req.task]
    m = Mapper(info, view, ctx, req.n)
    if req.image is not None:
        if req.prompt:
            m.unsupported("prompt", f"{view.class_name} reconstructs the image only; the prompt was ignored")
        m.inputs["image"] = [_rgb(req.image, None)] * req.n
    else:
        m.each("prompt", req.prompt, "prompt")
    m.each("negative_prompt", req.negative_prompt, "negative_prompt")
    m.shared("num_inference_steps", req.steps, "steps")
    m.shared("guidance_scale", req.guidance, "guidance")
    m.options(opts)
    m.call["output_type"] = "mesh"
    return _per_prompt(
        Plan(
            view=req.task,
            class_name=view.class_name,
            controlnet=None,
            call=m.call,
            inputs=m.inputs,
            seeds=seeds,
            output=Output(kind="mesh", format=req.format),
            callbacks=view.callbacks,
        ),
        view,
        info,
    )


# -- inputs: reference images, and pipelines that take one input per call --------------------------

_IMAGE_INPUTS = ("image", "mask_image", "control_image")
_PER_PROMPT_ARGS = ("num_images_per_prompt", "num_videos_per_prompt", "num_waveforms_per_prompt")


def _reference_images(req: ImageRequest, m: Mapper) -> None:
    """`images`: several reference images, for the pipelines that take a list of them as `image`."""
    references = list(req.images or [])
    if not references:
        return
    if m.view.class_name not in MULTI_IMAGE_CLASSES:
        takes = ", ".join(sorted(MULTI_IMAGE_CLASSES))
        raise UnsupportedRequestError(
            f"{m.info.model} ({m.view.class_name}) takes no reference images; `images` works with "
            f"pipelines that edit from several images ({takes}); for one input image use `image`",
            feature="images",
        )
    pictures = ([m.inputs["image"][0]] if "image" in m.inputs else []) + [_rgb(r, None) for r in references]
    # One list per output: the pipeline reads a list of images as the references of one prompt.
    m.inputs["image"] = [pictures] * m.n


def _per_prompt(plan: Plan, view: ViewInfo, info: ModelInfo) -> Plan:
    """Switch a plan with input images to one-input calls where the pipeline needs that.

    Pipelines outside diffusers' auto-pipeline image tables may not take one input image per
    output (Shap-E keeps the first of a list; Wan repeats the image latents per prompt), and a list
    of reference images is one input already. Such a plan passes its inputs once with
    `num_*_per_prompt = n` (or once per output, where even that fails: `one_output_per_call`), and
    only requests with the very same inputs share a call.
    """
    has_images = any(name in plan.inputs for name in _IMAGE_INPUTS)
    multi = any(isinstance(value, list) for value in plan.inputs.get("image", []))
    if not has_images or (batches_image_lists(plan.class_name) and not multi):
        return plan
    argument = next((name for name in _PER_PROMPT_ARGS if name in view.params), None)
    if argument is None:
        return plan
    plan.per_prompt = argument
    plan.one_at_a_time = one_output_per_call(plan.class_name, info.components)
    plan.group = tuple((name, _fingerprint(values[0])) for name, values in sorted(plan.inputs.items()))
    return plan


def _fingerprint(value: Any) -> Hashable:
    """Identity of an input value: text as is, pictures by a hash of their pixels."""
    import hashlib

    if isinstance(value, list):
        return tuple(_fingerprint(item) for item in value)
    if hasattr(value, "tobytes") and hasattr(value, "size"):
        digest = hashlib.sha256(value.tobytes())
        digest.update(f"{value.mode}{value.size}".encode())
        return digest.hexdigest()
    return freeze(value)


# -- helpers ---------------------------------------------------------------------------------------


def _scheduler(name: str | None, info: ModelInfo) -> str | None:
    if name is None:
        return None
    wanted = SCHEDULER_ALIASES.get(name.lower(), name)
    if info.schedulers and wanted == info.schedulers[0]:
        return None  # the model's own
    if wanted not in info.schedulers:
        aliases = [alias for alias, cls in SCHEDULER_ALIASES.items() if cls in info.schedulers]
        raise InvalidRequestError(
            f"options.scheduler={name!r} does not work with {info.model}; compatible: "
            f"{', '.join(info.schedulers) or 'none known'}" + (f" (or {', '.join(aliases)})" if aliases else "")
        )
    return wanted


def _round(side: int, multiple: int) -> int:
    return max(multiple, round(side / multiple) * multiple)


def _compat(feature: str, details: str) -> GenerationWarning:
    return GenerationWarning.compatibility(feature, details)


def _rgb(image: Image, size: tuple[int, int] | None) -> PIL.Image.Image:
    pil = image.to_pil().convert("RGB")
    return _resized(pil, size)


def _mask(image: Image, size: tuple[int, int] | None) -> PIL.Image.Image:
    return _resized(image.to_pil().convert("L"), size)


def _resized(pil: PIL.Image.Image, size: tuple[int, int] | None) -> PIL.Image.Image:
    import PIL.Image

    if size is None or pil.size == size:
        return pil
    return pil.resize(size, PIL.Image.Resampling.LANCZOS)
