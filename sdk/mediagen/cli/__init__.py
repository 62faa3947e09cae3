"""The `mediagen` command: generate from the shell, list backends, run the demo, run a batch.

Exit codes: 0 success; 2 bad input (a usage error, an invalid or unsupported request, an unknown
model, an output that exists); 1 a generation that failed (provider error, deadline, a missing
extra); 130 interrupted (Ctrl-C).

`mediagen --help` and `mediagen <command> --help` import nothing but this package and the
command's own module: the client, pydantic models and providers load only when a command runs.

Adding a command is one module and one line: write `mediagen/cli/<name>.py` with
`add_arguments(parser)` and `run(args) -> int`, and add `"<name>": "<one-line summary>"` to
`COMMANDS` below (a dash in the name maps to an underscore in the module name).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from ._common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, cli_logging

__all__ = ["COMMANDS", "EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "build_parser", "main"]

COMMANDS: dict[str, str] = {
    "image": "Generate images.",
    "video": "Generate a video.",
    "audio": "Generate music, sound effects or speech.",
    "mesh": "Generate a 3D mesh.",
    "backends": "List providers, whether each is usable here, and why not.",
    "batch": "Run every line of a JSONL file; a re-run skips finished lines.",
    "demo": "Build tiny random-weight models and generate one file per modality (offline).",
    "serve": "Serve models over Replicate's prediction API and OpenAI's images API.",
}
"""Command name → the summary `mediagen --help` shows; the code is in `mediagen.cli.<name>`."""

_DESCRIPTION = "Generate images, video, audio and 3D meshes with local or hosted models."
_EPILOG = """\
Run `mediagen <command> --help` for a command's options.
Exit codes: 0 success, 2 bad input or an unsupported request, 1 a failed generation, 130 interrupted."""


def command_module(name: str) -> ModuleType:
    """Import the module that implements command `name` (only when that command is used)."""
    return importlib.import_module(f"{__name__}.{name.replace('-', '_')}")


def _chosen_command(argv: Sequence[str]) -> str | None:
    """The command named in `argv`: its first word that is not an option."""
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser: every command listed, and the options of the one that `argv` names.

    Args:
        argv: The arguments about to be parsed; only the command they name gets its options
            (importing its module), so help for one command never loads the others.
    """
    parser = argparse.ArgumentParser(
        prog="mediagen",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="Say more (-vv: debug, library lines).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    chosen = _chosen_command(argv)
    for name, summary in COMMANDS.items():
        child = sub.add_parser(name, help=summary, description=summary)
        child.add_argument("-v", "--verbose", action="count", default=0, dest="sub_verbose", help=argparse.SUPPRESS)
        if name == chosen:
            command_module(name).add_arguments(child)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mediagen` script: parse, run one command, return its exit code.

    Args:
        argv: The arguments (default: `sys.argv[1:]`).

    Returns:
        The exit code (see the module docstring); usage errors return 2 instead of raising.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse exits on --help (0) and on usage errors (2)
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    verbosity = args.verbose + getattr(args, "sub_verbose", 0)
    try:
        with cli_logging(verbosity):
            code: int = command_module(args.command).run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code
