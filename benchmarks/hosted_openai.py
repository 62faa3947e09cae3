"""Hosted concurrency, OpenAI: mediagen's backend against the official `openai` client, on the loopback server.

`python benchmarks/hosted_concurrency.py --provider openai [--n 48] [--rounds 2] [--faults]`

Each round sends N image generations at once (gpt-image-2, 64x64, the server taking `JOB_S` per
image) and N speech requests, through both clients in the same process against one server. With
`--faults` the server answers every 3rd request 429 (Retry-After 0.1 s) and every 5th 500.
Columns: wall time, HTTP requests the server saw, billable jobs it ran, requests that failed.
The official client runs with its defaults (2 retries of its own). Both are timed from before
their HTTP client is built (mediagen builds its own on first use).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import openai

import mediagen as mg
from mediagen_openai import OpenAIBackend
from mediagen_testkit.fake_http import Faults
from mediagen_testkit.openai_server import OpenAIServer

JOB_S = 0.25


@dataclass
class Row:
    case: str
    client: str
    n: int
    wall_s: float
    requests: int
    billed: int
    failed: int


async def _mediagen(server: OpenAIServer, case: str, n: int, tag: str) -> Row:
    server.stats.reset()
    backend = OpenAIBackend(api_key=server.api_key, base_url=server.url, max_retries=10, retry_base_delay=0.05)
    async with mg.Client(backends={"openai": backend}) as client:

        async def one(i: int) -> Any:
            if case == "image":
                return await client.generate(
                    mg.ImageRequest(prompt=f"{tag} {i}", width=64, height=64), model="openai:gpt-image-2"
                )
            return await client.audio(f"{tag} sentence {i}.", kind="speech", model="openai:gpt-4o-mini-tts")

        started = time.monotonic()
        done = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
        wall = time.monotonic() - started
    failed = sum(isinstance(d, BaseException) for d in done)
    return Row(case, "mediagen", n, wall, server.stats["requests"], server.stats["billed"], failed)


async def _official(server: OpenAIServer, case: str, n: int, tag: str) -> Row:
    server.stats.reset()
    # Timed from before the client is built, as mediagen's backend builds its client on first use.
    started = time.monotonic()
    client = openai.AsyncOpenAI(api_key=server.api_key, base_url=server.url)

    async def one(i: int) -> Any:
        if case == "image":
            return await client.images.generate(model="gpt-image-2", prompt=f"{tag} {i}", size="64x64")
        answer = await client.audio.speech.create(
            model="gpt-4o-mini-tts", voice="alloy", input=f"{tag} sentence {i}.", response_format="wav"
        )
        return answer.content

    done = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    wall = time.monotonic() - started
    await client.close()
    failed = sum(isinstance(d, BaseException) for d in done)
    return Row(case, "openai.AsyncOpenAI", n, wall, server.stats["requests"], server.stats["billed"], failed)


async def run(n: int, rounds: int, faults: bool) -> list[Row]:
    rows: list[Row] = []
    plan = Faults(rate_limit_every=3, error_every=5, retry_after_s=0.1) if faults else Faults()
    with OpenAIServer(job_s=JOB_S, faults=plan) as server:
        for round_ in range(rounds):
            order = ["mediagen", "official"] if round_ % 2 == 0 else ["official", "mediagen"]
            for who in order:
                for case in ("image", "speech"):
                    tag = f"r{round_}-{who}"
                    runner = _mediagen if who == "mediagen" else _official
                    rows.append(await runner(server, case, n, tag))
    return rows


def print_table(rows: list[Row], faults: bool) -> None:
    import statistics

    print(f"fake OpenAI, {JOB_S:.2f} s per job, faults: {'429 every 3rd, 500 every 5th' if faults else 'none'}")
    header = f"{'case':<7} {'client':<20} {'n':>4} {'wall s':>8} {'requests':>9} {'billed':>7} {'failed':>7}"
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
        print(f"{case:<7} {client:<20} {runs[0].n:>4} {wall:>8.2f} {requests:>9} {billed:>7} {failed:>7}")
    print(f"(median of {len(next(iter(groups.values())))} rounds per row)")


def main(n: int, rounds: int, faults: bool) -> None:
    print_table(asyncio.run(run(n, rounds, faults)), faults)
