"""Imagen 4 (over `:predict`) and Gemini image models (through google-genai) round-trip into decoded images."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

import mediagen as mg
from mediagen.backend import RunContext
from mediagen_google import GoogleBackend
from mediagen_testkit import media_fixtures as media
from mediagen_testkit.fake_http import Faults
from mediagen_testkit.google_server import GoogleServer


def expected(prompt: str, index: int, size: tuple[int, int], fmt: str = "png") -> np.ndarray:
    data = media.image_bytes(size[0] // 8, size[1] // 8, seed=GoogleServer.seed_for(prompt, index), fmt=fmt)  # type: ignore[arg-type]
    return mg.Image(data).to_numpy()


async def test_imagen_round_trips_with_n_and_aspect_ratio(backend: GoogleBackend, server: GoogleServer) -> None:
    async with mg.Client(backends={"google": backend}) as client:
        result = await client.generate(
            mg.ImageRequest(prompt="a red fox", n=3, aspect_ratio="16:9", options={"person_generation": "allow_adult"}),
            model="google:imagen-4.0-generate-001",
        )

    assert len(result.images) == 3
    for i, image in enumerate(result.images):
        assert np.array_equal(image.to_numpy(), expected("a red fox", i, (1408, 768)))
    (sent,) = server.stats.bodies_of("models.predict")
    assert sent == {
        "instances": [{"prompt": "a red fox"}],
        "parameters": {"sampleCount": 3, "aspectRatio": "16:9", "personGeneration": "ALLOW_ADULT"},
    }
    assert result.usage.images == 3 and server.stats["billed"] == 1


async def test_imagen_ultra_takes_one_image_a_call_and_the_client_splits(
    backend: GoogleBackend, server: GoogleServer
) -> None:
    async with mg.Client(backends={"google": backend}) as client:
        result = await client.generate(mg.ImageRequest(prompt="fox", n=2), model="google:imagen-4.0-ultra-generate-001")
    assert len(result.images) == 2
    assert [b["parameters"]["sampleCount"] for b in server.stats.bodies_of("models.predict")] == [1, 1]


async def test_imagen_warns_what_the_gemini_api_does_not_take(backend: GoogleBackend, server: GoogleServer) -> None:
    request = mg.ImageRequest(
        prompt="fox", seed=4, negative_prompt="blur", width=2048, height=1152, output_format="jpeg"
    )
    result = await backend.run(request, "imagen-4.0-generate-001", RunContext())
    assert {w.feature for w in result.warnings if w.type == "unsupported"} == {"seed", "negative_prompt"}
    sent = server.stats.bodies_of("models.predict")[0]["parameters"]
    assert sent == {
        "sampleCount": 1,
        "aspectRatio": "16:9",
        "imageSize": "2K",
        "outputOptions": {"mimeType": "image/jpeg"},
    }
    assert result.images[0].media_type == "image/jpeg" and result.images[0].size == (2816 // 8, 1536 // 8)


async def test_imagen_refuses_edits_before_sending(backend: GoogleBackend, server: GoogleServer) -> None:
    photo = mg.Image(media.png_bytes(32, 32))
    with pytest.raises(mg.UnsupportedRequestError, match=r"gemini-2\.5-flash-image"):
        await backend.run(mg.ImageRequest(prompt="x", image=photo), "imagen-4.0-generate-001", RunContext())
    with pytest.raises(mg.UnsupportedRequestError, match="reference images"):
        await backend.run(mg.ImageRequest(prompt="x", images=[photo]), "imagen-4.0-fast-generate-001", RunContext())
    assert server.stats["requests"] == 0


async def test_gemini_image_generates_through_the_official_client(backend: GoogleBackend, server: GoogleServer) -> None:
    events: list[mg.Event] = []
    ctx = RunContext(emit=events.append)
    result = await backend.run(
        mg.ImageRequest(prompt="a lighthouse", aspect_ratio="3:2", seed=11), "gemini-2.5-flash-image", ctx
    )

    assert np.array_equal(result.images[0].to_numpy(), expected("a lighthouse", 0, (1248, 832)))
    (sent,) = server.stats.bodies_of("models.generateContent")
    assert sent["contents"] == [{"role": "user", "parts": [{"text": "a lighthouse"}]}]
    assert sent["generationConfig"]["responseModalities"] == ["TEXT", "IMAGE"]
    assert sent["generationConfig"]["imageConfig"] == {"aspectRatio": "3:2"}
    assert sent["generationConfig"]["seed"] == 11
    assert result.seeds == [11]
    assert any(isinstance(e, mg.Log) and "Here is" in e.message for e in events)  # the model's text part
    assert "'data':" not in str(result.raw.get("candidates"))  # the image bytes live in the artifact only


async def test_gemini_image_edits_with_the_input_images_inline(backend: GoogleBackend, server: GoogleServer) -> None:
    photo = mg.Image(media.image_bytes(40, 30, seed=1, fmt="jpeg"))
    style = mg.Image(media.png_bytes(24, 24, seed=2))
    await backend.run(
        mg.ImageRequest(prompt="paint it in this style", image=photo, images=[style]),
        "gemini-2.5-flash-image",
        RunContext(),
    )

    (received,) = server.received_images
    assert received == [("image/jpeg", photo.read()), ("image/png", style.read())]


async def test_gemini_image_refuses_a_mask(backend: GoogleBackend, server: GoogleServer) -> None:
    photo = mg.Image(media.png_bytes(32, 32))
    with pytest.raises(mg.UnsupportedRequestError, match="describe the change"):
        await backend.run(mg.ImageRequest(prompt="x", image=photo, mask=photo), "gemini-2.5-flash-image", RunContext())
    assert server.stats["requests"] == 0


async def test_twelve_concurrent_requests_under_faults_each_complete_once(
    backend: GoogleBackend, server: GoogleServer
) -> None:
    server.faults = Faults(rate_limit_every=3, error_every=5, retry_after_s=0.05)
    async with mg.Client(backends={"google": backend}) as client:
        imagen = [
            client.generate(mg.ImageRequest(prompt=f"fox {i}"), model="google:imagen-4.0-fast-generate-001")
            for i in range(6)
        ]
        gemini = [
            client.generate(mg.ImageRequest(prompt=f"owl {i}"), model="google:gemini-2.5-flash-image") for i in range(6)
        ]
        results = await asyncio.gather(*imagen, *gemini)

    for i, result in enumerate(results):
        prompt = f"fox {i}" if i < 6 else f"owl {i - 6}"
        assert np.array_equal(result.images[0].to_numpy(), expected(prompt, 0, (1024, 1024)))
    assert server.stats["faults"] > 0
    assert server.stats["billed"] == 12  # none lost, none run twice


async def test_the_official_client_speaks_to_the_fake(server: GoogleServer) -> None:
    from google import genai
    from google.genai import types

    client = genai.Client(
        api_key=server.api_key, http_options=types.HttpOptions(base_url=server.url, api_version="v1beta")
    )
    response = await client.aio.models.generate_content(
        model="gemini-2.5-flash-image",
        contents="a fox",
        config=types.GenerateContentConfig(response_modalities=["IMAGE"]),
    )
    parts = response.candidates[0].content.parts  # type: ignore[index, union-attr]
    assert any(p.inline_data is not None and p.inline_data.data for p in parts)  # type: ignore[union-attr]


async def test_a_shape_the_model_makes_is_sent_without_a_warning(backend: GoogleBackend, server: GoogleServer) -> None:
    result = await backend.run(
        mg.ImageRequest(prompt="x", width=1024, height=1024), "gemini-2.5-flash-image", RunContext()
    )
    assert not [w for w in result.warnings if w.feature == "aspect_ratio"]
    result = await backend.run(
        mg.ImageRequest(prompt="x", width=1000, height=600), "gemini-2.5-flash-image", RunContext()
    )
    (warning,) = [w for w in result.warnings if w.feature == "aspect_ratio"]
    assert "1000x600 became 16:9" in warning.message
