"""Requests into OpenAI parameters: sizes, edit inputs (the mask turned inside out), speech.

Field by field (the docs page has the same table):

=====================  ===============================================================================
mediagen               OpenAI
=====================  ===============================================================================
`prompt`               `prompt` (images, ≤ 32000 characters), `input` (speech, ≤ 4096)
`n`                    `n` (1-10 a call; the client splits more)
`width`/`height`       `size`: any `WxH` on the gpt-image-2 / 2.5 models (rounded to multiples of 16,
`aspect_ratio`         ratio kept within 1:3..3:1, at most 3840x2160); the nearest of 1024x1024,
                       1536x1024, 1024x1536 on the others. Every change is a `compatibility` warning.
`output_format`        `output_format`
`image`, `images`      the edits endpoint's `image` / `image[]` (up to 16, PNG / JPEG / WebP)
`mask`                 `mask`: mediagen's white = repaint becomes OpenAI's alpha 0 = repaint, as an
                       RGBA PNG the size of the first image
`voice`                `voice` (default `alloy`)
`negative_prompt`,     not taken by OpenAI: `unsupported` warnings
`seed`, `steps`,
`guidance`,
`strength`, `loras`
=====================  ===============================================================================
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any

from mediagen.artifacts import Image
from mediagen.backend import RunContext
from mediagen.errors import InvalidRequestError, UnsupportedRequestError
from mediagen.requests import AudioRequest, ImageRequest
from mediagen.results import GenerationWarning

from .errors import PROVIDER
from .models import MAX_EDGE, MAX_EDIT_IMAGES, MAX_PIXELS, STANDARD_SIZES, ImageModelInfo, SpeechModelInfo
from .options import OpenAIOptions

__all__ = ["ImageCall", "SpeechCall", "image_call", "speech_call", "choose_size", "openai_mask"]

MAX_PROMPT = 32_000
MAX_SPEECH_INPUT = 4096
DEFAULT_VOICE = "alloy"
_EDIT_TYPES = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


@dataclass
class ImageCall:
    """One images request, ready to send."""

    params: dict[str, Any]
    """Keyword arguments of `images.generate` / `images.edit` (files excluded)."""
    images: list[tuple[str, bytes, str]] = field(default_factory=list)
    """`(filename, bytes, media type)` of each input image; empty for a generation."""
    mask: tuple[str, bytes, str] | None = None
    """The converted mask, when the request has one."""

    @property
    def edit(self) -> bool:
        """Whether this goes to the edits endpoint."""
        return bool(self.images)


@dataclass
class SpeechCall:
    """One speech request, ready to send."""

    params: dict[str, Any]


def image_call(
    request: ImageRequest, info: ImageModelInfo, options: OpenAIOptions, ctx: RunContext, *, model: str
) -> ImageCall:
    """Map an image request onto the generations or edits endpoint; check it before anything is sent.

    Raises:
        InvalidRequestError: The prompt is too long, or too many images were given.
        UnsupportedRequestError: A control image (OpenAI has no ControlNet).
    """
    if request.control_image is not None:
        raise UnsupportedRequestError(
            f"openai:{model} takes no control_image; describe the layout in the prompt, or use a "
            "diffusers ControlNet model",
            feature="control_image",
            supported_by=["diffusers", "replicate"],
            provider=PROVIDER,
            model=model,
        )
    prompt = request.prompt or ""
    if len(prompt) > MAX_PROMPT:
        raise InvalidRequestError(
            f"OpenAI takes prompts of at most {MAX_PROMPT} characters; this one has {len(prompt)}",
            provider=PROVIDER,
            model=model,
        )
    for name in ("negative_prompt", "seed", "steps", "guidance", "strength"):
        if getattr(request, name) is not None:
            ctx.warn(name, f"OpenAI's image models take no {name}; it was not sent")
    if request.loras:
        ctx.warn("loras", "OpenAI's image models take no LoRA adapters; they were not applied")
    quality = options.quality
    if quality in ("xhigh", "max") and quality not in info.extra_qualities:
        raise InvalidRequestError(
            f"quality={quality!r} is offered by the gpt-image-2.5 models only, not {model}",
            provider=PROVIDER,
            model=model,
        )
    if options.background == "transparent" and request.output_format == "jpeg":
        raise InvalidRequestError(
            "background='transparent' needs output_format 'png' or 'webp' (JPEG has no alpha)",
            provider=PROVIDER,
            model=model,
        )

    params: dict[str, Any] = {"model": model, "prompt": prompt, "n": request.n}
    size = options.size or choose_size(request, info, ctx)
    if size is not None:
        params["size"] = size
    extras = {
        "quality": quality,
        "background": options.background,
        "output_format": request.output_format,
        "output_compression": options.output_compression,
        "moderation": options.moderation,
        "safety_identifier": options.safety_identifier,
    }
    params.update({k: v for k, v in extras.items() if v is not None})

    inputs = _input_images(request)
    if not inputs:
        if options.input_fidelity is not None:
            ctx.warn("options.input_fidelity", "input_fidelity applies to edits; this request has no image")
        return ImageCall(params)
    if len(inputs) > MAX_EDIT_IMAGES:
        raise InvalidRequestError(
            f"OpenAI edits take at most {MAX_EDIT_IMAGES} images; this request has {len(inputs)}",
            provider=PROVIDER,
            model=model,
        )
    params.pop("moderation", None)  # a generations-only setting
    if options.moderation is not None:
        ctx.warn("options.moderation", "moderation applies to generations, not edits; it was not sent")
    if options.input_fidelity is not None:
        params["input_fidelity"] = options.input_fidelity
    files = [_edit_file(image, i) for i, image in enumerate(inputs)]
    mask = None
    if request.mask is not None:
        first = Image(files[0][1])
        mask_bytes, resized = openai_mask(request.mask, first.size)
        if resized:
            ctx.warn(
                GenerationWarning.compatibility(
                    "mask",
                    f"the mask was resized to the image's {first.width}x{first.height} (OpenAI needs them equal)",
                )
            )
        mask = ("mask.png", mask_bytes, "image/png")
    return ImageCall(params, images=files, mask=mask)


def _input_images(request: ImageRequest) -> list[Image]:
    found: list[Image] = []
    if request.image is not None:
        found.append(request.image)
    found += request.images or []
    return found


def _edit_file(image: Image, index: int) -> tuple[str, bytes, str]:
    """An input image as OpenAI takes it: PNG, JPEG or WebP as it is; anything else re-encoded as PNG."""
    data = image.read()
    media_type = image.media_type
    if media_type not in _EDIT_TYPES:
        data, media_type = _png(image), "image/png"
    return f"image-{index}.{_EDIT_TYPES[media_type]}", data, media_type


def _png(image: Image) -> bytes:
    buf = io.BytesIO()
    pil = image.to_pil()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def openai_mask(mask: Image, size: tuple[int, int]) -> tuple[bytes, bool]:
    """Turn a mediagen mask (white = repaint) into OpenAI's (alpha 0 = repaint), as an RGBA PNG.

    The mask's brightness decides (its own alpha, if any, is ignored), so the same mask works on
    every backend. A mask of another size is resized (nearest neighbour) to `size`.

    Args:
        mask: White where the image is repainted, black where it is kept.
        size: The first input image's `(width, height)`.

    Returns:
        The PNG, and whether it had to be resized.
    """
    from PIL import Image as PILImage
    from PIL import ImageOps

    grey = mask.to_pil().convert("L")
    resized = grey.size != tuple(size)
    if resized:
        grey = grey.resize(size, PILImage.Resampling.NEAREST)
    rgba = PILImage.new("RGBA", grey.size, (0, 0, 0, 255))
    rgba.putalpha(ImageOps.invert(grey))  # white (repaint) → alpha 0
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    return buf.getvalue(), resized


def choose_size(request: ImageRequest, info: ImageModelInfo, ctx: RunContext) -> str | None:
    """The `size` to send, or None for the model's `auto` when the request names no size.

    Any change from what was asked is reported as a `compatibility` warning.
    """
    if request.width is None and request.height is None and request.aspect_ratio is None:
        return None
    asked_w, asked_h = request.size(default=1024, multiple=16)
    asked = f"{asked_w}x{asked_h}" if request.width or request.height else f"aspect_ratio {request.aspect_ratio}"
    if info.arbitrary_sizes:
        w, h = _fit(asked_w, asked_h)
    else:
        w, h = min(STANDARD_SIZES, key=lambda s: abs(math.log((s[0] / s[1]) / (asked_w / asked_h))))
    if (w, h) != (asked_w, asked_h):
        rule = (
            "sides in multiples of 16, ratio within 1:3..3:1, at most 3840x2160"
            if info.arbitrary_sizes
            else "this model takes 1024x1024, 1536x1024 or 1024x1536"
        )
        ctx.warn(GenerationWarning.compatibility("size", f"{asked} became {w}x{h} ({rule})"))
    return f"{w}x{h}"


def _fit(w: int, h: int) -> tuple[int, int]:
    """The nearest size the gpt-image-2 models take: multiples of 16, ratio ≤ 3, within the limits."""
    # Ratio first (grow the short side), then the limits (shrink both), then the 16-pixel grid.
    if w / h > 3:
        h = math.ceil(w / 3)
    elif h / w > 3:
        w = math.ceil(h / 3)
    scale = min(1.0, MAX_EDGE / max(w, h), math.sqrt(MAX_PIXELS / (w * h)))

    def grid(x: float) -> int:
        return max(16, math.floor(x / 16 + 0.5) * 16)  # halves round up, not to even

    gw, gh = grid(w * scale), grid(h * scale)
    while gw * gh > MAX_PIXELS or max(gw, gh) > MAX_EDGE:
        gw, gh = (gw - 16, gh) if gw >= gh else (gw, gh - 16)
    return gw, gh


def speech_call(
    request: AudioRequest, info: SpeechModelInfo, options: OpenAIOptions, ctx: RunContext, *, model: str
) -> SpeechCall:
    """Map a speech request onto `audio.speech.create`; check it before anything is sent.

    Raises:
        UnsupportedRequestError: Music or sound effects (OpenAI's audio models speak).
        InvalidRequestError: The text is longer than OpenAI takes.
    """
    if request.kind in ("music", "sound"):
        raise UnsupportedRequestError(
            f"openai:{model} speaks; it cannot make {request.kind}",
            feature=request.kind,
            supported_by=["transformers", "replicate", "fal"],
            provider=PROVIDER,
            model=model,
        )
    text = request.prompt or ""
    if len(text) > MAX_SPEECH_INPUT:
        raise InvalidRequestError(
            f"OpenAI speaks at most {MAX_SPEECH_INPUT} characters a call; this text has {len(text)}. "
            "Split it, or use mediagen.batch.",
            provider=PROVIDER,
            model=model,
        )
    for name in ("negative_prompt", "seed", "steps", "guidance", "duration_s"):
        if getattr(request, name) is not None:
            why = "speech takes as long as the text needs" if name == "duration_s" else "it was not sent"
            ctx.warn(name, f"OpenAI's speech models take no {name}; {why}")
    params: dict[str, Any] = {
        "model": model,
        "input": text,
        "voice": request.voice or DEFAULT_VOICE,
        # WAV and PCM are asked for as PCM-in-WAV or raw PCM; both come back to the caller as WAV.
        "response_format": options.format,
    }
    if options.speed is not None:
        params["speed"] = options.speed
    if options.instructions:
        if info.instructions:
            params["instructions"] = options.instructions
        else:
            ctx.warn("options.instructions", f"{model} takes no instructions (gpt-4o-mini-tts does); not sent")
    return SpeechCall(params)
