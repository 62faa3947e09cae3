"""Speed settings of the diffusers backend: the `max` preset, batch buckets, the compile cache.

Padding to a bucket runs without compiling (an explicit `batch_buckets` pads in any case): the
padded call must hand back exactly the real outputs, equal to the unpadded call's for the same seeds.
One slow test compiles the tiny SD UNet with the CPU inductor backend in a subprocess, then starts a
fresh subprocess with the same mediagen cache: its first compiled call must find every graph cached
(torch's counters) and give the same pixels.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

import mediagen as mg
from mediagen_diffusers import DiffusersBackend
from mediagen_diffusers.backend import DiffusersSettings
from mediagen_diffusers.speed import bucket_for, compile_mode_for

TinyModel = Callable[[str], Path]


def test_default_settings_are_all_off() -> None:
    options = DiffusersSettings().speed_options
    assert not options.any and options.buckets == () and options.preset == "default"


def test_max_preset_expands_to_the_fast_options() -> None:
    options = DiffusersSettings(speed="max").speed_options
    assert options.channels_last is True
    assert options.compile == "full"
    assert options.compile_cache is True
    assert options.fuse_qkv is False  # slower than plain eager on an H100 without compile (measured)
    assert options.buckets == (1, 4, 8)  # the default buckets, capped at max_batch (8)
    assert compile_mode_for(options, "cuda") == "max-autotune-no-cudagraphs"
    assert compile_mode_for(options, "cpu") is None  # autotuning C++ templates costs minutes on a CPU
    assert DiffusersSettings(speed="max", max_batch=16).speed_options.buckets == (1, 4, 8, 16)
    # max_batch is always a bucket, so every batch has one.
    assert DiffusersSettings(speed="max", max_batch=6).speed_options.buckets == (1, 4, 6)


def test_settings_given_beside_the_preset_win() -> None:
    options = DiffusersSettings(
        speed="max", compile="regional", channels_last=False, compile_mode="reduce-overhead", compile_cache=False
    ).speed_options
    assert (options.compile, options.channels_last, options.compile_cache) == ("regional", False, False)
    assert compile_mode_for(options, "cuda") == "reduce-overhead"
    assert DiffusersSettings(speed="max", batch_buckets=[]).speed_options.buckets == ()
    assert DiffusersSettings(compile="full").speed_options.buckets == (1, 4, 8)
    assert DiffusersSettings(batch_buckets=[8, 2, 2]).speed_options.buckets == (2, 8)
    with pytest.raises(ValidationError):
        DiffusersSettings(batch_buckets=[0])
    with pytest.raises(ValueError, match="speed"):
        DiffusersBackend(speed="fastest")


def test_bucket_for() -> None:
    assert [bucket_for(n, (1, 4, 8)) for n in (1, 2, 3, 4, 5, 8, 9)] == [1, 4, 4, 4, 8, 8, 9]
    assert bucket_for(3, ()) == 3


def _pixels(artifact: mg.Artifact) -> np.ndarray[Any, Any]:
    assert isinstance(artifact, mg.Image)
    return np.asarray(artifact.to_pil().convert("RGB"), dtype=np.int16)


async def _generate(
    backend: DiffusersBackend, model: str, picture: mg.Image | None
) -> tuple[list[mg.Result], list[int]]:
    """Three outputs in one batch (two requests, or one img2img request with n=3), and the UNet's batch sizes."""
    seen: list[int] = []
    ctx = mg.RunContext
    if picture is None:
        # Load first, so that the hook below sees this batch only.
        await backend.run(mg.ImageRequest(prompt="warm", width=32, height=32, steps=2, seed=9), model, ctx())
        requests = [
            mg.ImageRequest(prompt="a red fox", width=32, height=32, steps=2, seed=1),
            mg.ImageRequest(prompt="a blue bird", width=32, height=32, steps=2, seed=2, n=2),
        ]
    else:
        await backend.run(
            mg.ImageRequest(prompt="warm", image=picture, width=32, height=32, steps=2, seed=9), model, ctx()
        )
        requests = [mg.ImageRequest(prompt="a red fox", image=picture, width=32, height=32, steps=2, seed=1, n=3)]
    runtime = backend._runtime
    assert runtime is not None
    unet = runtime.cache.get(("pipeline", model)).unet
    hook = unet.register_forward_pre_hook(lambda _m, args, kwargs: seen.append(int(args[0].shape[0])), with_kwargs=True)
    try:
        results = await asyncio.gather(*(backend.run(r, model, ctx()) for r in requests))
    finally:
        hook.remove()
    return list(results), seen


