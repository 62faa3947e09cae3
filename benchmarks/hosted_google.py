"""Hosted concurrency, Google: mediagen's backend against the official `google-genai` client, on the loopback server.

`python benchmarks/hosted_concurrency.py --provider google [--n 48] [--rounds 2] [--faults]`

Each round sends N Gemini image generations at once (gemini-2.5-flash-image, the server taking
`JOB_S` per image) through both clients in the same process, then N Imagen generations and N Veo
operations through mediagen alone: google-genai 3 refuses Imagen and Veo in Gemini-API mode, so the
official client has no row there. With `--faults` the server answers every 3rd request 429
(RetryInfo 0.1 s) and every 5th 500. Columns: wall time, HTTP requests the server saw, billable jobs
it ran, requests that failed. The official client runs with its defaults (no retries).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from google import genai
from google.genai import types

import mediagen as mg
from mediagen_google import GoogleBackend
from mediagen_testkit.fake_http import Faults
from mediagen_testkit.google_server import GoogleServer

JOB_S = 0.25
VIDEO_S = 1.0


@dataclass
class Row:
    case: str
    client: str
    n: int
    wall_s: float
    requests: int
    billed: int
    failed: int


async def _mediagen(server: GoogleServer, case: str, n: int, tag: str) -> Row:
    server.stats.reset()
    backend = GoogleBackend(
        api_key=server.api_key, base_url=server.url, max_retries=10, retry_base_delay=0.05, poll_interval=0.1
    )
    async with mg.Client(backends={"google": backend}) as client:

        async def one(i: int) -> Any:
            if case == "veo":
                result = await client.generate(
                    mg.VideoRequest(prompt=f"{tag} {i}"), model="google:veo-2.0-generate-001"
                )
                return await result.videos[0].aread()
            model = "google:gemini-2.5-flash-image" if case == "gemini" else "google:imagen-4.0-fast-generate-001"
            return await client.generate(mg.ImageRequest(prompt=f"{tag} {i}"), model=model)

        started = time.monotonic()
        done = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
        wall = time.monotonic() - started
    failed = sum(isinstance(d, BaseException) for d in done)
    return Row(case, "mediagen", n, wall, server.stats["requests"], server.stats["billed"], failed)


async def _official(server: GoogleServer, n: int, tag: str) -> Row:
    server.stats.reset()
    # Timed from before the client is built, as mediagen's backend builds its clients on first use.
    started = time.monotonic()
    client = genai.Client(
        api_key=server.api_key, http_options=types.HttpOptions(base_url=server.url, api_version="v1beta")
    )
    config = types.GenerateContentConfig(response_modalities=["TEXT", "IMAGE"])

    async def one(i: int) -> Any:
        return await client.aio.models.generate_content(
            model="gemini-2.5-flash-image", contents=f"{tag} {i}", config=config
        )

    done = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    wall = time.monotonic() - started
    await client.aio.aclose()
    failed = sum(isinstance(d, BaseException) for d in done)
    return Row("gemini", "google-genai", n, wall, server.stats["requests"], server.stats["billed"], failed)


async def run(n: int, rounds: int, faults: bool) -> list[Row]:
    rows: list[Row] = []
    plan = Faults(rate_limit_every=3, error_every=5, retry_after_s=0.1) if faults else Faults()
    with GoogleServer(job_s=JOB_S, video_s=VIDEO_S, faults=plan) as server:
        server.video_bytes("veo-2.0-generate-001", 0)  # warm ffmpeg once, outside the timings
        for round_ in range(rounds):
            order = ["mediagen", "official"] if round_ % 2 == 0 else ["official", "mediagen"]
            for who in order:
                tag = f"r{round_}-{who}"
                if who == "official":
                    rows.append(await _official(server, n, tag))
                else:
                    for case in ("gemini", "imagen", "veo"):
                        rows.append(await _mediagen(server, case, n, tag))
    return rows


def print_table(rows: list[Row], faults: bool) -> None:
    import statistics

    print(
        f"fake Gemini API, {JOB_S:.2f} s per image, {VIDEO_S:.1f} s per Veo operation, "
        f"faults: {'429 every 3rd, 500 every 5th' if faults else 'none'}"
    )
    header = f"{'case':<7} {'client':<14} {'n':>4} {'wall s':>8} {'requests':>9} {'billed':>7} {'failed':>7}"
    print(header)
    print("-" * len(header))
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.case, row.client), []).append(row)
    for (case, client), runs in sorted(groups.items()):
        wall = statistics.median(r.wall_s for r in runs)
        requests = round(statistics.median(r.requests for r in runs))
        billed = round(statistics.median(r.billed for r in runs))
        failed = round(statistics.median(r.failed for r in runs))
        print(f"{case:<7} {client:<14} {runs[0].n:>4} {wall:>8.2f} {requests:>9} {billed:>7} {failed:>7}")
    print("imagen, veo: google-genai 3 refuses them in Gemini-API mode (no official row)")
    print(f"(median of {len(next(iter(groups.values())))} rounds per row)")


def main(n: int, rounds: int, faults: bool) -> None:
    print_table(asyncio.run(run(n, rounds, faults)), faults)
