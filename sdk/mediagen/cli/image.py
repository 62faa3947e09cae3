"""`mediagen image PROMPT`: text-to-image, image-to-image, inpainting, ControlNet, LoRA."""

from __future__ import annotations

import argparse

from ._generate import add_common, add_previews, add_sampling, generate, size

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `image` command's arguments."""
    parser.add_argument("prompt", help="What to draw.")
    add_common(parser)
    parser.add_argument("--size", type=size, metavar="WxH", help="Width x height, e.g. 512x512 (or 512).")
    parser.add_argument("--aspect-ratio", metavar="W:H", help="Aspect ratio instead of a size, e.g. 16:9.")
    parser.add_argument("--image", dest="image_in", metavar="PATH", help="Start image (path or URL).")
    parser.add_argument("--mask", metavar="PATH", help="Inpainting mask (path or URL).")
    parser.add_argument("--strength", type=float, metavar="F", help="Image-to-image strength.")
    parser.add_argument("--control-image", metavar="PATH", help="ControlNet image.")
    parser.add_argument("--control-model", metavar="M", help="ControlNet model.")
    parser.add_argument("--lora", action="append", metavar="PATH[=SCALE]", help="LoRA to apply; repeatable.")
    parser.add_argument(
        "--format",
        dest="output_format",
        choices=("png", "jpeg", "webp"),
        metavar="png|jpeg|webp",
        help="Image encoding.",
    )
    add_sampling(parser)
    add_previews(parser)


def _lora(item: str) -> dict[str, object]:
    path, sep, scale = item.rpartition("=")
    try:
        return {"path": path, "scale": float(scale)} if sep else {"path": item}
    except ValueError:
        return {"path": item}


def run(args: argparse.Namespace) -> int:
    """Generate images."""
    width, height = args.size or (None, None)
    fields = {
        "prompt": args.prompt,
        "n": args.n,
        "seed": args.seed,
        "width": width,
        "height": height,
        "aspect_ratio": args.aspect_ratio,
        "image": args.image_in,
        "mask": args.mask,
        "strength": args.strength,
        "control_image": args.control_image,
        "control_model": args.control_model,
        "loras": [_lora(item) for item in args.lora] if args.lora else None,
        "output_format": args.output_format,
        "negative_prompt": args.negative,
        "steps": args.steps,
        "guidance": args.guidance,
        "options": dict(args.option) if args.option else None,
    }
    return generate("image", fields, args)
