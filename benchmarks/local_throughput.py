"""Local throughput: the SDK's micro-batching against raw diffusers, in one process, on one model.

Two measurements, both printed (nothing is asserted):

- **throughput**: 16 requests with distinct prompts and seeds, sent at once through `mg.Client`
  (the diffusers backend batches them into as few pipeline calls as `max_batch` allows), against
  the same 16 run one by one with raw diffusers (`pipe(prompt, generator=...)`), the way a naive
  app serves them. Images per second of both, and the ratio.
- **overhead**: one request through the SDK against the same single raw call (median of several,
  interleaved), i.e. what validation, mapping, the device worker hop, the batching window and the
  result cost when there is nothing to batch with.

Modes:

- default (CPU): the tiny Stable Diffusion of `mediagen_testkit.tiny` at `--size` px (64 by default:
  at 32 px per-call Python overhead is all there is and batching looks unrealistically good).
- `--gpu`: the Stable Diffusion 1.5 architecture (UNet, VAE and CLIP text encoder configs of the real
  model) with random weights, saved as a pipeline directory: 512x512, 30 DDIM steps, guidance 7.5,
  fp16, like `shared/bench/raw_diffusers_anchor.py` (raw batch 1 on an H100: 1.23 images/s). The SDK
  side also runs with `--speed` options (channels_last + torch.compile) when asked.
- `--gpu --dry-run`: the same code path with shrunken configs on whatever device there is (a CPU
  check of the GPU mode).
- `--approx MODE[,MODE...]` (`first-block`, `faster`, `pyramid`, `taylorseer`, `fp8`): the opt-in
  approximate settings of the diffusers backend against the exact path, on a FLUX.1-architecture
  model (the step caches need a transformer denoiser): bursts of the same seeds through two
  clients, alternating; images/s of each, the speed-up, and PSNR/SSIM of every approximate image
  against its exact twin. With `--gpu`: the FLUX.1 transformer's width (24 heads of 128) with
  `--flux-layers` (2 double + 4 single by default, 1.2B parameters) at 512 px, 28 steps, bf16, small
  random text encoders; on the CPU a narrow one at 64 px, 8 steps. Random weights: PSNR/SSIM here
  measure how far the arithmetic drifts, not how a trained model's pictures look. `--approx-only`
  skips the SD1.5 stages.
- `--warm-restart`: a fresh process (new interpreter, model loaded from disk, `--restart-settings`,
  by default channels_last + compile) run twice, timed from its start to its first `--requests`
  batch done: the first populates the compile caches (`TORCHINDUCTOR_CACHE_DIR` under the model
  directory), the second is `warm_restart_s` (`cold_restart_s` beside it).

Run:

    .venv/bin/python benchmarks/local_throughput.py [--size 64] [--steps 4] [--requests 16]
    .venv/bin/python benchmarks/local_throughput.py --gpu [--speed] [--budget-s 540]
    .venv/bin/python benchmarks/local_throughput.py --gpu --dry-run
    .venv/bin/python benchmarks/local_throughput.py --approx first-block,fp8 --approx-only
    .venv/bin/python benchmarks/local_throughput.py --warm-restart --approx-only

With `$OUT` set, the numbers are also written to `$OUT/local_throughput.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import mediagen as mg
from mediagen_testkit.tiny import clip_tokenizer, sd_scheduler

T0 = time.monotonic()

# Stable Diffusion 1.5 configs (as in shared/bench/raw_diffusers_anchor.py).
SD15_UNET: dict[str, Any] = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=768,
    attention_head_dim=8,
)
SD15_VAE: dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    layers_per_block=2,
    sample_size=512,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
)
SD15_TEXT: dict[str, Any] = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_attention_heads=12,
    num_hidden_layers=12,
    projection_dim=768,
    vocab_size=49408,
    max_position_embeddings=77,
)
# The same layout, shrunk for --dry-run.
DRY_RUN_SHRINK: dict[str, dict[str, Any]] = {
    "unet": dict(sample_size=8, block_out_channels=(32, 32, 64, 64), cross_attention_dim=32, attention_head_dim=4),
    "vae": dict(sample_size=64, block_out_channels=(32, 32, 32, 32)),
    "text": dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2, projection_dim=32),
}


# FLUX.1's transformer width (dev/schnell: 19 double + 38 single blocks, 12B parameters); the depth
# is --flux-layers. Text encoders stay tiny: they run once per prompt, the transformer every step.
FLUX_TRANSFORMER: dict[str, Any] = dict(
    patch_size=1, attention_head_dim=128, num_attention_heads=24, axes_dims_rope=(16, 56, 56), guidance_embeds=False
)
FLUX_VAE: dict[str, Any] = dict(
    block_out_channels=(128, 256, 512, 512),
    latent_channels=16,
    layers_per_block=2,
    use_quant_conv=False,
    use_post_quant_conv=False,
    shift_factor=0.1159,
    scaling_factor=0.3611,
)
FLUX_CPU_SHRINK: dict[str, Any] = dict(attention_head_dim=32, num_attention_heads=4, axes_dims_rope=(8, 12, 12))
APPROX_SETTINGS: dict[str, dict[str, Any]] = {
    "first-block": {"step_cache": "first-block"},
    "faster": {"step_cache": "faster"},
    "pyramid": {"step_cache": "pyramid"},
    "taylorseer": {"step_cache": "taylorseer"},
    "fp8": {"quantize": "fp8"},
}


def log(message: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f} s] {message}", flush=True)


# -- models ----------------------------------------------------------------------------------------


def build_sd15(path: Path, *, dry_run: bool, device: str, dtype: Any) -> Path:
    """Write an SD1.5-architecture pipeline with random weights (seeded) to `path`."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if (path / "model_index.json").is_file():
        return path
    unet_cfg, vae_cfg, text_cfg = dict(SD15_UNET), dict(SD15_VAE), dict(SD15_TEXT)
    if dry_run:
        unet_cfg.update(DRY_RUN_SHRINK["unet"])
        vae_cfg.update(DRY_RUN_SHRINK["vae"])
        text_cfg.update(DRY_RUN_SHRINK["text"])
    # Initialise on the device: a random 860M-parameter UNet takes a while on a CPU.
    with torch.device(device):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**unet_cfg)
        torch.manual_seed(0)
        vae = AutoencoderKL(**vae_cfg)
        torch.manual_seed(0)
        text_encoder = CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, **text_cfg))
    scheduler = sd_scheduler()
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder.eval(),
        tokenizer=clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(dtype=dtype).save_pretrained(path)
    return path


