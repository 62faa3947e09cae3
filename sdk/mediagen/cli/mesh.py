"""`mediagen mesh [PROMPT]`: text-to-3D and image-to-3D."""

from __future__ import annotations

import argparse

from ._generate import add_common, add_sampling, generate

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `mesh` command's arguments."""
    parser.add_argument("prompt", nargs="?", help="The object (optional with --image).")
    add_common(parser)
    parser.add_argument("--image", dest="image_in", metavar="PATH", help="Reconstruct this image (image-to-3D).")
    parser.add_argument(
        "--format",
        dest="fmt",
        choices=("glb", "obj", "ply"),
        default="glb",
        metavar="glb|obj|ply",
        help="Mesh file format (default glb).",
    )
    add_sampling(parser, negative=False)


def run(args: argparse.Namespace) -> int:
    """Generate a 3D mesh."""
    fields = {
        "prompt": args.prompt,
        "image": args.image_in,
        "format": args.fmt,
        "n": args.n,
        "seed": args.seed,
        "steps": args.steps,
        "guidance": args.guidance,
        "options": dict(args.option) if args.option else None,
    }
    return generate("mesh", fields, args)
