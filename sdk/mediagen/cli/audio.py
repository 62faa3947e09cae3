"""`mediagen audio PROMPT`: music, sound effects or speech."""

from __future__ import annotations

import argparse

from ._generate import add_common, add_sampling, generate

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `audio` command's arguments."""
    parser.add_argument("prompt", help="What it sounds like (for speech: the text to speak).")
    add_common(parser)
    parser.add_argument(
        "--kind", choices=("music", "sound", "speech"), metavar="music|sound|speech", help="What to make."
    )
    parser.add_argument("--duration", type=float, metavar="S", help="Seconds.")
    parser.add_argument("--voice", metavar="V", help="Speaker, for speech.")
    parser.add_argument("--sample-rate", type=int, metavar="HZ", help="Resample to this rate.")
    add_sampling(parser)


def run(args: argparse.Namespace) -> int:
    """Generate music, sound effects or speech."""
    fields = {
        "prompt": args.prompt,
        "kind": args.kind,
        "duration_s": args.duration,
        "voice": args.voice,
        "sample_rate": args.sample_rate,
        "n": args.n,
        "seed": args.seed,
        "negative_prompt": args.negative,
        "steps": args.steps,
        "guidance": args.guidance,
        "options": dict(args.option) if args.option else None,
    }
    return generate("audio", fields, args)
