"""`mediagen batch FILE.jsonl`: one request per line, concurrent and resumable."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ._common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, echo

__all__ = ["add_arguments", "run"]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `batch` command's arguments."""
    parser.add_argument("path", type=Path, metavar="FILE", help="JSONL file: one request per line.")
    parser.add_argument("-m", "--model", help="provider:model for lines that name none.")
    parser.add_argument(
        "-o", "--output", default="batch-out", metavar="DIR", help="Directory for outputs and manifest.jsonl."
    )
    parser.add_argument(
        "-c", "--concurrency", type=_positive, default=4, metavar="N", help="Lines run at once (default 4)."
    )
    parser.add_argument("--json", action="store_true", dest="as_json", help="Print one JSON report.")


def run(args: argparse.Namespace) -> int:
    """Run every line of a JSONL file; a re-run skips finished lines. Exit 1 if any line failed."""
    import asyncio

    import mediagen as mg

    from ..batch import parse_lines, run_batch

    path: Path = args.path
    if not path.is_file():
        echo(f"error: {path} is not a file", err=True)
        return EXIT_BAD_INPUT
    total = len(parse_lines(path))
    as_json: bool = args.as_json

    async def main() -> Any:
        async with mg.Client() as client:
            if as_json or not sys.stderr.isatty():
                return await run_batch(path, args.output, client=client, model=args.model, concurrency=args.concurrency)
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            with Progress("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
                task = bar.add_task(path.name, total=total)
                return await run_batch(
                    path,
                    args.output,
                    client=client,
                    model=args.model,
                    concurrency=args.concurrency,
                    on_line_done=lambda _n, _err: bar.advance(task),
                )

    report = asyncio.run(main())
    if as_json:
        echo(
            json.dumps(
                {
                    "done": report.done,
                    "skipped": report.skipped,
                    "failed": {str(k): v for k, v in sorted(report.failed.items())},
                    "files": [str(f) for f in report.files],
                }
            )
        )
    else:
        echo(f"{len(report.done)} done, {len(report.skipped)} already done, {len(report.failed)} failed")
        for number, why in sorted(report.failed.items()):
            echo(f"  line {number}: {why}", err=True)
    return EXIT_FAILED if report.failed else EXIT_OK
