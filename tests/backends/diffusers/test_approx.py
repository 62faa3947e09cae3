"""Approximate speed-ups of the diffusers backend (step caches, fp8 weights) on tiny pipelines.

A random-weight tiny FLUX barely changes its picture when a step is reused (its images agree
within one uint8 level either way), so whether a cache hook skipped work is counted instead: every
attention call goes through `scaled_dot_product_attention`, and a skipped block or attention makes
none. The SDK must skip exactly what raw diffusers with the same hook skips, and make the same
image for the same seed.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mediagen as mg
from mediagen_diffusers import DiffusersBackend
from mediagen_testkit.counting import AttentionCount, count_attention
from mediagen_testkit.quality import psnr

TinyModel = Callable[[str], Path]

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

STEPS = 8
# First Block Cache's threshold: high enough that the tiny FLUX skips some of its 8 steps.
THRESHOLD = 0.5


@pytest.fixture
def attention() -> Iterator[AttentionCount]:
    with count_attention() as count:
        yield count


def request(seed: int = 1) -> mg.ImageRequest:
    return mg.ImageRequest(prompt="a red fox", steps=STEPS, seed=seed, width=32, height=32)


def pixels(artifact: mg.Artifact) -> np.ndarray[Any, Any]:
    assert isinstance(artifact, mg.Image)
    return np.asarray(artifact.to_pil().convert("RGB"), dtype=np.int16)


def raw_diffusers(directory: Path, seed: int, hook: Callable[[Any], None] | None) -> np.ndarray[Any, Any]:
    """The same call on diffusers itself, with `hook(pipe)` applied first (None: exact)."""
    import diffusers
    import torch

    pipe = diffusers.DiffusionPipeline.from_pretrained(directory)
    pipe.set_progress_bar_config(disable=True)
    if hook is not None:
        hook(pipe)
    with torch.inference_mode():
        out = pipe(
            "a red fox",
            num_inference_steps=STEPS,
            height=32,
            width=32,
            generator=[torch.Generator("cpu").manual_seed(seed)],
        )
    return np.asarray(out.images[0].convert("RGB"), dtype=np.int16)


def diffusers_hook(mode: str) -> Callable[[Any], None]:
    """What `step_cache=mode` should amount to, written against diffusers' public API."""
    import diffusers

    def hook(pipe: Any) -> None:
        clock = lambda: pipe.current_timestep  # noqa: E731
        config = {
            "first-block": lambda: diffusers.FirstBlockCacheConfig(threshold=THRESHOLD),
            "faster": lambda: diffusers.FasterCacheConfig(
                spatial_attention_block_skip_range=2, current_timestep_callback=clock, is_guidance_distilled=True
            ),
            "pyramid": lambda: diffusers.PyramidAttentionBroadcastConfig(
                spatial_attention_block_skip_range=2, current_timestep_callback=clock
            ),
            "taylorseer": lambda: diffusers.TaylorSeerCacheConfig(),
        }[mode]()
        pipe.transformer.enable_cache(config)

    return hook


async def sdk(model: str, settings: dict[str, Any], seed: int = 1) -> tuple[mg.Result, dict[str, Any]]:
    async with mg.Client(providers={"diffusers": settings}) as client:
        result = await client.generate(request(seed), model=f"diffusers:{model}")
        described = (await client.backend("diffusers")).describe()
    return result, described


async def test_exact_by_default_and_unmarked(tiny_model: TinyModel, attention: AttentionCount) -> None:
    flux = tiny_model("flux")
    backend = DiffusersBackend()
    assert not backend.config.approx.any
    assert await backend.revision(str(flux)) is None  # result-cache keys as before
    result, described = await sdk(str(flux), {})
    exact_calls = attention.calls
    raw = await asyncio.to_thread(raw_diffusers, flux, 1, None)
    assert attention.calls == 2 * exact_calls  # nothing skipped on either side
    assert np.abs(pixels(result.artifacts[0]) - raw).max() <= 1
    assert "approximate" not in result.artifacts[0].metadata
    assert "approximate" not in result.raw and "approximate" not in described


