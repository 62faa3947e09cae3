"""Warm restart: how long a fresh process takes to serve its first compiled batch, with and without the compile cache.

Each measurement is a new Python process, timed from its spawn to its first batch of `--requests`
concurrent requests done through `mg.Client` (imports, model load, compile or cache load, the batch):

- `eager_start_s`: speed settings off (no compile), for reference;
- `cold_start_s`: `speed="max"` with an empty mediagen cache: torch compiles everything;
- `warm_restart_s`: the same again, the cache left by the cold run present (torch's inductor caches
  under `<cache>/compile/inductor` and the portable artifacts file);
- `portable_restart_s` (`--portable`): the artifacts file alone (torch's own caches pointed at an
  empty directory), i.e. a new machine that was handed the file. On a CPU the C++ kernels are not
  in the file and are rebuilt; on CUDA the Triton kernels are.

Each also has its `*_imports_s`: spawn to torch, diffusers and transformers imported, the part a
loaded machine stretches most. Then `steady_batch_s`: the warm process's second batch (what a compiled batch costs once warm).
torch's counters of the warm run (FX graph and AOTAutograd cache hits/misses) are in the JSON too.

Modes: default is the tiny Stable Diffusion of `mediagen_testkit.tiny` on the CPU (32 px, 2 steps);
`--gpu` the SD1.5 architecture with random weights (as `local_throughput.py --gpu`: 512 px, 30 DDIM
steps, guidance 7.5, fp16, 16 requests); `--gpu --dry-run` shrunken configs on any device.

Run:

    .venv/bin/python benchmarks/warm_restart.py [--portable]
    .venv/bin/python benchmarks/warm_restart.py --gpu [--portable]

With `$OUT` set, the JSON is also written to `$OUT/warm_restart.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def child(args: argparse.Namespace) -> None:
    """One fresh process: a client, one burst of requests (timed from the spawn), a second burst."""
    import logging

    import mediagen as mg

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings: dict[str, Any] = {"device": args.device, "dtype": args.dtype, "max_batch": args.requests}
    if args.compiled:
        settings["speed"] = "max"

    async def burst(client: mg.Client, model: str, round_: int) -> None:
        await asyncio.gather(
            *(
                client.image(
                    f"prompt {round_}-{i}",
                    model=model,
                    width=args.size,
                    height=args.size,
                    steps=args.steps,
                    seed=1000 * round_ + i,
                    guidance=args.guidance,
                )
                for i in range(args.requests)
            )
        )

    # What every start pays before the backend does anything, and which a loaded machine stretches
    # most: timed apart, so that the rest (load, compile or cache, the batch) can be compared.
    import diffusers  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    imports = time.time() - args.spawned

    async def main() -> dict[str, Any]:
        model = f"diffusers:{args.model}"
        async with mg.Client(providers={"diffusers": settings}) as client:
            await burst(client, model, 0)
            first = time.time() - args.spawned
            started = time.monotonic()
            await burst(client, model, 1)
            steady = time.monotonic() - started
        from torch._dynamo.utils import counters

        return {
            "first_batch_s": round(first, 2),
            "imports_s": round(imports, 2),
            "steady_batch_s": round(steady, 3),
            "counters": {
                "inductor": {k: v for k, v in counters["inductor"].items() if "cache" in k},
                "aot_autograd": {k: v for k, v in counters["aot_autograd"].items() if "cache" in k},
            },
        }

    print(json.dumps(asyncio.run(main())), flush=True)


def spawn(args: argparse.Namespace, model: Path, *, compiled: bool, env: dict[str, str], log: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", "--model", str(model), "--device", args.device]
    command += ["--dtype", args.dtype, "--size", str(args.size), "--steps", str(args.steps)]
    command += ["--guidance", str(args.guidance), "--requests", str(args.requests), "--spawned", str(time.time())]
    if compiled:
        command.append("--compiled")
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    log.write_text(done.stderr)  # the backend's log lines (compile cache loaded/saved/ignored)
    if done.returncode != 0:
        raise SystemExit(f"child failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true", help="SD1.5 architecture, 512 px, 30 steps, fp16 on CUDA")
    parser.add_argument("--dry-run", action="store_true", help="with --gpu: shrunken configs, any device")
    parser.add_argument("--portable", action="store_true", help="also time a restart from the artifacts file alone")
    parser.add_argument("--no-eager", action="store_true", help="skip the uncompiled reference process")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--workdir", default=None, help="where the model and caches go (default: a temp dir)")
    # Internal: the child process.
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compiled", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--device", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--spawned", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    import torch

    big = args.gpu and not args.dry_run
    args.size = args.size or (512 if big else 32)
    args.steps = args.steps or (30 if big else 2)
    args.device = "cuda:0" if args.gpu and torch.cuda.is_available() else "cpu"
    args.dtype = "float16" if args.device.startswith("cuda") else "float32"
    with tempfile.TemporaryDirectory(prefix="mediagen-restart-") as tmp:
        work = Path(args.workdir or tmp)
        if args.gpu:
            sys.path.insert(0, str(Path(__file__).parent))
            from local_throughput import build_sd15

            dtype = getattr(torch, args.dtype)
            model = build_sd15(work / "sd15", dry_run=args.dry_run, device=args.device, dtype=dtype)
        else:
            from mediagen_testkit.tiny import ensure_tiny_model

            model = ensure_tiny_model("sd", cache_dir=work / "models")
        base = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
        env = base | {"MEDIAGEN_CACHE_DIR": str(work / "cache"), "HF_HUB_OFFLINE": "1"}
        row: dict[str, Any] = {
            "device": torch.cuda.get_device_name(0)
            if args.device.startswith("cuda")
            else f"cpu ({os.cpu_count()} cores)",
            "mode": "gpu-dry-run" if args.dry_run else ("gpu" if args.gpu else "cpu"),
            "size": args.size,
            "steps": args.steps,
            "requests": args.requests,
            "torch": torch.__version__,
        }
        if not args.no_eager:
            eager = spawn(args, model, compiled=False, env=env, log=work / "eager.log")
            row["eager_start_s"] = eager["first_batch_s"]
            row["eager_imports_s"] = eager["imports_s"]
            row["eager_batch_s"] = eager["steady_batch_s"]
        cold = spawn(args, model, compiled=True, env=env, log=work / "cold.log")
        row["cold_start_s"] = cold["first_batch_s"]
        row["cold_imports_s"] = cold["imports_s"]
        warm = spawn(args, model, compiled=True, env=env, log=work / "warm.log")
        row["warm_restart_s"] = warm["first_batch_s"]
        row["warm_imports_s"] = warm["imports_s"]
        row["steady_batch_s"] = warm["steady_batch_s"]
        row["warm_counters"] = warm["counters"]
        if args.portable:
            # A new machine with the artifacts file only: torch's own caches start empty.
            fresh = env | {"TORCHINDUCTOR_CACHE_DIR": str(work / "fresh-inductor")}
            portable = spawn(args, model, compiled=True, env=fresh, log=work / "portable.log")
            row["portable_restart_s"] = portable["first_batch_s"]
            row["portable_imports_s"] = portable["imports_s"]
            row["portable_counters"] = portable["counters"]
    print(json.dumps(row), flush=True)
    out = os.environ.get("OUT")
    if out:
        Path(out, "warm_restart.json").write_text(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