@pytest.mark.parametrize("task", ["text-to-image", "image-to-image"])
def test_padded_batch_returns_the_real_outputs_equal_to_unpadded(tiny_model: TinyModel, task: str) -> None:
    model = str(tiny_model("sd"))
    rng = np.random.default_rng(0)
    picture = (
        mg.Image.from_array(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) if task != "text-to-image" else None
    )

    async def both() -> tuple[tuple[list[mg.Result], list[int]], tuple[list[mg.Result], list[int]]]:
        # A wide window: both requests must reach the batcher together even on a loaded machine.
        plain = DiffusersBackend(batch_window_s=0.25)
        padded = DiffusersBackend(batch_window_s=0.25, batch_buckets=[1, 4])
        try:
            return await _generate(plain, model, picture), await _generate(padded, model, picture)
        finally:
            await plain.aclose()
            await padded.aclose()

    (plain, plain_sizes), (padded, padded_sizes) = asyncio.run(both())
    # Three outputs in one call; padded to four (the UNet sees twice that with guidance, or not).
    assert plain[0].raw["batch_outputs"] == padded[0].raw["batch_outputs"] == 3
    assert plain_sizes and padded_sizes and plain_sizes[0] % 3 == 0
    assert padded_sizes[0] == plain_sizes[0] // 3 * 4
    plain_images = [a for r in plain for a in r.artifacts]
    padded_images = [a for r in padded for a in r.artifacts]
    assert len(plain_images) == len(padded_images) == 3
    assert [r.seeds for r in plain] == [r.seeds for r in padded]
    for a, b in zip(plain_images, padded_images, strict=True):
        # A batch of 4 and one of 3 differ by float rounding only, which can flip a uint8 by one.
        assert np.abs(_pixels(a) - _pixels(b)).max() <= 1


_CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    import numpy as np
    import mediagen as mg
    from torch._dynamo.utils import counters
    from mediagen_diffusers import DiffusersBackend

    async def main():
        backend = DiffusersBackend(compile="full")
        request = mg.ImageRequest(prompt="a red fox", width=32, height=32, steps=2, seed=3)
        result = await backend.run(request, sys.argv[1], mg.RunContext())
        await backend.aclose()
        np.save(sys.argv[2], np.asarray(result.artifacts[0].to_pil().convert("RGB")))
        print(json.dumps({"inductor": dict(counters["inductor"]), "aot": dict(counters["aot_autograd"])}))

    asyncio.run(main())
    """
)


@pytest.mark.slow
@pytest.mark.timeout(1500)  # two processes, one compiling a UNet on 2 busy CPUs (100-250 s seen)
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="no C++ compiler for inductor")
def test_a_restarted_process_finds_the_model_compiled(tiny_model: TinyModel, tmp_path: Path) -> None:
    model = str(tiny_model("sd"))
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    env["MEDIAGEN_CACHE_DIR"] = str(tmp_path / "cache")

    def child(name: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, str(script), model, str(tmp_path / f"{name}.npy")],
            env=env,
            capture_output=True,
            text=True,
            timeout=700,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    cold = child("cold")
    assert cold["inductor"].get("fxgraph_cache_miss", 0) >= 1
    compile_dir = tmp_path / "cache" / "compile"
    assert list((compile_dir / "artifacts").glob("*.bin")), "no artifacts file written"
    assert any((compile_dir / "inductor").iterdir()), "torch's caches are not under the mediagen cache"
    warm = child("warm")
    assert warm["inductor"].get("fxgraph_cache_hit", 0) >= 1
    assert warm["inductor"].get("fxgraph_cache_miss", 0) == 0
    assert warm["aot"].get("autograd_cache_miss", 0) == 0
    assert np.array_equal(np.load(tmp_path / "cold.npy"), np.load(tmp_path / "warm.npy"))
