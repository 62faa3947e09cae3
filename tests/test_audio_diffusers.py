"""Sound and music through the diffusers backend: tiny Stable Audio and AudioLDM2 pipelines, by path, offline.

The tiny Stable Audio makes stereo at 4 kHz, at most 2.048 s; the tiny AudioLDM2 (built here: no
AudioLDM2 in `mediagen.testing.tiny`) mono at 16 kHz. Neither pipeline has `callback_on_step_end`,
so these tests also check that progress and cancellation reach them.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mediagen as mg
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("torchsde")
sf = pytest.importorskip("soundfile")

from mediagen.backends.diffusers import DiffusersBackend  # noqa: E402

# torchsde's Brownian interval trips on float rounding of the tiny scheduler's sigmas; GPT-2 on an old argument.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Should have:UserWarning", "ignore:`past_key_values` is deprecated:FutureWarning"
)

TinyModel = Callable[[str], Path]


def build_audioldm2(out: Path) -> Path:
    """A tiny AudioLDM2 pipeline (16 kHz mono; the vocoder's hop of 64 keeps the spectrogram short)."""
    from diffusers import (
        AudioLDM2Pipeline,
        AudioLDM2ProjectionModel,
        AudioLDM2UNet2DConditionModel,
        AutoencoderKL,
        DDIMScheduler,
    )
    from mediagen.testing.tiny import _t5_tokenizer
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapTextConfig,
        GPT2Config,
        GPT2LMHeadModel,
        RobertaTokenizer,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
        T5Config,
        T5EncoderModel,
    )

    # A byte-level vocabulary needs no merges: any text encodes character by character.
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    for char in sorted(ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    tokenizer = RobertaTokenizer(vocab=vocab, merges=[], model_max_length=77)
    tokenizer_2 = _t5_tokenizer(model_max_length=77)
    torch.manual_seed(0)
    unet = AudioLDM2UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=([None, 16, 32], [None, 16, 32]),
        norm_num_groups=4,
        attention_head_dim=2,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=1,
        out_channels=1,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=4,
    )
    torch.manual_seed(0)
    text = ClapTextConfig(
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
        hidden_size=16,
        intermediate_size=32,
        num_attention_heads=2,
        num_hidden_layers=2,
        vocab_size=len(vocab),
        projection_dim=16,
    )
    audio = ClapAudioConfig(
        spec_size=64,
        window_size=4,
        num_mel_bins=64,
        intermediate_size=32,
        depths=[2, 2],
        num_attention_heads=[2, 2],
        num_hidden_layers=2,
        hidden_size=32,
        patch_embeds_hidden_size=16,
        projection_dim=16,
        patch_size=2,
        patch_stride=2,
        patch_embed_input_channels=4,
    )
    text_encoder = ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=16))
    torch.manual_seed(0)
    text_encoder_2 = T5EncoderModel(
        T5Config(vocab_size=len(tokenizer_2), d_model=32, d_ff=32, d_kv=8, num_heads=2, num_layers=2, pad_token_id=0)
    )
    torch.manual_seed(0)
    language_model = GPT2LMHeadModel(GPT2Config(n_embd=16, n_head=2, n_layer=2, vocab_size=64, n_positions=99))
    language_model.config.max_new_tokens = 8
    torch.manual_seed(0)
    projection_model = AudioLDM2ProjectionModel(text_encoder_dim=16, text_encoder_1_dim=32, langauge_model_dim=16)
    vocoder = SpeechT5HifiGan(
        SpeechT5HifiGanConfig(
            model_in_dim=8,
            sampling_rate=16000,
            upsample_initial_channel=16,
            upsample_rates=[8, 8],
            upsample_kernel_sizes=[16, 16],
            resblock_kernel_sizes=[3, 7],
            resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]],
            normalize_before=False,
        )
    )
    pipe = AudioLDM2Pipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        projection_model=projection_model,
        language_model=language_model,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        feature_extractor=ClapFeatureExtractor(),
        unet=unet,
        scheduler=DDIMScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False
        ),
        vocoder=vocoder,
    )
    pipe.save_pretrained(out)
    return out


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
def audioldm2(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_audioldm2(tmp_path_factory.mktemp("audioldm2") / "pipe"))


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
