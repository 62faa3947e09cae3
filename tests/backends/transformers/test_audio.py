"""The transformers backend on tiny random-weight MusicGen and VITS models, loaded by path, offline.

The tiny MusicGen makes 8 kHz mono at 25 codec frames a second (320 samples a frame); the tiny VITS
16 kHz mono. Both run in tens of milliseconds a call on a CPU once loaded, so one backend serves the
whole module and every test makes real audio.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mediagen as mg

pytest.importorskip("torch")
pytest.importorskip("transformers")
sf = pytest.importorskip("soundfile")

from mediagen_transformers import TransformersBackend  # noqa: E402

TinyModel = Callable[[str], Path]

MUSIC_RATE = 8000
FRAME = 320  # samples per MusicGen codec frame in the tiny model
SPEECH_RATE = 16000


@pytest.fixture(scope="module")
def backend() -> Any:
    """One backend for the module: models load once, as they would in an application."""
    b = TransformersBackend(device="cpu", batch_window_s=0.2)
    yield b
    asyncio.run(b.aclose())


@pytest.fixture(scope="module")
def musicgen(tiny_model: TinyModel) -> str:
    return str(tiny_model("musicgen"))


@pytest.fixture(scope="module")
def musicgen_stereo(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny MusicGen made stereo: 8 codebooks, left and right interleaved, decoded by the same codec."""
    import torch
    from transformers import GenerationConfig, MusicgenConfig, MusicgenDecoderConfig, MusicgenForConditionalGeneration

    mono = tiny_model("musicgen")
    out = tmp_path_factory.mktemp("musicgen-stereo") / "model"
    shutil.copytree(mono, out)
    config = MusicgenConfig.from_pretrained(mono)
    decoder = {k: v for k, v in config.decoder.to_dict().items() if k not in ("model_type", "transformers_version")}
    config.decoder = MusicgenDecoderConfig(**{**decoder, "audio_channels": 2, "num_codebooks": 8})
    torch.manual_seed(0)
    model = MusicgenForConditionalGeneration(config).eval()
    with torch.no_grad():
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.normal_()
    model.generation_config = GenerationConfig.from_pretrained(mono)
    model.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def vits(tiny_model: TinyModel) -> str:
    return str(tiny_model("vits"))


@pytest.fixture(scope="module")
def vits_speakers(tiny_model: TinyModel) -> str:
    return str(tiny_model("vits-speakers"))


async def run(backend: Any, request: mg.AudioRequest, model: str, **ctx: Any) -> mg.Result:
    return await backend.run(request, model, mg.RunContext(**ctx))  # type: ignore[no-any-return]


def music(**fields: Any) -> mg.AudioRequest:
    return mg.AudioRequest(**{"prompt": "calm piano", "kind": "music", "duration_s": 1.2, "seed": 1, **fields})


def speech(**fields: Any) -> mg.AudioRequest:
    return mg.AudioRequest(**{"prompt": "hello there, how are you", "kind": "speech", "seed": 1, **fields})


def decode_wav(artifact: mg.Artifact, path: Path) -> tuple[np.ndarray[Any, Any], int]:
    """Save as WAV, then read the file back with soundfile: what any player would see."""
    saved = artifact.save(path)
    samples, rate = sf.read(io.BytesIO(saved.read_bytes()), dtype="float32", always_2d=True)
    return samples.T, int(rate)


def config_only_copy(model_dir: str, target: Path, **changes: Any) -> str:
    """A model directory with the configuration and no weights: anything that loads it fails."""
    target.mkdir()
    for name in ("config.json", "generation_config.json"):
        if (Path(model_dir) / name).is_file():
            shutil.copy(Path(model_dir) / name, target / name)
    if changes:
        config = json.loads((target / "config.json").read_text())
        config.update(changes)
        (target / "config.json").write_text(json.dumps(config))
    return str(target)


# -- music: MusicGen ---------------------------------------------------------------------------


