"""The official `openai` client against `mediagen serve`."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mediagen.artifacts import Audio
from mediagen.serve import ServedModel
from mediagen_testkit.serve_server import TEST_TOKEN, ServeServer, fake_model

openai = pytest.importorskip("openai")


def test_images_generate_returns_decodable_b64_json(
    start_server: Callable[..., ServeServer], tiny_model: Callable[[str], Path]
) -> None:
    pytest.importorskip("diffusers")
    server = start_server(models=[ServedModel(owner="acme", name="tiny-sd", model=f"diffusers:{tiny_model('sd')}")])
    client = openai.OpenAI(api_key=TEST_TOKEN, base_url=server.url + "/v1")

    result = client.images.generate(
        model="acme/tiny-sd",
        prompt="a red fox",
        size="64x64",
        n=2,
        response_format="b64_json",
        extra_body={"seed": 3, "steps": 2},
    )

    assert len(result.data) == 2
    images = [np.asarray(Image.open(io.BytesIO(base64.b64decode(d.b64_json or "")))) for d in result.data]
    assert images[0].shape[:2] == (64, 64)
    assert not np.array_equal(images[0], images[1])


def test_images_url_edits_and_speech(start_server: Callable[..., ServeServer]) -> None:
    server = start_server(models=[fake_model("fox", "image"), fake_model("voice", "audio")])
    client = openai.OpenAI(api_key=TEST_TOKEN, base_url=server.url + "/v1")

    by_url = client.images.generate(model="acme/fox", prompt="a fox", size="32x32")
    assert by_url.data[0].url and by_url.data[0].url.startswith(server.url + "/outputs/")

    start = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(start, format="PNG")
    edited = client.images.edit(
        model="acme/fox",
        image=("start.png", start.getvalue(), "image/png"),
        prompt="make it blue",
        response_format="b64_json",
    )
    assert Image.open(io.BytesIO(base64.b64decode(edited.data[0].b64_json or ""))).size[0] > 0

    speech = client.audio.speech.create(model="acme/voice", input="hello there", voice="alloy", response_format="wav")
    sound = Audio(speech.read())
    assert sound.duration_s > 0 and sound.sample_rate > 0


def test_openai_errors_have_openais_shape(start_server: Callable[..., ServeServer]) -> None:
    server = start_server(models=[fake_model("fox", "image")])

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(api_key="wrong-token-000000000000", base_url=server.url + "/v1").images.generate(
            model="acme/fox", prompt="x"
        )
    client = openai.OpenAI(api_key=TEST_TOKEN, base_url=server.url + "/v1")
    with pytest.raises(openai.NotFoundError):
        client.images.generate(model="acme/nope", prompt="x")
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model="acme/fox", prompt="x", size="33x33")
    assert "multiple of 8" in str(caught.value)
