"""`mediagen video [PROMPT]`: text-to-video and image-to-video."""

from __future__ import annotations

import argparse

from ._generate import add_common, add_previews, add_sampling, generate, size

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `video` command's arguments."""
    parser.add_argument("prompt", nargs="?", help="What happens (optional with --image).")
    add_common(parser)
    parser.add_argument("--size", type=size, metavar="WxH", help="Width x height, e.g. 832x480.")
    parser.add_argument("--frames", type=int, metavar="N", help="Number of frames.")
    parser.add_argument("--duration", type=float, metavar="S", help="Seconds (instead of --frames).")
    parser.add_argument("--fps", type=float, metavar="F", help="Frames per second.")
    parser.add_argument("--image", dest="image_in", metavar="PATH", help="First frame (image-to-video).")
    add_sampling(parser)
    add_previews(parser)


def run(args: argparse.Namespace) -> int:
    """Generate a video."""
    width, height = args.size or (None, None)
    fields = {
        "prompt": args.prompt,
        "n": args.n,
        "seed": args.seed,
        "width": width,
        "height": height,
        "frames": args.frames,
        "duration_s": args.duration,
        "fps": args.fps,
        "image": args.image_in,
        "negative_prompt": args.negative,
        "steps": args.steps,
        "guidance": args.guidance,
        "options": dict(args.option) if args.option else None,
    }
    return generate("video", fields, args)
