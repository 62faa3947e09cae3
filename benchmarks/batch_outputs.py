"""`mediagen batch` into each kind of output: a path, a `file://` URL, FTP on loopback, fsspec's memory store.

The model is `test:` (no generation cost), so the numbers are the writer's: lines/s for a first
run (encode, write atomically, record in the manifest) and for a second run that does no new work
(read the manifest, list the directory). A URL's manifest is written again whole per finished
line (object stores cannot append), which is what the larger `--lines` shows.

    python benchmarks/batch_outputs.py [--lines 200] [--size 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import fsspec

import mediagen as mg
from mediagen.batch import run_batch
from mediagen_testkit.ftp_server import FtpServer


async def _run(jsonl: Path, out: str) -> tuple[float, float]:
    async with mg.Client() as client:
        start = time.perf_counter()
        first = await run_batch(jsonl, out, client=client, model="test:x", concurrency=8)
        middle = time.perf_counter()
        again = await run_batch(jsonl, out, client=client, model="test:x", concurrency=8)
        end = time.perf_counter()
    assert first.ok and not again.done, (first.failed, again.done)
    return middle - start, end - middle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        jsonl = root / "in.jsonl"
        jsonl.write_text(
            "".join(
                json.dumps({"prompt": f"p{i}", "seed": i, "width": args.size, "height": args.size}) + "\n"
                for i in range(args.lines)
            )
        )
        (root / "ftp").mkdir()
        with FtpServer(root / "ftp", password="bench-password-0123") as ftp:
            outputs = {
                "path": str(root / "local"),
                "file://": f"file://{root}/file-url",
                "ftp:// (loopback)": f"{ftp.url}/run",
                "memory://": "memory://mediagen-bench/run",
            }
            asyncio.run(_run(jsonl, str(root / "warm-up")))  # imports and first encodes, out of the numbers
            print(f"{args.lines} lines, {args.size}x{args.size} PNGs, test:x model")
            for label, out in outputs.items():
                first, again = asyncio.run(_run(jsonl, out))
                print(
                    f"  {label:18s} first run {args.lines / first:7.1f} lines/s   re-run {args.lines / again:8.1f} lines/s"
                )
        fsspec.filesystem("memory").rm("/mediagen-bench", recursive=True)


if __name__ == "__main__":
    main()
