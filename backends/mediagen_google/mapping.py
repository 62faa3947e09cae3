"""Requests into Gemini API bodies, one function per family; everything checked before sending.

=====================  ==================================  ===========================  ============================
mediagen               Imagen (`:predict`)                 Gemini image                 Veo (`:predictLongRunning`)
=====================  ==================================  ===========================  ============================
`prompt`               `instances[0].prompt`               a text part                  `instances[0].prompt`
`n`                    `parameters.sampleCount` (≤ 4)      one call each                `parameters.sampleCount`
`aspect_ratio`,        nearest `aspectRatio`, `imageSize`  nearest `imageConfig.        nearest of 16:9 / 9:16,
`width`/`height`       1K / 2K                             aspectRatio`                 `resolution` 720p / 1080p
`seed`                 warned (not on the Gemini API)      `generationConfig.seed`      warned (not on the Gemini API)
`negative_prompt`      warned (not on the Gemini API)      warned                       `parameters.negativePrompt`
`image`, `images`      refused (text to image only)        inline image parts           `image` → `instances[0].image`
`mask`                 refused                             refused (describe the edit)  (no field)
`duration_s`/`frames`  -                                   -                            `durationSeconds` (nearest
                                                                                        the model takes)
`fps`                  -                                   -                            warned (24 fps)
=====================  ==================================  ===========================  ============================
"""

from __future__ import annotations

import base64
import math
from typing import Any

from mediagen.artifacts import Image
from mediagen.backend import RunContext
from mediagen.errors import UnsupportedRequestError
from mediagen.requests import ImageRequest, VideoRequest
from mediagen.results import GenerationWarning

from .errors import PROVIDER
from .models import GEMINI_ASPECTS, IMAGEN_ASPECTS, GeminiImageModel, ImagenModel, VeoModel
from .options import GoogleOptions

__all__ = ["imagen_body", "gemini_request", "veo_body", "nearest_aspect", "VEO_FPS"]

VEO_FPS = 24
_INLINE_TYPES = ("image/png", "image/jpeg", "image/webp")


def nearest_aspect(width: int, height: int, table: dict[str, tuple[int, int]]) -> str:
    """The aspect ratio of `table` nearest `width:height` (on a log scale)."""
    return min(table, key=lambda r: abs(math.log((table[r][0] / table[r][1]) / (width / height))))


def _aspect(request: ImageRequest | VideoRequest, table: dict[str, tuple[int, int]], ctx: RunContext) -> str | None:
    """The aspect ratio to send, or None when the request names no shape; changes are warned."""
    ratio = getattr(request, "aspect_ratio", None)
    if ratio is None and request.width is None and request.height is None:
        return None
    if ratio in table:
        return str(ratio)
    if ratio is not None:
        w, h = (int(x) for x in str(ratio).split(":"))
    else:
        w = request.width or request.height or 1
        h = request.height or request.width or 1
    chosen = nearest_aspect(w, h, table)
    cw, ch = table[chosen]
    # A shape the model makes exactly (1024x1024 is 1:1) is no change; anything else is said.
    if abs(math.log((cw / ch) / (w / h))) > 0.01:
        asked = f"aspect_ratio {ratio}" if ratio else f"{w}x{h}"
        ctx.warn(GenerationWarning.compatibility("aspect_ratio", f"{asked} became {chosen} (the model's nearest)"))
    return chosen


def _refuse_edits(request: ImageRequest, model: str, why: str) -> None:
    for name in ("image", "mask", "control_image"):
        if getattr(request, name) is not None:
            raise UnsupportedRequestError(
                f"google:{model} takes no {name}: {why}",
                feature=name,
                supported_by=["openai", "diffusers", "replicate"],
                provider=PROVIDER,
                model=model,
            )
    if request.images:
        raise UnsupportedRequestError(
            f"google:{model} takes no reference images: {why}",
            feature="images",
            supported_by=["openai", "google (gemini-2.5-flash-image)"],
            provider=PROVIDER,
            model=model,
        )


def _warn_unused(request: Any, ctx: RunContext, names: tuple[str, ...], where: str) -> None:
    for name in names:
        value = getattr(request, name, None)
        if value not in (None, [], ()):
            ctx.warn(name, f"{where} takes no {name}; it was not sent")


def imagen_body(request: ImageRequest, info: ImagenModel, options: GoogleOptions, ctx: RunContext) -> dict[str, Any]:
    """The `:predict` body of an Imagen request.

    Raises:
        UnsupportedRequestError: Input images or a mask (Imagen on the Gemini API is text to image).
    """
    _refuse_edits(request, info.name, "Imagen on the Gemini API is text to image; use gemini-2.5-flash-image to edit")
    _warn_unused(
        request, ctx, ("negative_prompt", "seed", "steps", "guidance", "strength", "loras"), "Imagen on the Gemini API"
    )
    parameters: dict[str, Any] = {"sampleCount": request.n}
    aspect = _aspect(request, IMAGEN_ASPECTS, ctx)
    if aspect is not None:
        parameters["aspectRatio"] = aspect
    size = options.image_size
    if size is None and (request.width or request.height):
        size = "2K" if max(request.width or 0, request.height or 0) > 1408 else None
    if size == "2K" and not info.sizes_2k:
        ctx.warn(GenerationWarning.compatibility("image_size", f"{info.name} makes 1K images only"))
        size = None
    if size is not None:
        parameters["imageSize"] = size
    if options.person_generation is not None:
        # The official client sends the enum's upper-case name.
        parameters["personGeneration"] = options.person_generation.upper()
    if request.output_format is not None:
        parameters["outputOptions"] = {"mimeType": f"image/{request.output_format}"}
    return {"instances": [{"prompt": request.prompt}], "parameters": parameters}


