"""Hosted concurrency: mediagen's Replicate backend against the official client, on the loopback server.

Two cases, each run through both clients in the same process, against one fake server with a fixed
model latency:

- **burst**: N image predictions at once (a model answering in about a second), outputs downloaded.
- **long**: predictions of a model running well past Replicate's 60 s sync window (scaled down by the
  server's clock), to count the HTTP requests spent waiting for them.

Columns: wall time, HTTP requests the server saw (API calls + output downloads), predictions created.
Nothing here asserts; the numbers are printed. Run:

    .venv/bin/python benchmarks/hosted_concurrency.py [--n 200] [--long-n 20] [--rounds 2]

`--provider openai`, `--provider google` or `--provider fal` runs that provider's cases instead (hosted_openai.py,
hosted_google.py, and the fal cases below: mediagen against the official client on the provider's loopback server; add
`--faults` for 429 every 3rd request and 500 every 5th).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any

import replicate

import mediagen as mg
from mediagen_replicate import ReplicateBackend
from mediagen_testkit.replicate_server import ReplicateServer, image_model, video_model

# One server clock for both cases: 0.02 real seconds per model second.
TIME_SCALE = 0.02
IMAGE_MODEL_S = 50.0  # 1 s real: answered inside the sync window
LONG_MODEL_S = 300.0  # 6 s real: well past the 60 s sync window (2 s real: the server rounds a wait up to whole seconds)


@dataclass
class Row:
    case: str
    client: str
    n: int
    wall_s: float
    api_requests: int
    downloads: int
    created: int

    @property
    def per_prediction(self) -> float:
        return self.api_requests / max(1, self.n)


def _counts(server: ReplicateServer) -> tuple[int, int, int]:
    snap = server.stats.snapshot()
    # Output files are served by `mediagen serve` under /outputs/ (keys are "METHOD route").
    downloads = sum(n for route, n in snap["by_route"].items() if route.split(" ", 1)[-1].startswith("/outputs/"))
    return snap["requests"] - downloads, downloads, snap["predictions_created"]


async def run_mediagen(server: ReplicateServer, case: str, model: str, n: int, request: Any) -> Row:
    server.stats.reset()
    backend = ReplicateBackend(api_token=server.token, base_url=server.url)
    async with mg.Client(backends={"replicate": backend}) as client:
        started = time.monotonic()
        results = await asyncio.gather(*(client.generate(request(i), model=f"replicate:{model}") for i in range(n)))
        wall = time.monotonic() - started
    if request(0).options.get("download"):
        assert all(r.artifacts[0].is_loaded for r in results)
    api, downloads, created = _counts(server)
    return Row(case, "mediagen", n, wall, api, downloads, created)


async def run_official(server: ReplicateServer, case: str, model: str, n: int, inputs: Any, download: bool) -> Row:
    server.stats.reset()
    client = replicate.Client(api_token=server.token, base_url=server.url)
    started = time.monotonic()

    async def one(i: int) -> bytes:
        output = await client.async_run(model, input=inputs(i))
        first = output[0] if isinstance(output, list) else output
        if not download:
            return b""
        if isinstance(first, str):
            # The official client wraps only https:/data: outputs in FileOutput; the loopback server's
            # are http:, so fetch them the way FileOutput.aread would, through the client's own pool.
            response = await client._async_client.get(first)
            return response.content
        return await first.aread()

    await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.monotonic() - started
    await client._async_client.aclose()
    api, downloads, created = _counts(server)
    return Row(case, "replicate.async_run", n, wall, api, downloads, created)


async def main(n: int, long_n: int, rounds: int) -> list[Row]:
    models = [image_model(run_seconds=IMAGE_MODEL_S, log_steps=4), video_model(run_seconds=LONG_MODEL_S, log_steps=10)]
    rows: list[Row] = []
    with ReplicateServer(time_scale=TIME_SCALE, models=models) as server:
        for round_ in range(rounds):
            # Fresh prompts and seeds each run: the server caches the media it made for an input.
            # Alternate who goes first, so neither always meets a warm (or a tired) server.
            order = ["mediagen", "official"] if round_ % 2 == 0 else ["official", "mediagen"]
            for who in order:
                tag = f"{round_}-{who}"
                base = 1000 * n * (2 * round_ + (who == "official"))
                if who == "mediagen":
                    rows.append(
                        await run_mediagen(
                            server,
                            "burst",
                            "black-forest-labs/flux-schnell",
                            n,
                            lambda i, base=base: mg.ImageRequest(
                                prompt="a fox", seed=base + i, options={"download": True}
                            ),
                        )
                    )
                    rows.append(
                        await run_mediagen(
                            server,
                            "long",
                            "minimax/video-01",
                            long_n,
                            lambda i, tag=tag: mg.VideoRequest(prompt=f"waves {tag} {i}"),
                        )
                    )
                else:
                    rows.append(
                        await run_official(
                            server,
                            "burst",
                            "black-forest-labs/flux-schnell",
                            n,
                            lambda i, base=base: {"prompt": "a fox", "seed": base + i},
                            download=True,
                        )
                    )
                    rows.append(
                        await run_official(
                            server,
                            "long",
                            "minimax/video-01",
                            long_n,
                            lambda i, tag=tag: {"prompt": f"waves {tag} {i}"},
                            download=False,
                        )
                    )
    return rows


def print_table(rows: list[Row]) -> None:
    print(
        f"fake Replicate, time_scale={TIME_SCALE}: image model {IMAGE_MODEL_S * TIME_SCALE:.1f} s, "
        f"long model {LONG_MODEL_S * TIME_SCALE:.1f} s (sync window {math.ceil(60 * TIME_SCALE)} s), real seconds"
    )
    header = f"{'case':<6} {'client':<20} {'n':>4} {'wall s':>8} {'API req':>8} {'downloads':>9} {'created':>8} {'API req/pred':>13}"
    print(header)
    print("-" * len(header))
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.case, row.client), []).append(row)
    for (case, client), runs in sorted(groups.items()):
        wall = statistics.median(r.wall_s for r in runs)
        api = round(statistics.median(r.api_requests for r in runs))
        downloads = round(statistics.median(r.downloads for r in runs))
        created = round(statistics.median(r.created for r in runs))
        n = runs[0].n
        print(f"{case:<6} {client:<20} {n:>4} {wall:>8.2f} {api:>8} {downloads:>9} {created:>8} {api / n:>13.2f}")
    print(f"(median of {len(next(iter(groups.values())))} rounds per row)")


# -- fal ------------------------------------------------------------------------------------------
#
# The official `fal_client` builds `https://` queue URLs only, from a host it reads once at import
# (`FAL_QUEUE_RUN_HOST`), so it cannot reach a plain-http loopback server. When `openssl` (for a
# throw-away certificate) and `fal_client` are installed, the fake serves https and every client
# goes through TLS, the official one included (`SSL_CERT_FILE` tells httpx to trust the
# certificate; the host is set before `fal_client` is first imported). Otherwise the comparison is
# with a plain httpx loop doing what `fal_client.AsyncClient.subscribe` does: submit, poll the status
# every 0.1 s (its default interval), fetch the result; the file is then downloaded.


def _fal_tls(tmp: str) -> tuple[str, str] | None:
    import importlib.util
    import os
    import shutil
    import subprocess

    if shutil.which("openssl") is None or importlib.util.find_spec("fal_client") is None:
        return None
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def fal_benchmark(n: int, long_n: int, rounds: int) -> None:
    """mediagen's fal backend vs the official client (over TLS) and a plain httpx queue loop; prints a table."""
    import os
    import tempfile

    import httpx

    from mediagen_fal import FalBackend
    from mediagen_testkit.fal_server import FalServer, image_app

    scale = 0.02
    rows: list[tuple[str, str, int, float, int, int, int]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tls = _fal_tls(tmp)
        with FalServer(time_scale=scale, certfile=tls[0] if tls else None, keyfile=tls[1] if tls else None) as server:
            server.add_app(image_app("acme/slow-image", run_s=150.0))  # 3 s real
            server.apps["fal-ai/flux/schnell"].run_s = 50.0  # 1 s real
            official: Any = None
            if tls is not None:
                os.environ["SSL_CERT_FILE"] = tls[0]
                os.environ["FAL_QUEUE_RUN_HOST"] = server.url.removeprefix("https://")
                import fal_client  # reads FAL_QUEUE_RUN_HOST now, once

                official = fal_client

            def counts() -> tuple[int, int, int]:
                snap = server.stats.snapshot()
                files = snap["by_route"].get("GET file", 0)
                return snap["requests"] - files, files, snap["jobs_queued"]

            async def with_mediagen(case: str, app: str, count: int, seed0: int) -> None:
                server.stats = type(server.stats)()
                backend = FalBackend(key=server.key, base_url=server.url, storage_url=server.url)
                async with mg.Client(backends={"fal": backend}) as client:
                    started = time.monotonic()
                    await asyncio.gather(
                        *(
                            client.generate(
                                mg.ImageRequest(prompt="a fox", seed=seed0 + i, options={"download": True}),
                                model=f"fal:{app}",
                            )
                            for i in range(count)
                        )
                    )
                    wall = time.monotonic() - started
                rows.append((case, "mediagen", count, wall, *counts()))

            async def with_official(case: str, app: str, count: int, seed0: int) -> None:
                server.stats = type(server.stats)()
                client = official.AsyncClient(key=server.key)
                async with httpx.AsyncClient(timeout=120) as files:

                    async def one(i: int) -> bytes:
                        result = await client.subscribe(app, {"prompt": "a fox", "seed": seed0 + i})
                        return (await files.get(result["images"][0]["url"])).content

                    started = time.monotonic()
                    await asyncio.gather(*(one(i) for i in range(count)))
                    wall = time.monotonic() - started
                await (await client._client).aclose()
                rows.append((case, "fal_client", count, wall, *counts()))

            async def with_httpx_loop(case: str, app: str, count: int, seed0: int) -> None:
                server.stats = type(server.stats)()
                base = "/".join(app.split("/")[:2])
                async with httpx.AsyncClient(headers={"Authorization": f"Key {server.key}"}, timeout=120) as http:

                    async def one(i: int) -> bytes:
                        answer = (await http.post(f"{server.url}/{app}", json={"prompt": "a fox", "seed": seed0 + i})).json()
                        status_url = f"{server.url}/{base}/requests/{answer['request_id']}"
                        while (await http.get(status_url + "/status")).json()["status"] != "COMPLETED":  # noqa: ASYNC110 - polling is the protocol
                            await asyncio.sleep(0.1)
                        result = (await http.get(status_url)).json()
                        return (await http.get(result["images"][0]["url"])).content

                    started = time.monotonic()
                    await asyncio.gather(*(one(i) for i in range(count)))
                    wall = time.monotonic() - started
                rows.append((case, "httpx queue loop", count, wall, *counts()))

            runners = [with_mediagen, with_official, with_httpx_loop] if official else [with_mediagen, with_httpx_loop]
            for round_ in range(rounds):
                # Rotate who goes first, so no client always meets a warm (or a tired) server.
                order = runners[round_ % len(runners) :] + runners[: round_ % len(runners)]
                for k, runner in enumerate(order):
                    seed0 = 10_000 * (len(runners) * round_ + k)
                    await runner("burst", "fal-ai/flux/schnell", n, seed0)
                    await runner("long", "acme/slow-image", long_n, seed0 + 5_000)

    print(
        f"fake fal queue over {'https' if tls else 'http'}, time_scale={scale}: image app 1.0 s, slow app 3.0 s, "
        "real seconds"
    )
    header = f"{'case':<6} {'client':<18} {'n':>4} {'wall s':>8} {'API req':>8} {'downloads':>9} {'queued':>7} {'API req/job':>12}"
    print(header)
    print("-" * len(header))
    groups: dict[tuple[str, str], list[tuple[str, str, int, float, int, int, int]]] = {}
    for row in rows:
        groups.setdefault((row[0], row[1]), []).append(row)
    for (case, who), runs in sorted(groups.items()):
        wall = statistics.median(r[3] for r in runs)
        api = round(statistics.median(r[4] for r in runs))
        files = round(statistics.median(r[5] for r in runs))
        queued = round(statistics.median(r[6] for r in runs))
        count = runs[0][2]
        print(f"{case:<6} {who:<18} {count:>4} {wall:>8.2f} {api:>8} {files:>9} {queued:>7} {api / count:>12.2f}")
    print(f"(median of {rounds} rounds per row)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="concurrent image predictions")
    parser.add_argument("--long-n", type=int, default=20, help="concurrent long-running predictions")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, alternating which client goes first")
    parser.add_argument(
        "--provider", default="replicate", choices=["replicate", "openai", "google", "fal"], help="whose API and client"
    )
    parser.add_argument("--faults", action="store_true", help="openai/google: 429 every 3rd request, 500 every 5th")
    args = parser.parse_args()
    mg.allow_remote_requests(False)  # loopback only, whatever the environment says
    if args.provider == "replicate":
        print_table(asyncio.run(main(args.n, args.long_n, args.rounds)))
    elif args.provider == "fal":
        asyncio.run(fal_benchmark(args.n, args.long_n, args.rounds))
    else:
        # Each provider's cases live in their own module next door (hosted_<provider>.py).
        import importlib

        importlib.import_module(f"hosted_{args.provider}").main(args.n, args.rounds, args.faults)
