"""GPT image models: generations and edits round-trip through the loopback server into decoded images."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage

import mediagen as mg
from mediagen.backend import RunContext
from mediagen_openai import OpenAIBackend
from mediagen_testkit import media_fixtures as media
from mediagen_testkit.openai_server import OpenAIServer


def centre_colour(image: mg.Image) -> tuple[int, int, int]:
    """The colour in a corner of the fake's pictures (the gradient band runs along the diagonal)."""
    pixels = np.asarray(image.to_pil().convert("RGB"))
    return tuple(int(v) for v in pixels[0, -1])  # type: ignore[return-value]


def expected_corner(prompt: str, index: int, size: tuple[int, int]) -> tuple[int, int, int]:
    png = media.image_bytes(size[0], size[1], seed=OpenAIServer.seed_for(prompt, index), fmt="png")
    pixels = np.asarray(PILImage.open(io.BytesIO(png)).convert("RGB"))
    return tuple(int(v) for v in pixels[0, -1])  # type: ignore[return-value]


async def test_generate_round_trips_into_decoded_pngs(backend: OpenAIBackend, server: OpenAIServer) -> None:
    async with mg.Client(backends={"openai": backend}) as client:
        result = await client.generate(
            mg.ImageRequest(prompt="a red fox", width=512, height=256, n=3, options={"quality": "low"}),
            model="openai:gpt-image-2",
        )

    assert [a.size for a in result.images] == [(512, 256)] * 3
    for i, image in enumerate(result.images):
        assert image.media_type == "image/png"
        assert centre_colour(image) == expected_corner("a red fox", i, (512, 256))
    sent = server.stats.bodies_of("images.generate")
    assert sent == [{"model": "gpt-image-2", "prompt": "a red fox", "n": 3, "size": "512x256", "quality": "low"}]
    assert server.stats["billed"] == 1
    assert result.usage.images == 3 and result.usage.megapixels == pytest.approx(3 * 512 * 256 / 1e6)
    assert "b64_json" not in str(result.raw) and result.raw["usage"]["output_tokens"] > 0


async def test_sizes_snap_to_what_each_model_takes_with_a_warning(backend: OpenAIBackend, server: OpenAIServer) -> None:
    # gpt-image-2 takes any size on a 16-pixel grid; 1000x600 is not on it.
    ctx = RunContext(provider="openai", model="gpt-image-2")
    result = await backend.run(mg.ImageRequest(prompt="fox", width=1000, height=600), "gpt-image-2", ctx)
    assert result.images[0].size == (1008, 608)
    assert any(w.type == "compatibility" and w.feature == "size" for w in result.warnings)

    # gpt-image-1.5 takes three sizes: 16:9 becomes the nearest, 1536x1024, and says so.
    ctx = RunContext(provider="openai", model="gpt-image-1.5")
    result = await backend.run(mg.ImageRequest(prompt="fox", aspect_ratio="16:9"), "gpt-image-1.5", ctx)
    assert result.images[0].size == (1536, 1024)
    (warning,) = [w for w in result.warnings if w.feature == "size"]
    assert "1536x1024" in warning.message

    # Nothing asked: nothing sent, the model's `auto`.
    await backend.run(mg.ImageRequest(prompt="fox"), "gpt-image-2", RunContext())
    assert "size" not in server.stats.bodies_of("images.generate")[-1]


async def test_strict_mode_turns_a_changed_size_into_an_error(backend: OpenAIBackend, server: OpenAIServer) -> None:
    ctx = RunContext(strict=True, provider="openai", model="gpt-image-1.5")
    with pytest.raises(mg.UnsupportedRequestError, match="size"):
        await backend.run(mg.ImageRequest(prompt="fox", aspect_ratio="16:9"), "gpt-image-1.5", ctx)
    assert server.stats["requests"] == 0


async def test_fields_openai_lacks_are_warned_not_dropped(backend: OpenAIBackend) -> None:
    request = mg.ImageRequest(
        prompt="fox", negative_prompt="blur", seed=3, steps=20, guidance=5.0, width=256, height=256
    )
    result = await backend.run(request, "gpt-image-2", RunContext())
    assert {w.feature for w in result.warnings if w.type == "unsupported"} == {
        "negative_prompt",
        "seed",
        "steps",
        "guidance",
    }
    assert result.seeds == [None]


def _mask_and_image() -> tuple[mg.Image, mg.Image]:
    photo = mg.Image(media.image_bytes(64, 48, seed=1, fmt="jpeg"))
    mask = np.zeros((48, 64), dtype=np.uint8)
    mask[10:30, 20:40] = 255  # white: repaint this
    return photo, mg.Image.from_array(np.stack([mask] * 3, axis=-1))


async def test_edit_sends_the_image_and_an_alpha_mask_where_white_was(
    backend: OpenAIBackend, server: OpenAIServer
) -> None:
    photo, mask = _mask_and_image()
    async with mg.Client(backends={"openai": backend}) as client:
        result = await client.generate(
            mg.ImageRequest(prompt="a scarf", image=photo, mask=mask, options={"input_fidelity": "high"}),
            model="openai:gpt-image-1.5",
        )

    (edit,) = server.edits
    assert edit["images"] == [photo.read()]  # a JPEG goes as it is
    alpha = np.asarray(PILImage.open(io.BytesIO(edit["mask"])).convert("RGBA"))[..., 3]
    assert alpha.shape == (48, 64)
    assert (alpha[10:30, 20:40] == 0).all()  # white (repaint) became transparent
    assert alpha.sum() == 255 * (48 * 64 - 20 * 20)  # everything else stays opaque
    assert edit["fields"]["input_fidelity"] == "high" and edit["fields"]["model"] == "gpt-image-1.5"
    assert result.images[0].size == (64, 48)  # size auto: the input's


