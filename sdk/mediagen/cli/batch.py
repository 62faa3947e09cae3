"""`mediagen batch FILE.jsonl`: one request per line, concurrent and resumable, in this process or on Ray."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import redact
from ._common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, echo, echo_json, fail

__all__ = ["add_arguments", "run"]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `batch` command's arguments."""
    parser.add_argument("path", type=Path, metavar="FILE", help="JSONL file: one request per line.")
    parser.add_argument("-m", "--model", help="provider:model for lines that name none.")
    parser.add_argument(
        "-o",
        "--output",
        default="batch-out",
        metavar="DIR|URL",
        help=(
            "Where outputs and manifest.jsonl go: a directory, or an fsspec URL such as s3://bucket/run or "
            "file:///shared/run (needs fsspec and the store's package; credentials in it are never printed)."
        ),
    )
    parser.add_argument(
        "-c", "--concurrency", type=_positive, default=4, metavar="N", help="Lines run at once (default 4)."
    )
    parser.add_argument("--json", action="store_true", dest="as_json", help="Print one JSON report.")
    ray = parser.add_argument_group(
        "engine", "Where the requests run (this process always writes the files, to DIR|URL)."
    )
    ray.add_argument(
        "--engine", choices=["local", "ray"], default="local", help="local: this process (default); ray: Ray workers."
    )
    ray.add_argument("--workers", type=_positive, default=2, metavar="N", help="Ray workers, each holding one client.")
    ray.add_argument(
        "--ray-address", metavar="ADDR", help="Join this Ray cluster; omitted: start a private local instance."
    )
    ray.add_argument("--cpus-per-worker", type=_share, default=1.0, metavar="C", help="CPUs per Ray worker (0.5 ok).")
    ray.add_argument("--gpus-per-worker", type=_share, default=0.0, metavar="G", help="GPUs per Ray worker (0.5 ok).")


def run(args: argparse.Namespace) -> int:
    """Run every line of a JSONL file; a re-run skips finished lines. Exit 1 if any line failed."""
    import asyncio

    import mediagen as mg

    from ..batch import parse_lines, run_batch

    path: Path = args.path
    as_json: bool = args.as_json
    if not path.is_file():
        echo(f"error: {path} is not a file", err=True)
        return EXIT_BAD_INPUT

    async def execute(client: mg.Client, **kwargs: Any) -> Any:
        if args.engine == "ray":
            from ..ray import RaySettings
            from ..ray.batch import run_batch_on_ray

            settings = RaySettings(
                workers=args.workers,
                address=args.ray_address,
                cpus_per_worker=args.cpus_per_worker,
                gpus_per_worker=args.gpus_per_worker,
            )
            return await run_batch_on_ray(
                path, args.output, client=client, settings=settings, model=args.model, **kwargs
            )
        return await run_batch(path, args.output, client=client, model=args.model, **kwargs)

    async def main() -> Any:
        async with mg.Client() as client:
            if as_json or not sys.stderr.isatty():
                return await execute(client, concurrency=args.concurrency)
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            # Counted only for the bar; `run_batch` reads and checks the file itself.
            total = len(parse_lines(path, model=args.model))
            with Progress("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
                task = bar.add_task(path.name, total=total)
                return await execute(
                    client, concurrency=args.concurrency, on_line_done=lambda _n, _err: bar.advance(task)
                )

    try:
        report = asyncio.run(main())
    except (mg.MediagenError, ImportError, OSError) as exc:  # the client could not start (a config refused)
        return fail(exc, EXIT_FAILED, as_json)
    if as_json:
        echo_json(
            {
                "done": report.done,
                "skipped": report.skipped,
                "failed": {str(k): v for k, v in sorted(report.failed.items())},
                "not_run": report.not_run,
                "stopped": report.stopped,
                "files": [str(f) for f in report.files],
            }
        )
    else:
        summary = f"{len(report.done)} done, {len(report.skipped)} already done, {len(report.failed)} failed"
        if report.not_run:
            summary += f", {len(report.not_run)} not run"
        echo(summary)
        for number, why in sorted(report.failed.items()):
            echo(redact(f"  line {number}: {why}"), err=True)
        if report.stopped:
            echo(redact(f"stopped: {report.stopped}"), err=True)
    return EXIT_OK if report.ok else EXIT_FAILED