async def test_music_is_a_wav_of_the_requested_duration_and_rate(backend: Any, musicgen: str, tmp_path: Path) -> None:
    res = await run(backend, music(duration_s=1.2), musicgen)
    assert res.provider == "transformers" and res.seeds == [1]
    samples, rate = decode_wav(res.artifacts[0], tmp_path / "piano.wav")
    assert rate == MUSIC_RATE and samples.shape[0] == 1
    assert abs(samples.shape[1] - round(1.2 * MUSIC_RATE)) <= FRAME
    assert np.abs(samples).max() > 0  # sound, not silence
    meta = res.artifacts[0].metadata
    assert meta["seed"] == 1 and meta["sample_rate"] == MUSIC_RATE
    assert isinstance(meta["loudness_dbfs"], float) and meta["loudness_dbfs"] < 0
    # 1.2 s at 25 frames/s is 30 frames; the 4 codebooks' delay adds 3 decoder steps.
    assert res.raw["settings"]["max_new_tokens"] == 33
    assert res.usage.audio_s == pytest.approx(1.2)
    assert res.timings.run_s is not None and res.timings.load_s is not None


async def test_stereo_music(backend: Any, musicgen_stereo: str, tmp_path: Path) -> None:
    res = await run(backend, music(duration_s=0.6), musicgen_stereo)
    samples, rate = decode_wav(res.artifacts[0], tmp_path / "stereo.wav")
    assert rate == MUSIC_RATE and samples.shape == (2, round(0.6 * MUSIC_RATE))
    # 15 frames; each channel's 4 codebooks are delayed as in mono.
    assert res.raw["settings"]["max_new_tokens"] == 18
    assert not np.allclose(samples[0], samples[1])


async def test_music_resampled_on_request(backend: Any, musicgen: str, tmp_path: Path) -> None:
    res = await run(backend, music(duration_s=0.5, sample_rate=22050), musicgen)
    samples, rate = decode_wav(res.artifacts[0], tmp_path / "resampled.wav")
    assert rate == 22050
    assert abs(samples.shape[1] - round(0.5 * 22050)) <= 1


async def test_music_seeds_reproduce_and_differ(backend: Any, musicgen: str) -> None:
    first = await run(backend, music(seed=7, n=2), musicgen)
    again = await run(backend, music(seed=7, n=2), musicgen)
    assert first.seeds == [7, 8]
    for a, b in zip(first.audios, again.audios, strict=True):
        np.testing.assert_array_equal(a.samples, b.samples)
    assert not np.allclose(first.audios[0].samples, first.audios[1].samples)
    # Output i of a request with n > 1 is the output of seed + i alone.
    alone = await run(backend, music(seed=8), musicgen)
    np.testing.assert_allclose(alone.audios[0].samples, first.audios[1].samples, atol=1e-5)


async def test_concurrent_music_shares_one_generate_call_and_matches_alone(backend: Any, musicgen: str) -> None:
    requests = [music(prompt="drums", seed=1), music(prompt="a slow sad violin melody", seed=2), music(seed=3)]
    together = await asyncio.gather(*(run(backend, r, musicgen) for r in requests))
    assert [r.raw["batch_requests"] for r in together] == [3, 3, 3]
    for request, batched in zip(requests, together, strict=True):
        alone = await run(backend, request, musicgen)
        assert alone.raw["batch_requests"] == 1
        np.testing.assert_allclose(batched.audios[0].samples, alone.audios[0].samples, atol=1e-5)


async def test_music_reports_progress_per_decoder_step(backend: Any, musicgen: str) -> None:
    events: list[mg.Event] = []
    await run(backend, music(duration_s=0.4), musicgen, emit=events.append)
    steps = [e for e in events if isinstance(e, mg.Progress)]
    assert steps and steps[-1].step == steps[-1].total == 13  # 10 frames + 3 delay steps
    assert [e.step for e in steps] == sorted(e.step for e in steps)


async def test_cancelling_music_stops_generation(backend: Any, musicgen: str) -> None:
    events: list[mg.Event] = []
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    def sink(event: mg.Event) -> None:
        events.append(event)
        if isinstance(event, mg.Progress):
            loop.call_soon_threadsafe(started.set)

    ctx = mg.RunContext(emit=sink)
    # 18 s is 453 decoder steps: long enough to cancel part-way.
    task = asyncio.ensure_future(backend.run(music(duration_s=18.0), musicgen, ctx))
    await asyncio.wait_for(started.wait(), 30)
    ctx.cancelled.set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    last = [e for e in events if isinstance(e, mg.Progress)][-1]
    assert last.step < last.total
    # The device is free again for the next request.
    res = await asyncio.wait_for(run(backend, music(duration_s=0.2), musicgen), 30)
    assert len(res.artifacts) == 1


