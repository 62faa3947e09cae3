"""The same JSONL through `--engine local` and `--engine ray --workers 1|2`, in one run.

Reports images/s for each engine on the tiny SD model and Ray's start-up cost (the time for a
private local instance and its workers to be ready). On a GPU machine, pass `--gpus-per-worker 1`
and `--workers N` for all GPUs.

    python benchmarks/ray_batch.py [--lines 32] [--workers 1 2] [--gpus-per-worker 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import mediagen as mg
from mediagen.batch import run_batch
from mediagen.ray import RayEngine, RaySettings
from mediagen_testkit.tiny import ensure_tiny_model


def _write_lines(path: Path, count: int, size: int, steps: int) -> None:
    path.write_text(
        "".join(
            json.dumps({"prompt": f"a fox {i}", "seed": i, "width": size, "height": size, "steps": steps}) + "\n"
            for i in range(count)
        )
    )


async def _measure(
    jsonl: Path, out: Path, model: str, client: mg.Client, engine: RayEngine | None, concurrency: int
) -> float:
    started = time.perf_counter()
    generate = None if engine is None else (lambda request, m: engine.generate(request, m))
    report = await run_batch(jsonl, out, client=client, model=model, concurrency=concurrency, generate=generate)
    took = time.perf_counter() - started
    assert report.ok, report.failed
    return len(report.done) / took


async def _local(jsonl: Path, root: Path, model: str) -> float:
    async with mg.Client() as client:
        # The first pass loads the model, as a warm worker already has; the second is measured.
        await _measure(jsonl, root / "local-warm", model, client, None, 16)
        return await _measure(jsonl, root / "local", model, client, None, 16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=32)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--gpus-per-worker", type=float, default=0.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = f"diffusers:{ensure_tiny_model('sd', root / 'models')}"
        jsonl = root / "in.jsonl"
        _write_lines(jsonl, args.lines, args.size, args.steps)
        results: dict[str, object] = {"lines": args.lines, "size": args.size, "steps": args.steps}
        results["local_images_per_s"] = round(asyncio.run(_local(jsonl, root, model)), 2)
        for workers in args.workers:
            settings = RaySettings(
                workers=workers, cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker
            )

            async def on_ray(settings: RaySettings = settings, workers: int = workers) -> tuple[float, float, float]:
                started = time.perf_counter()
                async with RayEngine(settings) as engine, mg.Client() as client:
                    ready = time.perf_counter() - started
                    # First pass loads the model on every worker; the second is the steady state.
                    await _measure(jsonl, root / f"ray{workers}-warm", model, client, engine, 16 * workers)
                    rate = await _measure(jsonl, root / f"ray{workers}", model, client, engine, 16 * workers)
                return ready, rate, time.perf_counter() - started

            ready, rate, _total = asyncio.run(on_ray())
            results[f"ray_{workers}w_startup_s"] = round(ready, 2)
            results[f"ray_{workers}w_images_per_s"] = round(rate, 2)
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