def build_flux(path: Path, *, big: bool, layers: tuple[int, int], device: str, dtype: Any) -> Path:
    """Write a FLUX.1-architecture pipeline with random weights (seeded) to `path`: see `--approx`."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    from mediagen_testkit.tiny_families import _clip_text, _t5, _vae
    from mediagen_testkit.tiny_recipes import _t5_tokenizer, clip_tokenizer

    if (path / "model_index.json").is_file():
        return path
    text_dim, pooled_dim = 64, 32
    config = dict(FLUX_TRANSFORMER) | (FLUX_CPU_SHRINK if not big else {})
    with torch.device(device):
        torch.manual_seed(0)
        vae = (
            AutoencoderKL(
                in_channels=3,
                out_channels=3,
                down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4,
                **FLUX_VAE,
            )
            if big
            else _vae(4, flow=True)
        )
        latent_channels = vae.config.latent_channels
        torch.manual_seed(0)
        transformer = FluxTransformer2DModel(
            in_channels=4 * latent_channels,
            num_layers=layers[0],
            num_single_layers=layers[1],
            joint_attention_dim=text_dim,
            pooled_projection_dim=pooled_dim,
            **config,
        )
    tokenizer_2 = _t5_tokenizer(model_max_length=512)
    pipe = FluxPipeline(
        transformer=transformer,
        text_encoder=_clip_text(pooled_dim),
        tokenizer=clip_tokenizer(),
        text_encoder_2=_t5(tokenizer_2, d_model=text_dim),
        tokenizer_2=tokenizer_2,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
    )
    pipe.to(dtype=dtype).save_pretrained(path)
    log(
        f"FLUX.1-architecture model: {sum(p.numel() for p in transformer.parameters()) / 1e9:.2f}B transformer parameters"
    )
    return path


def load_raw(path: Path, device: str, dtype: Any) -> Any:
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(path, dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# -- the two sides ---------------------------------------------------------------------------------


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def raw_call(pipe: Any, args: argparse.Namespace, prompt: str, seed: int) -> Any:
    """The plain diffusers call a naive app makes for one request."""
    import torch

    return pipe(
        prompt,
        generator=torch.Generator("cpu").manual_seed(seed),
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        height=args.size,
        width=args.size,
    ).images[0]


def request(args: argparse.Namespace, prompt: str, seed: int) -> mg.ImageRequest:
    return mg.ImageRequest(
        prompt=prompt, seed=seed, steps=args.steps, guidance=args.guidance, width=args.size, height=args.size
    )


def prompts(count: int, round_: int) -> list[tuple[str, int]]:
    subjects = ["a red fox", "a lighthouse", "a bowl of ramen", "a bicycle", "a koi pond", "a robot", "a violin"]
    places = ["in snow", "at dusk", "on the moon", "under water", "in a forest"]
    return [
        (f"{subjects[i % len(subjects)]} {places[(i + round_) % len(places)]}, #{round_}-{i}", 1000 * round_ + i)
        for i in range(count)
    ]


async def sdk_burst(client: mg.Client, model: str, args: argparse.Namespace, round_: int) -> tuple[float, list[Any]]:
    started = time.perf_counter()
    results = await asyncio.gather(
        *(client.generate(request(args, p, s), model=model) for p, s in prompts(args.requests, round_))
    )
    return time.perf_counter() - started, results


def raw_burst(pipe: Any, args: argparse.Namespace, round_: int, device: str) -> float:
    started = time.perf_counter()
    for p, s in prompts(args.requests, round_):
        raw_call(pipe, args, p, s)
    sync(device)
    return time.perf_counter() - started


async def on_device_thread(device: str, fn: Any, *args: Any) -> Any:
    """Run a raw call on the thread the SDK runs its pipeline calls on, timed inside that thread.

    Why: torch's CPU thread pool (OpenMP) keeps one team of threads per calling thread, and a team
    that just finished spins for a while; alternating raw calls on the main thread with SDK calls on
    the worker thread makes each side's spinning team slow the other one down on a small CPU.
    """
    from mediagen_local import get_worker

    return await get_worker(device).call(fn, *args)


# -- main ------------------------------------------------------------------------------------------


async def throughput(
    client: mg.Client, model: str, pipe: Any, args: argparse.Namespace, device: str, label: str
) -> dict[str, Any]:
    """Warm the SDK up, then alternate raw one-by-one bursts and SDK concurrent bursts."""
    started = time.perf_counter()
    await sdk_burst(client, model, args, 0)  # loads; with speed options, compiles for the full batch
    warmup_s = time.perf_counter() - started
    log(f"{label}: SDK warm-up {warmup_s:.1f} s")
    backend = await client.backend("diffusers")
    raw_s: list[float] = []
    sdk_s: list[float] = []
    calls: list[int] = []
    # Rounds alternate, so that drift on a shared machine hits both sides alike.
    for round_ in range(1, args.rounds + 1):
        if time.monotonic() - T0 > args.budget_s and sdk_s:
            log("time budget spent; no more rounds")
            break
        raw_s.append(await on_device_thread(device, raw_burst, pipe, args, round_, device))
        before = backend.describe()["batching"]["batches_run"]
        elapsed, _ = await sdk_burst(client, model, args, round_)
        sdk_s.append(elapsed)
        calls.append(backend.describe()["batching"]["batches_run"] - before)
        log(
            f"{label} round {round_}: raw {args.requests / raw_s[-1]:.2f} images/s, "
            f"SDK {args.requests / sdk_s[-1]:.2f} images/s in {calls[-1]} pipeline call(s)"
        )
    raw_ips = args.requests / statistics.median(raw_s)
    sdk_ips = args.requests / statistics.median(sdk_s)
    return {
        "rounds": len(sdk_s),
        "sdk_calls_per_burst": calls,
        "raw_sequential_images_per_s": round(raw_ips, 3),
        "sdk_concurrent_images_per_s": round(sdk_ips, 3),
        "ratio": round(sdk_ips / raw_ips, 2),
        "sdk_warmup_s": round(warmup_s, 1),
    }


async def overhead(client: mg.Client, model: str, pipe: Any, args: argparse.Namespace, device: str) -> dict[str, Any]:
    """One request through the SDK against one raw call: pairs, alternating which goes first.

    On a shared machine the noise between two calls is larger than the SDK's cost, so the overhead
    is the median of the per-pair ratios (each pair ran back to back), not a ratio of medians.
    """

    def raw_one(prompt: str, seed: int) -> float:
        started = time.perf_counter()
        raw_call(pipe, args, prompt, seed)
        sync(device)
        return time.perf_counter() - started

    outside: list[float] = []
    queued: list[float] = []

    async def sdk_one(prompt: str, seed: int) -> float:
        started = time.perf_counter()
        res = await client.generate(request(args, prompt, seed), model=model)
        elapsed = time.perf_counter() - started
        # What the SDK adds around the pipeline call, and the part of it spent waiting for company.
        outside.append(elapsed - (res.timings.run_s or 0.0) - (res.timings.load_s or 0.0))
        queued.append(res.timings.queue_s or 0.0)
        return elapsed

    await sdk_one("warm up", 0)
    raw_s: list[float] = []
    sdk_s: list[float] = []
    for i in range(args.single_reps):
        if time.monotonic() - T0 > args.budget_s and sdk_s:
            break
        prompt, seed = f"one request #{i}", 500 + i
        if i % 2:
            sdk_s.append(await sdk_one(prompt, seed))
            raw_s.append(await on_device_thread(device, raw_one, prompt, seed))
        else:
            raw_s.append(await on_device_thread(device, raw_one, prompt, seed))
            sdk_s.append(await sdk_one(prompt, seed))
    ratio = statistics.median(sdk / raw for sdk, raw in zip(sdk_s, raw_s, strict=True))
    return {
        "single_pairs": len(sdk_s),
        "raw_single_s": round(statistics.median(raw_s), 4),
        "sdk_single_s": round(statistics.median(sdk_s), 4),
        "single_overhead_pct": round(100 * (ratio - 1), 1),
        "sdk_outside_call_ms": round(1000 * statistics.median(outside), 2),
        "sdk_queue_ms": round(1000 * statistics.median(queued), 2),
    }


def quality(exact: list[mg.Result], approx: list[mg.Result]) -> dict[str, Any]:
    """PSNR/SSIM of each approximate image against the exact one of the same seed."""
    from mediagen_testkit.quality import psnr, ssim

    pairs = [(e.artifacts[0], a.artifacts[0]) for e, a in zip(exact, approx, strict=True)]
    psnrs = [psnr(e, a) for e, a in pairs]
    ssims = [ssim(e, a) for e, a in pairs]
    finite = [p for p in psnrs if math.isfinite(p)]
    return {
        "images_compared": len(pairs),
        "identical": len(psnrs) - len(finite),
        # An identical pair has infinite PSNR: the mean and min are over the others (None if none).
        "psnr_db_mean": round(statistics.mean(finite), 2) if finite else None,
        "psnr_db_min": round(min(finite), 2) if finite else None,
        "ssim_mean": round(statistics.mean(ssims), 4),
        "ssim_min": round(min(ssims), 4),
    }


async def approx_stage(model: str, args: argparse.Namespace, settings: dict[str, Any], mode: str) -> dict[str, Any]:
    """One approximate mode against the exact path: alternating bursts of the same seeds."""
    exact_settings = settings
    name, _, threshold = mode.partition(":")
    approx_settings = settings | APPROX_SETTINGS[name]
    if threshold or (name == "first-block" and args.threshold is not None):
        approx_settings["step_cache_threshold"] = float(threshold) if threshold else args.threshold
    async with (
        mg.Client(providers={"diffusers": exact_settings}) as exact,
        mg.Client(providers={"diffusers": approx_settings}) as approx,
    ):
        started = time.perf_counter()
        await sdk_burst(exact, model, args, 0)
        await sdk_burst(approx, model, args, 0)
        log(f"approx {mode}: warm-up {time.perf_counter() - started:.1f} s")
        exact_s: list[float] = []
        approx_s: list[float] = []
        scores: list[dict[str, Any]] = []
        for round_ in range(1, args.rounds + 1):
            if time.monotonic() - T0 > args.budget_s and approx_s:
                log("time budget spent; no more rounds")
                break
            # Which side goes first alternates: on a machine whose load drifts, the side that always
            # ran second would gain (identical outputs measured "1.4x" that way on the CPU).
            if round_ % 2:
                e_s, e_res = await sdk_burst(exact, model, args, round_)
                a_s, a_res = await sdk_burst(approx, model, args, round_)
            else:
                a_s, a_res = await sdk_burst(approx, model, args, round_)
                e_s, e_res = await sdk_burst(exact, model, args, round_)
            exact_s.append(e_s)
            approx_s.append(a_s)
            scores.append(quality(e_res, a_res))
            log(
                f"approx {mode} round {round_}: exact {args.requests / e_s:.2f} images/s, approximate "
                f"{args.requests / a_s:.2f} images/s, PSNR {scores[-1]['psnr_db_mean']} dB, SSIM {scores[-1]['ssim_mean']}"
            )
        applied = (await approx.backend("diffusers")).describe().get("approximate", {})
    exact_ips = args.requests / statistics.median(exact_s)
    approx_ips = args.requests / statistics.median(approx_s)
    finite = [s["psnr_db_mean"] for s in scores if s["psnr_db_mean"] is not None]
    mins = [s["psnr_db_min"] for s in scores if s["psnr_db_min"] is not None]
    return {
        "applied": next(iter(applied.values()), []),
        "rounds": len(approx_s),
        "exact_images_per_s": round(exact_ips, 3),
        "approx_images_per_s": round(approx_ips, 3),
        "speedup": round(approx_ips / exact_ips, 3),
        "images_compared": sum(s["images_compared"] for s in scores),
        "identical": sum(s["identical"] for s in scores),
        "psnr_db_mean": round(statistics.mean(finite), 2) if finite else None,
        "psnr_db_min": min(mins) if mins else None,
        "ssim_mean": round(statistics.mean(s["ssim_mean"] for s in scores), 4),
        "ssim_min": min(s["ssim_min"] for s in scores),
    }


def restart_once(args: argparse.Namespace, model_dir: Path, settings: dict[str, Any]) -> float:
    """A fresh interpreter: from its start to its first burst of `--requests` done (seconds)."""
    env = dict(os.environ)
    # torch's on-disk compile caches (FX graphs, inductor kernels, autotuning) for this run's model.
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(model_dir.parent / "inductor-cache"))
    command = [
        sys.executable,
        __file__,
        "--burst-child",
        json.dumps(settings),
        "--model-dir",
        str(model_dir),
        "--size",
        str(args.size),
        "--steps",
        str(args.steps),
        "--guidance",
        str(args.guidance),
        "--requests",
        str(args.requests),
    ]
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=max(60.0, args.budget_s))
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"restart child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return elapsed


async def burst_child(args: argparse.Namespace) -> None:
    """`--burst-child SETTINGS`: load the model at --model-dir with SETTINGS, run one burst, exit."""
    settings = json.loads(args.burst_child)
    async with mg.Client(providers={"diffusers": settings}) as client:
        await sdk_burst(client, f"diffusers:{args.model_dir}", args, 0)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    # --gpu needs CUDA; its dry run uses CUDA when there is one; the CPU mode always runs on the CPU.
    device = "cuda:0" if args.gpu and (not args.dry_run or torch.cuda.is_available()) else "cpu"
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    workdir = Path(args.model_dir)

    row: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else f"cpu ({os.cpu_count()} cores)",
        "mode": "gpu-dry-run" if args.dry_run else ("gpu" if args.gpu else "cpu"),
        "versions": versions(),
    }
    settings: dict[str, Any] = {
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
        "max_batch": args.max_batch,
    }
    if args.window is not None:
        settings["batch_window_s"] = args.window
    if not args.approx_only:
        await sd_stages(args, device, dtype, workdir, settings, row)
    big = args.gpu and not args.dry_run
    if args.approx:
        # bf16 where the GPU has it (FLUX's own dtype); fp32 on the CPU.
        flux_dtype = torch.bfloat16 if device.startswith("cuda") else dtype
        flux_dir = build_flux(
            workdir / ("flux" if big else "flux-small"),
            big=big,
            layers=args.flux_layers,
            device=device,
            dtype=flux_dtype,
        )
        flux_args = argparse.Namespace(**vars(args))
        flux_args.size = args.flux_size or (512 if big else 64)
        flux_args.steps = args.flux_steps or (28 if big else 8)
        flux_args.guidance = 3.5
        row["approx_model"] = {
            "architecture": "FLUX.1 (random weights)",
            "layers": list(args.flux_layers),
            "size": flux_args.size,
            "steps": flux_args.steps,
            "dtype": str(flux_dtype).removeprefix("torch."),
        }
        row["approx"] = {}
        for mode in args.approx:
            if time.monotonic() - T0 > args.budget_s:
                log(f"time budget spent; skipping approx {mode}")
                continue
            try:
                row["approx"][mode] = await approx_stage(
                    f"diffusers:{flux_dir}", flux_args, settings | {"dtype": row["approx_model"]["dtype"]}, mode
                )
            except mg.MediagenError as exc:  # e.g. fp8 without torchao: say so, measure the rest
                row["approx"][mode] = {"error": str(exc)}
            log(f"approx {mode}: {row['approx'][mode]}")
            checkpoint(args, row)
    if args.warm_restart:
        model_dir = (
            build_sd15(
                workdir / ("sd15-dry" if args.dry_run else "sd15"), dry_run=args.dry_run, device=device, dtype=dtype
            )
            if args.gpu
            else __import__("mediagen_testkit.tiny", fromlist=["x"]).ensure_tiny_model("sd", cache_dir=workdir)
        )
        restart = settings | json.loads(args.restart_settings)
        if args.restart_runs == 2:
            cold = await asyncio.to_thread(restart_once, args, model_dir, restart)
            row["cold_restart_s"] = round(cold, 2)
            log(f"restart, cold: {cold:.1f} s to the first {args.requests}-image batch")
        warm = await asyncio.to_thread(restart_once, args, model_dir, restart)
        log(f"restart, warm: {warm:.1f} s to the first {args.requests}-image batch")
        row["warm_restart_s"] = round(warm, 2)
        row["restart_settings"] = restart
    return row


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for name in ("torch", "diffusers", "transformers", "torchao", "mediagen"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def checkpoint(args: argparse.Namespace, row: dict[str, Any]) -> None:
    """Write what is measured so far to `--out`: a run stopped by a hard time limit keeps it."""
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(row | {"partial": True}, indent=1) + "\n")


async def sd_stages(
    args: argparse.Namespace, device: str, dtype: Any, workdir: Path, settings: dict[str, Any], row: dict[str, Any]
) -> None:
    """The SD stages (raw sequential vs SDK concurrent, single-request overhead, `--speed`), into `row`."""

    # 1. The model, written once as a standard pipeline directory, and the raw side's pipeline.
    if args.gpu:
        model_dir = build_sd15(
            workdir / ("sd15-dry" if args.dry_run else "sd15"), dry_run=args.dry_run, device=device, dtype=dtype
        )
    else:
        from mediagen_testkit.tiny import ensure_tiny_model

        model_dir = ensure_tiny_model("sd", cache_dir=workdir)
    log(f"model at {model_dir} on {device} ({str(dtype).removeprefix('torch.')})")
    pipe = load_raw(model_dir, device, dtype)
    await on_device_thread(device, raw_call, pipe, args, "warm up", 0)
    model = f"diffusers:{model_dir}"
    row |= {
        "size": args.size,
        "steps": args.steps,
        "guidance": args.guidance,
        "requests": args.requests,
        "max_batch": args.max_batch,
    }

    # 2. The SDK as it comes (eager, like the raw side): throughput, then single-request overhead.
    async with mg.Client(providers={"diffusers": settings}) as client:
        row |= await throughput(client, model, pipe, args, device, "eager")
        row |= await overhead(client, model, pipe, args, device)
        row["batch_window_s"] = (await client.backend("diffusers")).describe()["batching"]["window_s"]
    checkpoint(args, row)

    # 3. With speed options (a second client: compiling changes the loaded modules), throughput only:
    #    single requests would each recompile for a new batch size, which says nothing about overhead.
    if args.speed:
        if time.monotonic() - T0 > args.budget_s:
            log("time budget spent; skipping the speed-options stage")
        else:
            fast = settings | {"channels_last": True, "compile": "full"}
            async with mg.Client(providers={"diffusers": fast}) as client:
                stage = await throughput(client, model, pipe, args, device, "speed")
            row["speed"] = {k: stage[k] for k in ("sdk_concurrent_images_per_s", "ratio", "sdk_warmup_s", "rounds")}
            checkpoint(args, row)


def modes(text: str) -> list[str]:
    """`first-block,fp8`; `first-block:0.3` gives First Block Cache its threshold."""
    chosen = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in chosen if m.partition(":")[0] not in APPROX_SETTINGS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown approx mode(s) {unknown}; known: {', '.join(APPROX_SETTINGS)}")
    for mode in chosen:
        name, colon, threshold = mode.partition(":")
        if colon and (name != "first-block" or not _fraction(threshold)):
            raise argparse.ArgumentTypeError(f"{mode}: only first-block takes a threshold, a number in (0, 1]")
    return chosen


def _fraction(text: str) -> bool:
    try:
        return 0.0 < float(text) <= 1.0
    except ValueError:
        return False


def layers(text: str) -> tuple[int, int]:
    double, _, single = text.partition(",")
    try:
        pair = (int(double), int(single))
    except ValueError:
        raise argparse.ArgumentTypeError("expected DOUBLE,SINGLE, e.g. 2,4") from None
    if pair[0] < 1 or pair[1] < 0:
        raise argparse.ArgumentTypeError("at least one double block")
    return pair


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--gpu", action="store_true", help="SD1.5 architecture, 512 px, 30 steps, fp16")
    parser.add_argument("--dry-run", action="store_true", help="with --gpu: shrunken configs, any device")
    parser.add_argument("--speed", action="store_true", help="SDK side with channels_last + torch.compile")
    parser.add_argument("--size", type=int, default=None, help="image side in px (64 on CPU, 512 with --gpu)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (4 on CPU, 30 with --gpu)")
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--window", type=float, default=None, help="batch_window_s (default: the backend's)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--single-reps", type=int, default=None, help="single-request pairs (15 CPU, 5 GPU)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--budget-s", type=float, default=540.0, help="stop starting new rounds after this")
    parser.add_argument("--model-dir", default=None, help="where models are written (default: a temp dir)")
    parser.add_argument(
        "--approx",
        type=modes,
        default=[],
        help="approximate modes: " + ",".join(APPROX_SETTINGS) + " (first-block:T: threshold T)",
    )
    parser.add_argument("--approx-only", action="store_true", help="skip the SD1.5 stages")
    parser.add_argument("--threshold", type=float, default=None, help="first-block: step_cache_threshold")
    parser.add_argument("--flux-layers", type=layers, default=(2, 4), help="--approx model: DOUBLE,SINGLE blocks")
    parser.add_argument("--flux-size", type=int, default=None, help="--approx model: px (512 GPU, 64 CPU)")
    parser.add_argument("--flux-steps", type=int, default=None, help="--approx model: steps (28 GPU, 8 CPU)")
    parser.add_argument("--warm-restart", action="store_true", help="time a fresh process to its first batch")
    parser.add_argument(
        "--restart-settings",
        default=json.dumps({"channels_last": True, "compile": "full"}),
        help="JSON: diffusers settings of the restarted process (over device/dtype/max_batch)",
    )
    parser.add_argument(
        "--restart-runs", type=int, choices=(1, 2), default=2, help="2: cold then warm; 1: warm only (caches there)"
    )
    parser.add_argument("--out", default=None, help="also write the JSON row here")
    parser.add_argument("--burst-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.burst_child is not None:
        args.size, args.steps = args.size or 64, args.steps or 4
        asyncio.run(burst_child(args))
        return
    big = args.gpu and not args.dry_run
    args.size = args.size or (512 if big else 64)
    args.steps = args.steps or (30 if big else 4)
    args.single_reps = args.single_reps or (5 if big else 15)

    if args.model_dir:
        row = asyncio.run(measure(args))
    else:
        # The SD1.5-sized model takes 1.7 GB on disk: do not leave one behind per run.
        with tempfile.TemporaryDirectory(prefix="mediagen-bench-") as workdir:
            args.model_dir = workdir
            row = asyncio.run(measure(args))
    print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(row, indent=1) + "\n")
    out = os.environ.get("OUT")
    if out:
        Path(out, "local_throughput.json").write_text(json.dumps(row, indent=1))
    for mode, stage in row.get("approx", {}).items():
        print(f"approx {mode}: {stage}")
    if "warm_restart_s" in row:
        print(f"restart to the first batch: cold {row.get('cold_restart_s', '-')} s, warm {row['warm_restart_s']} s")
    if "ratio" not in row:
        return
    print()
    print(
        f"| device | mode | size | steps | raw sequential img/s | SDK {args.requests} concurrent img/s | ratio |"
        " single raw s | single SDK s | overhead |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {row['device']} | {row['mode']} | {row['size']} | {row['steps']} | {row['raw_sequential_images_per_s']} |"
        f" {row['sdk_concurrent_images_per_s']} | {row['ratio']}x | {row['raw_single_s']} | {row['sdk_single_s']} |"
        f" {row['single_overhead_pct']} % |"
    )
    if "speed" in row:
        speed = row["speed"]
        print(
            f"\nwith channels_last + torch.compile: SDK {speed['sdk_concurrent_images_per_s']} images/s,"
            f" {speed['ratio']}x raw sequential (warm-up {speed['sdk_warmup_s']} s)"
        )


if __name__ == "__main__":
    main()