async def test_music_normalize_option_sets_the_peak(backend: Any, musicgen: str) -> None:
    res = await run(backend, music(duration_s=0.4, options={"normalize": 0.5}), musicgen)
    assert np.abs(res.audios[0].samples).max() == pytest.approx(0.5, abs=1e-3)


async def test_music_warns_about_what_it_cannot_honour(backend: Any, musicgen: str) -> None:
    ctx = mg.RunContext()
    await backend.run(
        music(duration_s=0.2, steps=10, negative_prompt="drums", options={"speaking_rate": 2.0}), musicgen, ctx
    )
    assert {w.feature for w in ctx.warnings} == {"steps", "negative_prompt", "options.speaking_rate"}


# -- speech: VITS ------------------------------------------------------------------------------


async def test_speech_is_a_wav_at_the_model_rate(backend: Any, vits: str, tmp_path: Path) -> None:
    res = await run(backend, speech(), vits)
    samples, rate = decode_wav(res.artifacts[0], tmp_path / "hello.wav")
    assert rate == SPEECH_RATE and samples.shape[0] == 1 and samples.shape[1] > 0
    assert res.artifacts[0].metadata["loudness_dbfs"] is not None


async def test_speech_fits_the_requested_duration(backend: Any, vits: str, tmp_path: Path) -> None:
    natural = (await run(backend, speech(), vits)).audios[0].duration_s
    longer = await run(backend, speech(duration_s=round(natural + 0.5, 2)), vits)
    samples, _ = decode_wav(longer.artifacts[0], tmp_path / "padded.wav")
    assert samples.shape[1] == round(round(natural + 0.5, 2) * SPEECH_RATE)
    assert not longer.warnings
    # Shorter than the text needs: spoken faster (and said so), never cut mid-word.
    ctx = mg.RunContext()
    shorter = await backend.run(speech(duration_s=round(natural / 2, 2)), vits, ctx)
    assert shorter.audios[0].samples.shape[1] == round(round(natural / 2, 2) * SPEECH_RATE)
    assert [w.feature for w in ctx.warnings] == ["duration_s"] and ctx.warnings[0].type == "compatibility"


async def test_speech_seeds_reproduce(backend: Any, vits: str) -> None:
    first = await run(backend, speech(seed=3, n=2), vits)
    again = await run(backend, speech(seed=3, n=2), vits)
    assert first.seeds == [3, 4]
    for a, b in zip(first.audios, again.audios, strict=True):
        np.testing.assert_array_equal(a.samples, b.samples)


async def test_voice_picks_a_speaker(backend: Any, vits_speakers: str) -> None:
    zero = await run(backend, speech(voice="0"), vits_speakers)
    one = await run(backend, speech(voice="1"), vits_speakers)
    by_option = await run(backend, speech(options={"speaker_id": 1}), vits_speakers)
    assert not zero.warnings and not one.warnings
    assert zero.raw["settings"]["speaker_id"] == 0 and one.raw["settings"]["speaker_id"] == 1
    assert zero.audios[0].samples.shape != one.audios[0].samples.shape or not np.allclose(
        zero.audios[0].samples, one.audios[0].samples
    )
    np.testing.assert_array_equal(one.audios[0].samples, by_option.audios[0].samples)


async def test_voice_names_from_the_config(backend: Any, vits_speakers: str, tmp_path: Path) -> None:
    named = tmp_path / "named"
    shutil.copytree(vits_speakers, named)
    config = json.loads((named / "config.json").read_text())
    config["id2speaker"] = {"0": "alice", "1": "bob"}
    (named / "config.json").write_text(json.dumps(config))
    bob = await run(backend, speech(voice="Bob"), str(named))
    assert bob.raw["settings"]["speaker_id"] == 1


async def test_a_voice_the_model_lacks_warns_or_with_strict_fails(backend: Any, vits_speakers: str, vits: str) -> None:
    ctx = mg.RunContext()
    res = await backend.run(speech(voice="nobody"), vits_speakers, ctx)
    assert res.raw["settings"]["speaker_id"] == 0
    assert [w.feature for w in ctx.warnings] == ["voice"] and "0-1" in ctx.warnings[0].message
    single = mg.RunContext()
    await backend.run(speech(voice="1"), vits, single)
    assert [w.feature for w in single.warnings] == ["voice"]
    with pytest.raises(mg.UnsupportedRequestError, match="no voice 'nobody'"):
        await run(backend, speech(voice="nobody"), vits_speakers, strict=True)


# -- bad input fails clearly, before any model is loaded ----------------------------------------