async def test_a_mask_of_another_size_is_resized_with_a_warning(backend: OpenAIBackend, server: OpenAIServer) -> None:
    photo, _ = _mask_and_image()
    small = mg.Image.from_array(np.full((24, 32, 3), 255, dtype=np.uint8))
    result = await backend.run(mg.ImageRequest(prompt="x", image=photo, mask=small), "gpt-image-2", RunContext())
    alpha = np.asarray(PILImage.open(io.BytesIO(server.edits[0]["mask"])).convert("RGBA"))[..., 3]
    assert alpha.shape == (48, 64) and (alpha == 0).all()
    assert any(w.feature == "mask" for w in result.warnings)


async def test_reference_images_go_as_image_array_in_order(backend: OpenAIBackend, server: OpenAIServer) -> None:
    refs = [mg.Image(media.image_bytes(32, 32, seed=s, fmt="png")) for s in (5, 6, 7)]
    gif = mg.Image(media.gif_bytes(32, 32, frames=1, seed=8))  # not a format OpenAI takes: re-encoded as PNG
    await backend.run(mg.ImageRequest(prompt="combine these", images=[*refs, gif]), "gpt-image-2", RunContext())

    (edit,) = server.edits
    assert edit["images"][:3] == [r.read() for r in refs]
    assert edit["images"][3][:8] == b"\x89PNG\r\n\x1a\n"
    assert edit["mask"] is None


async def test_retired_models_fail_before_sending_and_name_the_successor(
    backend: OpenAIBackend, server: OpenAIServer
) -> None:
    for model, successor in (
        ("dall-e-3", "gpt-image-2"),
        ("dall-e-2", "gpt-image-2"),
        ("gpt-image-1", "gpt-image-2.5-sunburst"),
    ):
        with pytest.raises(mg.ModelNotFoundError, match=successor) as caught:
            await backend.run(mg.ImageRequest(prompt="fox"), model, RunContext())
        assert caught.value.retryable is False
    with pytest.raises(mg.UnsupportedRequestError, match="Sora"):
        await backend.run(mg.VideoRequest(prompt="waves"), "sora-2", RunContext())
    assert server.stats["requests"] == 0


async def test_what_openai_cannot_do_is_refused_before_sending(backend: OpenAIBackend, server: OpenAIServer) -> None:
    control = mg.Image(media.png_bytes(32, 32))
    with pytest.raises(mg.UnsupportedRequestError, match="control_image"):
        await backend.run(mg.ImageRequest(prompt="x", control_image=control), "gpt-image-2", RunContext())
    with pytest.raises(mg.InvalidRequestError, match="xhigh"):
        await backend.run(mg.ImageRequest(prompt="x", options={"quality": "xhigh"}), "gpt-image-2", RunContext())
    with pytest.raises(mg.InvalidRequestError, match="known: quality"):
        await backend.run(mg.ImageRequest(prompt="x", options={"qualty": "high"}), "gpt-image-2", RunContext())
    with pytest.raises(mg.InvalidRequestError, match="JPEG has no alpha"):
        request = mg.ImageRequest(prompt="x", output_format="jpeg", options={"background": "transparent"})
        await backend.run(request, "gpt-image-2", RunContext())
    with pytest.raises(mg.UnsupportedRequestError):
        await backend.run(mg.AudioRequest(prompt="piano", kind="music"), "gpt-4o-mini-tts", RunContext())
    assert server.stats["requests"] == 0


async def test_output_format_and_options_reach_the_api(backend: OpenAIBackend, server: OpenAIServer) -> None:
    request = mg.ImageRequest(
        prompt="fox",
        width=256,
        height=256,
        output_format="webp",
        options={"output_compression": 50, "background": "opaque"},
    )
    result = await backend.run(request, "gpt-image-2.5-flare", RunContext())
    assert result.images[0].media_type == "image/webp"
    sent = server.stats.bodies_of("images.generate")[-1]
    assert sent["output_format"] == "webp" and sent["output_compression"] == 50 and sent["background"] == "opaque"


async def test_the_client_splits_n_above_ten(backend: OpenAIBackend, server: OpenAIServer) -> None:
    async with mg.Client(backends={"openai": backend}) as client:
        result = await client.generate(
            mg.ImageRequest(prompt="fox", n=12, width=64, height=64), model="openai:gpt-image-2"
        )
    assert len(result.images) == 12
    assert sorted(b["n"] for b in server.stats.bodies_of("images.generate")) == [2, 10]


def test_the_official_client_speaks_to_the_fake(server: OpenAIServer) -> None:
    import openai

    client = openai.OpenAI(api_key=server.api_key, base_url=server.url, max_retries=0)
    made = client.images.generate(model="gpt-image-2", prompt="fox", size="256x128", n=2)
    assert made.data is not None and len(made.data) == 2 and made.size == "256x128"
    photo = media.png_bytes(32, 32)
    edited = client.images.edit(model="gpt-image-1.5", prompt="a hat", image=[("a.png", photo, "image/png")] * 2)
    assert edited.data is not None and server.edits[0]["images"] == [photo, photo]
    speech = client.audio.speech.create(model="tts-1", voice="nova", input="hi", response_format="wav")
    assert speech.content[:4] == b"RIFF" and speech.content[4:8] == b"\xff\xff\xff\xff"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(api_key="sk-nope", base_url=server.url, max_retries=0).images.generate(
            model="gpt-image-2", prompt="x"
        )
    client.close()
