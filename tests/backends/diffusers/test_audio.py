"""Sound and music through the diffusers backend: tiny Stable Audio and AudioLDM2 pipelines, by path, offline.

The tiny Stable Audio makes stereo at 4 kHz, at most 2.048 s; the tiny AudioLDM2 mono at 16 kHz. Neither
pipeline has `callback_on_step_end`, so these tests also check that progress and cancellation reach them.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mediagen as mg

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("torchsde")
sf = pytest.importorskip("soundfile")

from mediagen_diffusers import DiffusersBackend  # noqa: E402

# torchsde's Brownian interval trips on float rounding of the tiny scheduler's sigmas; GPT-2 on an old argument.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Should have:UserWarning", "ignore:`past_key_values` is deprecated:FutureWarning"
)

TinyModel = Callable[[str], Path]


@pytest.fixture(scope="module")
def backend() -> Any:
    """One backend for the module: pipelines load once."""
    b = DiffusersBackend(device="cpu", batch_window_s=0.2)
    yield b
    asyncio.run(b.aclose())


@pytest.fixture(scope="module")
def stable_audio(tiny_model: TinyModel) -> str:
    return str(tiny_model("stable-audio"))


@pytest.fixture(scope="module")
def audioldm2(tiny_model: TinyModel) -> str:
    return str(tiny_model("audioldm2"))


async def run(backend: Any, request: mg.AudioRequest, model: str, **ctx: Any) -> mg.Result:
    return await backend.run(request, model, mg.RunContext(**ctx))  # type: ignore[no-any-return]


def sound(**fields: Any) -> mg.AudioRequest:
    return mg.AudioRequest(
        **{"prompt": "rain on a tin roof", "kind": "sound", "duration_s": 1.5, "steps": 3, "seed": 1, **fields}
    )


def decode_wav(artifact: mg.Artifact, path: Path) -> tuple[np.ndarray[Any, Any], int]:
    saved = artifact.save(path)
    samples, rate = sf.read(io.BytesIO(saved.read_bytes()), dtype="float32", always_2d=True)
    return samples.T, int(rate)


# -- Stable Audio ----------------------------------------------------------------------------------


async def test_stable_audio_is_a_stereo_wav_of_the_requested_duration(
    backend: Any, stable_audio: str, tmp_path: Path
) -> None:
    events: list[mg.Event] = []
    res = await run(backend, sound(duration_s=1.5, n=2), stable_audio, emit=events.append)
    assert res.raw["pipeline"] == "StableAudioPipeline" and res.raw["call"]["audio_end_in_s"] == 1.5
    assert res.seeds == [1, 2] and len(res.audios) == 2
    for i, artifact in enumerate(res.artifacts):
        samples, rate = decode_wav(artifact, tmp_path / f"rain{i}.wav")
        assert rate == 4000 and samples.shape == (2, 6000)
        assert artifact.metadata["loudness_dbfs"] is not None
    # Its legacy callback pipeline still reports every step.
    assert [e.step for e in events if isinstance(e, mg.Progress)] == [1, 2, 3]


async def test_stable_audio_seeds_reproduce_and_batches_match_alone(backend: Any, stable_audio: str) -> None:
    requests = [sound(prompt="wind", seed=5), sound(seed=6), sound(prompt="a dog barking far away", seed=7)]
    together = await asyncio.gather(*(run(backend, r, stable_audio) for r in requests))
    assert [r.raw["batch_requests"] for r in together] == [3, 3, 3]
    alone = [await run(backend, r, stable_audio) for r in requests]
    for batched, single in zip(together, alone, strict=True):
        assert single.raw["batch_requests"] == 1
        np.testing.assert_allclose(batched.audios[0].samples, single.audios[0].samples, atol=1e-4)
    again = await run(backend, requests[1], stable_audio)
    np.testing.assert_array_equal(again.audios[0].samples, alone[1].audios[0].samples)
    assert not np.allclose(together[0].audios[0].samples, together[1].audios[0].samples)


async def test_stable_audio_resamples_normalises_and_plays_music(backend: Any, stable_audio: str) -> None:
    res = await run(
        backend, sound(kind="music", duration_s=1.0, sample_rate=16000, options={"normalize": True}), stable_audio
    )
    audio = res.audios[0]
    assert audio.sample_rate == 16000 and audio.samples.shape == (2, 16000)
    assert np.abs(audio.samples).max() == pytest.approx(0.99, abs=1e-3)


async def test_stable_audio_refuses_a_duration_it_cannot_make_before_loading(tmp_path: Path, stable_audio: str) -> None:
    fresh = DiffusersBackend(device="cpu")
    with pytest.raises(mg.UnsupportedRequestError, match=r"at most 2\.048 s"):
        await run(fresh, sound(duration_s=5.0), stable_audio)
    assert fresh.describe().get("loaded", []) == []
    await fresh.aclose()


async def test_cancelling_stable_audio_interrupts_the_pipeline(backend: Any, stable_audio: str) -> None:
    started = asyncio.Event()
    loop = asyncio.get_running_loop()
    steps: list[int] = []

    def sink(event: mg.Event) -> None:
        if isinstance(event, mg.Progress):
            steps.append(event.step)
            loop.call_soon_threadsafe(started.set)

    ctx = mg.RunContext(emit=sink)
    task = asyncio.ensure_future(backend.run(sound(steps=400), stable_audio, ctx))
    await asyncio.wait_for(started.wait(), 30)
    ctx.cancelled.set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps and max(steps) < 400


async def test_options_normalize_on_an_image_model_is_a_warning(backend: Any, tiny_model: TinyModel) -> None:
    ctx = mg.RunContext()
    request = mg.ImageRequest(prompt="a fox", width=32, height=32, steps=1, seed=1, options={"normalize": True})
    await backend.run(request, str(tiny_model("sd")), ctx)
    assert [w.feature for w in ctx.warnings] == ["options.normalize"]


# -- AudioLDM2 -------------------------------------------------------------------------------------


async def test_audioldm2_makes_sound_of_the_requested_duration(backend: Any, audioldm2: str, tmp_path: Path) -> None:
    requests = [
        sound(duration_s=0.5, steps=2, seed=3),
        sound(prompt="a hammer on wood", duration_s=0.5, steps=2, seed=4),
    ]
    together = await asyncio.gather(*(run(backend, r, audioldm2) for r in requests))
    assert together[0].raw["pipeline"] == "AudioLDM2Pipeline" and together[0].raw["batch_requests"] == 2
    samples, rate = decode_wav(together[0].artifacts[0], tmp_path / "rain.wav")
    assert rate == 16000 and samples.shape == (1, 8000)
    alone = await run(backend, requests[1], audioldm2)
    np.testing.assert_allclose(together[1].audios[0].samples, alone.audios[0].samples, atol=1e-4)