async def test_bad_requests_fail_before_loading(vits_speakers: str, musicgen: str, tmp_path: Path) -> None:
    # Directories with the configuration only: loading their weights would fail differently.
    speakers = config_only_copy(vits_speakers, tmp_path / "speakers")
    song = config_only_copy(musicgen, tmp_path / "song")
    async with mg.Client(config=mg.Config(), providers={"transformers": {"device": "cpu"}}) as client:
        with pytest.raises(mg.InvalidRequestError, match="duration_s"):
            await client.audio("calm piano", kind="music", duration_s=-1, model=f"transformers:{song}")
        with pytest.raises(mg.InvalidRequestError, match="speech needs text"):
            await client.audio("  ", kind="speech", model=f"transformers:{speakers}")
        with pytest.raises(mg.UnsupportedRequestError, match="no voice 'nobody'"):
            await client.audio("hi", kind="speech", voice="nobody", strict=True, model=f"transformers:{speakers}")
        with pytest.raises(mg.InvalidRequestError, match="top_kk"):
            await client.audio("calm piano", kind="music", options={"top_kk": 3}, model=f"transformers:{song}")
        with pytest.raises(mg.UnsupportedRequestError, match="at most"):
            await client.audio("calm piano", kind="music", duration_s=500, model=f"transformers:{song}")
        with pytest.raises(mg.UnsupportedRequestError, match="text-to-sound") as err:
            await client.audio("rain", kind="sound", model=f"transformers:{song}")
        assert "diffusers" in err.value.supported_by
        backend = await client.backend("transformers")
        assert backend.describe()["loaded"] == []


async def test_models_that_are_not_served_are_named(tmp_path: Path) -> None:
    bark = tmp_path / "bark"
    bark.mkdir()
    (bark / "config.json").write_text(json.dumps({"model_type": "bark"}))
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    backend = TransformersBackend(device="cpu")
    with pytest.raises(mg.UnsupportedRequestError, match=r"bark model .*BarkModel"):
        await backend.capabilities(str(bark))
    with pytest.raises(mg.UnsupportedRequestError, match="not a text-to-audio model"):
        await backend.capabilities(str(bert))
    with pytest.raises(mg.ModelNotFoundError, match="no model at"):
        await backend.capabilities(str(tmp_path / "missing"))
    await backend.aclose()


async def test_through_the_client(musicgen: str, vits: str, tmp_path: Path) -> None:
    async with mg.Client(config=mg.Config(), providers={"transformers": {"device": "cpu"}}) as client:
        res = await client.audio("lofi beat", kind="music", duration_s=0.5, seed=2, model=f"transformers:{musicgen}")
        said = await client.audio("good morning", kind="speech", seed=2, model=f"transformers:{vits}")
    assert res.audios[0].duration_s == pytest.approx(0.5) and res.usage.audio_s == pytest.approx(0.5)
    assert said.audios[0].sample_rate == SPEECH_RATE
    assert res.artifacts[0].save(tmp_path / "beat.flac").stat().st_size > 0


FIRST_USE = """
import asyncio, sys
import mediagen as mg

async def main():
    async with mg.Client() as client:
        await asyncio.gather(
            client.audio("piano", kind="music", duration_s=0.3, seed=1, model="transformers:" + sys.argv[1]),
            client.audio("hello", kind="speech", model="transformers:" + sys.argv[2]),
            client.image("fox", width=32, height=32, steps=1, seed=1, model="diffusers:" + sys.argv[3]),
        )

asyncio.run(main())
"""


@pytest.mark.slow
def test_first_use_from_several_threads_in_a_fresh_process(
    musicgen: str, vits: str, tiny_model: TinyModel, tmp_path: Path
) -> None:
    # The libraries' lazy modules race when two threads import from them for the first time
    # ("cannot import name 'AutoConfig'"); only a fresh process shows it, and not every time.
    import subprocess
    import sys

    script = tmp_path / "first_use.py"
    script.write_text(FIRST_USE)
    sd = str(tiny_model("sd"))
    for _ in range(3):
        proc = subprocess.run(
            [sys.executable, str(script), musicgen, vits, sd], capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-2000:]


def test_bad_settings_name_the_known_ones() -> None:
    with pytest.raises(
        ValueError, match=r"bad \[providers.transformers\] settings: max_batchh.*known settings: device"
    ):
        TransformersBackend(max_batchh=4)
