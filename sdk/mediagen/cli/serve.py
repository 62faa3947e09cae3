"""`mediagen serve`: configured models over Replicate's prediction API and OpenAI's images API."""

from __future__ import annotations

import argparse

from ._common import EXIT_FAILED, fail

__all__ = ["add_arguments", "run"]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `serve` command's arguments."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="Address to listen on (anything but loopback needs a token)."
    )
    parser.add_argument("--port", type=int, default=8000, help="Port (0 picks a free one).")
    parser.add_argument(
        "-m",
        "--model",
        action="append",
        default=[],
        metavar="[MODALITY:]OWNER/NAME=MODEL",
        help="A model to serve (repeatable; ',' separates a fallback chain); adds to [serve.models].",
    )
    parser.add_argument("--db", metavar="PATH", help="SQLite file of predictions (outputs go beside it).")
    parser.add_argument("--token-file", metavar="PATH", help="TOML file of named tokens and their limits.")
    parser.add_argument("--retention-days", type=float, metavar="D", help="Remove prediction data after D days.")
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], default="info", help="Access and server logs."
    )
    parser.add_argument("--metrics-public", action="store_true", help="Serve /metrics without a token.")
    parser.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: this process on uvicorn (default); ray: a Ray Serve deployment.",
    )
    parser.add_argument(
        "--replicas", type=_positive, default=1, metavar="N", help="Ray Serve replicas (with --engine ray)."
    )
    parser.add_argument(
        "--max-replicas", type=_positive, metavar="N", help="Autoscale up to N replicas (with --engine ray)."
    )
    parser.add_argument("--ray-address", metavar="ADDR", help="Join this Ray cluster (with --engine ray).")
    parser.add_argument(
        "--cpus-per-replica", type=float, default=1.0, metavar="C", help="CPUs per replica (with --engine ray)."
    )
    parser.add_argument(
        "--gpus-per-replica", type=float, default=0.0, metavar="G", help="GPUs per replica (with --engine ray)."
    )


def run(args: argparse.Namespace) -> int:
    """Run the server until interrupted; 2 for bad settings or a refused bind."""
    try:
        from ..serve.command import run_command
    except ImportError as exc:
        return fail(exc, EXIT_FAILED, False)
    options = dict(
        host=args.host,
        port=args.port,
        models=args.model,
        db=args.db,
        token_file=args.token_file,
        retention_days=args.retention_days,
        log_level=args.log_level,
        metrics_public=args.metrics_public,
    )
    if args.engine == "ray":
        from ..ray.serving import run_ray_command

        return run_ray_command(
            **options,
            replicas=args.replicas,
            max_replicas=args.max_replicas,
            address=args.ray_address,
            cpus_per_replica=args.cpus_per_replica,
            gpus_per_replica=args.gpus_per_replica,
        )
    return run_command(**options)
