"""Speech: a streamed WAV (0xFFFFFFFF sizes) comes back with a true header, so provenance stays out of the samples."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest

import mediagen as mg
from mediagen.backend import RunContext
from mediagen_openai import OpenAIBackend
from mediagen_openai.outputs import fix_wav
from mediagen_testkit.openai_server import OpenAIServer, streamed_wav


async def test_speech_round_trips_into_decoded_samples(backend: OpenAIBackend, server: OpenAIServer) -> None:
    text = "Hello from the loopback server."
    result = await backend.run(
        mg.AudioRequest(prompt=text, kind="speech", voice="coral", options={"instructions": "cheerful", "speed": 1.5}),
        "gpt-4o-mini-tts",
        RunContext(),
    )

    (audio,) = result.audios
    expected = server.speech_samples(text, "coral", 1.5)
    assert audio.sample_rate == 24_000 and audio.channels == 1
    assert audio.samples.shape[1] == expected.size
    assert np.allclose(audio.samples[0], expected, atol=1 / 16000)
    (sent,) = server.stats.bodies_of("audio.speech")
    assert sent == {
        "model": "gpt-4o-mini-tts",
        "input": text,
        "voice": "coral",
        "response_format": "wav",
        "speed": 1.5,
        "instructions": "cheerful",
    }
    assert result.usage.audio_s == pytest.approx(expected.size / 24_000)
    assert any(w.type == "deprecated" and "2027-01-06" in w.message for w in result.warnings)


async def test_the_saved_wav_keeps_provenance_out_of_the_samples(
    backend: OpenAIBackend, server: OpenAIServer, tmp_path: Path
) -> None:
    async with mg.Client(backends={"openai": backend}) as client:
        result = await client.audio("Provenance goes after the data.", kind="speech", model="openai:gpt-4o-mini-tts")
    path = result.audios[0].save(tmp_path / "speech.wav")

    data = path.read_bytes()
    assert struct.unpack("<I", data[4:8])[0] == len(data) - 8  # a true RIFF size, not 0xFFFFFFFF
    expected = server.speech_samples("Provenance goes after the data.", "alloy")
    with wave.open(str(path)) as reader:
        assert reader.getnframes() == expected.size  # the LIST chunk after the data is not read as samples
    provenance = mg.read_provenance(path)
    assert provenance is not None and (provenance["provider"], provenance["model"]) == ("openai", "gpt-4o-mini-tts")


async def test_pcm_comes_back_as_wav_and_tts1_drops_instructions_with_a_warning(
    backend: OpenAIBackend, server: OpenAIServer
) -> None:
    request = mg.AudioRequest(
        prompt="raw", kind="speech", voice="onyx", options={"format": "pcm", "instructions": "calm"}
    )
    result = await backend.run(request, "tts-1", RunContext())
    assert result.audios[0].media_type == "audio/wav"
    assert result.audios[0].samples.shape[1] == server.speech_samples("raw", "onyx").size
    assert "instructions" not in server.stats.bodies_of("audio.speech")[0]
    assert any(w.feature == "options.instructions" for w in result.warnings)


async def test_text_longer_than_openai_speaks_is_refused_before_sending(
    backend: OpenAIBackend, server: OpenAIServer
) -> None:
    with pytest.raises(mg.InvalidRequestError, match="4096"):
        await backend.run(mg.AudioRequest(prompt="a" * 5000, kind="speech"), "gpt-4o-mini-tts", RunContext())
    assert server.stats["requests"] == 0


def test_fix_wav_rewrites_streamed_sizes_and_leaves_true_ones_alone() -> None:
    samples = np.linspace(-0.5, 0.5, 101, dtype=np.float32)
    streamed = streamed_wav(samples)
    assert streamed[4:8] == b"\xff\xff\xff\xff"
    fixed = fix_wav(streamed)
    assert struct.unpack("<I", fixed[4:8])[0] == len(fixed) - 8
    assert struct.unpack("<I", fixed[40:44])[0] == 202
    assert fix_wav(fixed) == fixed
    assert fix_wav(b"ID3 not a wav") == b"ID3 not a wav"
