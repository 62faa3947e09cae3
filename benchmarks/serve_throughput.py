"""Serving throughput: 16 concurrent HTTP callers through `mediagen serve` against the same 16 in-process.

One process, one event loop, one `mg.Client`: the server (real uvicorn on 127.0.0.1) runs on the
client the in-process side uses, so both sides reach the same device worker and micro-batcher and
the difference is what HTTP costs (JSON, the sync wait, storing the outputs, downloading each PNG).
Rounds alternate between the two sides. Printed, nothing asserted:

- **throughput**: images/s of 16 concurrent requests (distinct prompts and seeds, tiny SD at
  `--size` px, `--steps` steps), in-process (`client.generate`) vs over HTTP (`POST
  /v1/models/acme/sd/predictions` with `Prefer: wait`, then a GET of the output URL), and the p50 /
  p95 latency of one request in each; and the CPU seconds this process spent per image on each
  side, which other tenants of a shared machine do not change (wall time they do).
- **webhooks vs polling**: HTTP requests per prediction when a caller polls
  `GET /v1/predictions/{id}` every `--poll-s` against one that waits for the signed webhook.

Run:

    .venv/bin/python benchmarks/serve_throughput.py [--size 64] [--steps 4] [--requests 16] [--rounds 5]
        [--batch-window-s 0.01]

With `$OUT` set, the numbers are also written to `$OUT/serve_throughput.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import mediagen as mg
from mediagen.serve import ServedModel, ServeSettings, TokenSpec, create_app
from mediagen_testkit.tiny import ensure_tiny_model

TOKEN = "benchmark-token-0123456789abcdef"
_running: set[asyncio.Future[None]] = set()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def _serve(app: Any, sock: socket.socket) -> uvicorn.Server:
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", access_log=False, log_level="warning"))
    _running.add(asyncio.ensure_future(server.serve(sockets=[sock])))
    while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
        await asyncio.sleep(0.01)
    return server


def _bound() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--poll-s", type=float, default=0.1)
    parser.add_argument(
        "--batch-window-s", type=float, default=None, help="the diffusers backend's batch_window_s (default: its own)"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    sd = ensure_tiny_model("sd", cache_dir=work / "models")
    settings_of_diffusers = {} if args.batch_window_s is None else {"batch_window_s": args.batch_window_s}
    client = mg.Client(cache=False, provenance=False, providers={"diffusers": settings_of_diffusers})
    settings = ServeSettings(
        models=[ServedModel(owner="acme", name="sd", model=f"diffusers:{sd}")],
        db=work / "predictions.db",
        tokens=[TokenSpec.from_token("bench", TOKEN)],
        max_concurrency=None,
        max_outputs=8,
    )
    app = create_app(settings, client=client)
    sock = _bound()
    server = await _serve(app, sock)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    http = httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=64))

    def fields(i: int, round_: int) -> dict[str, Any]:
        return {
            "prompt": f"a fox, take {round_}-{i}",
            "seed": 1000 * round_ + i,
            "width": args.size,
            "height": args.size,
            "steps": args.steps,
        }

    async def in_process(i: int, round_: int) -> float:
        begun = time.perf_counter()
        result = await client.generate(mg.ImageRequest(**fields(i, round_)), model=f"diffusers:{sd}")
        result.images[0].read()  # encoded PNG bytes, as the HTTP side gets them
        return time.perf_counter() - begun

    async def over_http(i: int, round_: int) -> float:
        begun = time.perf_counter()
        created = await http.post(
            f"{base}/v1/models/acme/sd/predictions",
            json={"input": fields(i, round_)},
            headers={**headers, "Prefer": "wait=60"},
        )
        body = created.json()
        while body["status"] not in ("succeeded", "failed", "canceled"):
            # The sync wait ran out (a loaded machine): poll, as the official clients do.
            await asyncio.sleep(0.05)
            body = (await http.get(body["urls"]["get"], headers=headers)).json()
        assert body["status"] == "succeeded", body
        (await http.get(body["output"][0])).raise_for_status()
        return time.perf_counter() - begun

    cpu: dict[str, list[float]] = {"in_process": [], "http": []}

    async def burst(side: Any, round_: int) -> tuple[float, list[float]]:
        begun, cpu_begun = time.perf_counter(), time.process_time()
        latencies = await asyncio.gather(*(side(i, round_) for i in range(args.requests)))
        # CPU seconds of this process (all its threads) per image: what other tenants of a shared
        # machine do not change, unlike wall time.
        cpu["in_process" if side is in_process else "http"].append((time.process_time() - cpu_begun) / args.requests)
        return args.requests / (time.perf_counter() - begun), list(latencies)

    # Warm-up: load the pipeline, compile nothing, fill the connection pool.
    await burst(in_process, 0)
    await burst(over_http, 0)
    cpu["in_process"].clear()
    cpu["http"].clear()

    rates: dict[str, list[float]] = {"in_process": [], "http": []}
    lat: dict[str, list[float]] = {"in_process": [], "http": []}
    calls: dict[str, list[int]] = {"in_process": [], "http": []}
    ratios: list[float] = []
    backend = await client.backend("diffusers")
    for round_ in range(1, args.rounds + 1):
        # Paired rounds, the order alternating: a loaded machine slows both sides of a round alike.
        order = [("in_process", in_process), ("http", over_http)]
        for name, side in order if round_ % 2 else order[::-1]:
            before = backend.describe()["batching"]["batches_run"]
            rate, latencies = await burst(side, round_)
            calls[name].append(backend.describe()["batching"]["batches_run"] - before)
            rates[name].append(rate)
            lat[name] += latencies
        ratios.append(rates["http"][-1] / rates["in_process"][-1])
        print(
            f"round {round_}: in-process {rates['in_process'][-1]:.2f}/s in {calls['in_process'][-1]} call(s), "
            f"HTTP {rates['http'][-1]:.2f}/s in {calls['http'][-1]} call(s), ratio {ratios[-1]:.2f}; "
            f"CPU s/image {cpu['in_process'][-1]:.3f} vs {cpu['http'][-1]:.3f}",
            flush=True,
        )

    # Webhooks vs polling: requests a caller makes per prediction.
    received: list[float] = []
    done_events: dict[str, asyncio.Event] = {}

    async def hook(request: Request) -> Response:
        body = json.loads(await request.body())
        received.append(time.perf_counter())
        if body["status"] in ("succeeded", "failed", "canceled"):
            done_events.setdefault(body["id"], asyncio.Event()).set()
        return Response(status_code=204)

    hook_sock = _bound()
    hook_server = await _serve(Starlette(routes=[Route("/hook", hook, methods=["POST"])]), hook_sock)
    hook_url = f"http://127.0.0.1:{hook_sock.getsockname()[1]}/hook"
    polling_requests = 0
    for i in range(args.requests):
        created = (
            await http.post(f"{base}/v1/models/acme/sd/predictions", json={"input": fields(i, 99)}, headers=headers)
        ).json()
        polling_requests += 1
        while True:
            polling_requests += 1
            got = (await http.get(f"{base}/v1/predictions/{created['id']}", headers=headers)).json()
            if got["status"] in ("succeeded", "failed", "canceled"):
                break
            await asyncio.sleep(args.poll_s)
        polling_requests += 1  # the output download
        await http.get(got["output"][0])
    webhook_requests = 0
    for i in range(args.requests):
        created = (
            await http.post(
                f"{base}/v1/models/acme/sd/predictions",
                json={"input": fields(i, 98), "webhook": hook_url, "webhook_events_filter": ["completed"]},
                headers=headers,
            )
        ).json()
        webhook_requests += 1
        event = done_events.setdefault(created["id"], asyncio.Event())
        await asyncio.wait_for(event.wait(), 120)
        webhook_requests += 1  # the output download
        await http.get(f"{base}/v1/predictions/{created['id']}", headers=headers)  # not counted: to get the URL
    results = {
        "machine": os.environ.get("BENCH_MACHINE", "unknown"),
        "size": args.size,
        "steps": args.steps,
        "batch_window_s": args.batch_window_s,
        "requests": args.requests,
        "rounds": args.rounds,
        "in_process_images_per_s": statistics.median(rates["in_process"]),
        "http_images_per_s": statistics.median(rates["http"]),
        "http_vs_in_process_per_round": [round(r, 3) for r in ratios],
        "http_vs_in_process_median": statistics.median(ratios),
        "pipeline_calls_per_burst": calls,
        "in_process_cpu_s_per_image": statistics.median(cpu["in_process"]),
        "http_cpu_s_per_image": statistics.median(cpu["http"]),
        "http_cpu_overhead": statistics.median(cpu["http"]) / statistics.median(cpu["in_process"]) - 1,
        "load_average_1m": os.getloadavg()[0],
        "in_process_p50_s": _percentile(lat["in_process"], 0.5),
        "in_process_p95_s": _percentile(lat["in_process"], 0.95),
        "http_p50_s": _percentile(lat["http"], 0.5),
        "http_p95_s": _percentile(lat["http"], 0.95),
        "polling_requests_per_prediction": polling_requests / args.requests,
        "webhook_requests_per_prediction": webhook_requests / args.requests,
        "webhook_deliveries_per_prediction": len(received) / args.requests,
    }
    print(json.dumps(results, indent=2))
    if out := os.environ.get("OUT"):
        Path(out, "serve_throughput.json").write_text(json.dumps(results, indent=2))  # noqa: ASYNC240

    await http.aclose()
    hook_server.should_exit = True
    server.should_exit = True
    await asyncio.sleep(0.5)
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
