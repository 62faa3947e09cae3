"""`mediagen batch --engine ray`: the local batch's bookkeeping, with requests run on Ray workers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from .._outputs import open_output
from ..batch import BatchReport, run_batch
from ..client import Client
from ..requests import Request
from ..results import Result
from .engine import RayEngine, RaySettings

__all__ = ["run_batch_on_ray"]


async def run_batch_on_ray(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    client: Client,
    settings: RaySettings,
    model: str | None = None,
    concurrency: int = 16,
    on_line_done: Callable[[int, str | None], None] | None = None,
) -> BatchReport:
    """Generate every line of a JSONL file on Ray workers; outputs and manifest as the local batch writes them.

    The driver parses lines, resumes from the manifest, names and writes every file; workers only
    generate. Model aliases and defaults are resolved here, from the driver's configuration, so a
    worker started elsewhere runs exactly the model the driver would.

    Args:
        path: The JSONL file.
        out_dir: Where outputs and `manifest.jsonl` go: a path, or an fsspec URL the driver can
            write to (`s3://bucket/run`, `file:///shared/run`).
        client: The driver's client (configuration, request building); it runs nothing itself.
        settings: Workers, address and resources.
        model: Model for lines that name none.
        concurrency: Lines in flight across all workers.
        on_line_done: Called as each line ends.

    Raises:
        ConfigError: `out_dir` cannot be used (checked before Ray starts).
    """
    # An output that cannot be used fails now, not after Ray and its workers have started.
    out = open_output(out_dir)
    await asyncio.to_thread(out.prepare)
    async with RayEngine(settings) as engine:

        async def generate(request: Request, line_model: str | None) -> Result:
            chain = [f"{provider}:{name}" for provider, name in client.resolve_models(line_model, request.modality)]
            return await engine.generate(request, chain[0] if len(chain) == 1 else chain)

        return await run_batch(
            path,
            out,
            client=client,
            model=model,
            concurrency=concurrency,
            on_line_done=on_line_done,
            generate=generate,
        )
