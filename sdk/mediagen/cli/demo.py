"""`mediagen demo`: tiny random-weight models, one real file per modality, offline."""

from __future__ import annotations

import argparse

from ._common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, echo

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `demo` command's arguments."""
    parser.add_argument(
        "-o",
        "--output",
        default="mediagen-demo",
        metavar="DIR",
        help="Directory for the files (default mediagen-demo).",
    )


def run(args: argparse.Namespace) -> int:
    """Build tiny random-weight models and generate one file per modality (offline)."""
    try:
        # The demo's tiny-model recipes live in the test kit, which apps do not install.
        from mediagen_testkit.demo import run_demo
    except ImportError:
        echo(
            "mediagen demo needs the test kit (tiny-model recipes): from a clone, run `make demo`, "
            "or `pip install -e ./testkit`",
            err=True,
        )
        return EXIT_BAD_INPUT
    echo("mediagen demo: tiny random-weight models, so expect noise, not foxes.")
    echo("  the first run builds the models (about a minute on a laptop CPU); later runs reuse them.")
    written = run_demo(args.output, echo=echo)
    if not written:
        echo("nothing could be generated here: install the extras, e.g. pip install -e '.[all]'")
        return EXIT_FAILED
    return EXIT_OK