def gemini_request(
    request: ImageRequest, info: GeminiImageModel, options: GoogleOptions, ctx: RunContext
) -> tuple[list[Any], Any]:
    """`(contents, config)` of a `generate_content` call through the official client.

    Raises:
        UnsupportedRequestError: A mask or control image (Gemini edits by instruction: say what to
            change in the prompt).
    """
    from google.genai import types

    for name in ("mask", "control_image"):
        if getattr(request, name) is not None:
            raise UnsupportedRequestError(
                f"google:{info.name} takes no {name}: Gemini edits by instruction; describe the change in the "
                "prompt and pass the picture as image",
                feature=name,
                supported_by=["openai", "diffusers", "replicate"],
                provider=PROVIDER,
                model=info.name,
            )
    _warn_unused(request, ctx, ("negative_prompt", "steps", "guidance", "strength", "loras"), info.name)
    if request.output_format not in (None, "png"):
        ctx.warn("output_format", f"{info.name} answers in its own format (PNG); not converted")
    parts: list[Any] = [types.Part.from_text(text=request.prompt or "")]
    for image in _input_images(request):
        data, media_type = _inline(image)
        parts.append(types.Part.from_bytes(data=data, mime_type=media_type))
    image_config = None
    aspect = _aspect(request, GEMINI_ASPECTS, ctx)
    if aspect is not None:
        image_config = types.ImageConfig(aspect_ratio=aspect)
    config = types.GenerateContentConfig(
        response_modalities=["TEXT", "IMAGE"],
        image_config=image_config,
        seed=request.seed,
        system_instruction=options.system_instruction,
    )
    return [types.Content(role="user", parts=parts)], config


def veo_body(request: VideoRequest, info: VeoModel, options: GoogleOptions, ctx: RunContext) -> dict[str, Any]:
    """The `:predictLongRunning` body of a Veo request."""
    _warn_unused(request, ctx, ("seed", "steps", "guidance"), "Veo on the Gemini API")
    if request.fps is not None and request.fps != VEO_FPS:
        ctx.warn("fps", f"Veo makes {VEO_FPS} fps video; fps={request.fps:g} was not sent")
    instance: dict[str, Any] = {}
    if request.prompt:
        instance["prompt"] = request.prompt
    if request.image is not None:
        data, media_type = _inline(request.image)
        instance["image"] = {"bytesBase64Encoded": base64.b64encode(data).decode(), "mimeType": media_type}
    parameters: dict[str, Any] = {"sampleCount": request.n}
    table = {"16:9": (16, 9), "9:16": (9, 16)}
    if request.width is not None or request.height is not None:
        w, h = request.width or request.height or 16, request.height or request.width or 9
        parameters["aspectRatio"] = nearest_aspect(w, h, table)
        if (w, h) not in ((1280, 720), (720, 1280), (1920, 1080), (1080, 1920)):
            ctx.warn(
                GenerationWarning.compatibility(
                    "size", f"{w}x{h} became {parameters['aspectRatio']} at 720p or 1080p (Veo's sizes)"
                )
            )
    resolution: str | None = options.resolution
    if resolution is None and (request.width or request.height):
        resolution = "1080p" if min(request.width or 0, request.height or 0) >= 1080 else "720p"
    if resolution is not None:
        if resolution not in info.resolutions:
            ctx.warn(GenerationWarning.compatibility("resolution", f"{info.name} makes {info.resolutions[0]} only"))
            resolution = info.resolutions[0]
        parameters["resolution"] = resolution
    seconds = (
        request.duration_s
        if request.duration_s is not None
        else (request.frames / (request.fps or VEO_FPS) if request.frames is not None else None)
    )
    if seconds is not None:
        chosen = min(info.durations, key=lambda d: abs(d - seconds))
        if abs(chosen - seconds) > 1e-6:
            ctx.warn(
                GenerationWarning.compatibility(
                    "duration_s", f"{seconds:g} s became {chosen} s ({info.name} makes {list(info.durations)} s)"
                )
            )
        parameters["durationSeconds"] = chosen
    if request.negative_prompt:
        parameters["negativePrompt"] = request.negative_prompt
    if options.person_generation is not None:
        parameters["personGeneration"] = options.person_generation
    if options.enhance_prompt is not None:
        parameters["enhancePrompt"] = options.enhance_prompt
    return {"instances": [instance], "parameters": parameters}


def _input_images(request: ImageRequest) -> list[Image]:
    found: list[Image] = []
    if request.image is not None:
        found.append(request.image)
    found += request.images or []
    return found


def _inline(image: Image) -> tuple[bytes, str]:
    """An input image as the API takes it inline: PNG, JPEG or WebP as it is, else re-encoded as PNG."""
    data = image.read()
    if image.media_type in _INLINE_TYPES:
        return data, image.media_type
    import io

    buf = io.BytesIO()
    image.to_pil().save(buf, format="PNG")
    return buf.getvalue(), "image/png"