@pytest.mark.parametrize("mode", ["first-block", "faster", "pyramid", "taylorseer"])
async def test_step_cache_skips_what_diffusers_skips_and_marks_outputs(
    mode: str, tiny_model: TinyModel, attention: AttentionCount
) -> None:
    flux = tiny_model("flux")
    settings: dict[str, Any] = {"step_cache": mode}
    if mode == "first-block":
        settings["step_cache_threshold"] = THRESHOLD

    exact = await asyncio.to_thread(raw_diffusers, flux, 1, None)
    exact_calls, attention.calls = attention.calls, 0
    result, described = await sdk(str(flux), settings)
    sdk_calls, attention.calls = attention.calls, 0
    raw = await asyncio.to_thread(raw_diffusers, flux, 1, diffusers_hook(mode))
    raw_calls = attention.calls

    assert sdk_calls < exact_calls, f"{mode}: the hook skipped nothing ({sdk_calls} of {exact_calls} attention calls)"
    assert sdk_calls == raw_calls, f"{mode}: the SDK skipped differently from diffusers with the same hook"
    image = pixels(result.artifacts[0])
    assert np.abs(image - raw).max() <= 1
    assert psnr(image, exact) > 30.0  # an approximation, not a different picture

    label = result.artifacts[0].metadata["approximate"]
    assert len(label) == 1 and label[0].startswith(f"step_cache:{mode}")
    assert result.raw["approximate"] == label
    assert described["approximate"] == {str(flux): label}
    assert (await DiffusersBackend(**settings).revision(str(flux))) == f"approx:step_cache={mode}" + (
        f",step_cache_threshold={THRESHOLD}" if mode == "first-block" else ""
    )


async def test_a_second_call_starts_from_a_clean_cache(tiny_model: TinyModel, attention: AttentionCount) -> None:
    # The same request twice skips the same steps and makes the same image: nothing of the first call
    # (residuals, step counters) leaks into the second.
    flux = tiny_model("flux")
    async with mg.Client(providers={"diffusers": {"step_cache": "taylorseer"}}) as client:
        first = await client.generate(request(3), model=f"diffusers:{flux}")
        calls, attention.calls = attention.calls, 0
        second = await client.generate(request(3), model=f"diffusers:{flux}")
    assert attention.calls == calls
    assert np.array_equal(pixels(first.artifacts[0]), pixels(second.artifacts[0]))


async def test_step_cache_on_a_unet_is_refused_before_loading(tiny_model: TinyModel) -> None:
    sd = tiny_model("sd")
    backend = DiffusersBackend(step_cache="first-block")
    try:
        for _ in range(2):  # every request, not only the first
            with pytest.raises(mg.UnsupportedRequestError, match="UNet2DConditionModel") as info:
                await backend.run(request(), str(sd), mg.RunContext())
            assert info.value.feature == "step_cache"
        # Refused before the device worker started, let alone loaded weights.
        assert "batching" not in backend.describe()
    finally:
        await backend.aclose()


def test_contradictory_settings_are_refused() -> None:
    with pytest.raises(mg.ConfigError, match="step_cache_threshold"):
        DiffusersBackend(step_cache_threshold=0.1)
    with pytest.raises(mg.ConfigError, match="fuse_qkv"):
        DiffusersBackend(quantize="fp8", fuse_qkv=True)
    with pytest.raises(ValueError, match="step_cache"):
        DiffusersBackend(step_cache="teacache")


async def test_fp8_without_torchao_says_what_to_install(tiny_model: TinyModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchao", None)  # as if not installed
    flux = tiny_model("flux")
    async with mg.Client(providers={"diffusers": {"quantize": "fp8"}}) as client:
        with pytest.raises(mg.ConfigError, match=r"mediagen\[fp8\]"):
            await client.generate(request(), model=f"diffusers:{flux}")


async def test_fp8_weights_run_on_the_cpu_like_torchao_on_diffusers(tiny_model: TinyModel) -> None:
    pytest.importorskip("torchao", reason="the fp8 extra is not installed")
    flux = tiny_model("flux")

    def quantize(pipe: Any) -> None:
        from torchao.quantization import Float8WeightOnlyConfig, quantize_

        quantize_(pipe.transformer, Float8WeightOnlyConfig())
        # The weights really are float8 now (what the SDK's load does too: same call, same module).
        assert any("float8" in str(getattr(p, "qdata", p).dtype) for p in pipe.transformer.parameters())

    result, described = await sdk(str(flux), {"quantize": "fp8"})
    raw = await asyncio.to_thread(raw_diffusers, flux, 1, quantize)
    exact = await asyncio.to_thread(raw_diffusers, flux, 1, None)
    image = pixels(result.artifacts[0])
    assert np.abs(image - raw).max() <= 1
    assert psnr(image, exact) > 30.0
    assert result.artifacts[0].metadata["approximate"] == ["fp8:transformer"]
    assert described["approximate"] == {str(flux): ["fp8:transformer"]}
