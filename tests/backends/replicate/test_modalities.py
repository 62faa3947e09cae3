"""Each modality round-trips through the loopback Replicate server into an artifact that decodes."""

from __future__ import annotations

import base64
import io
import wave
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from PIL import Image

import mediagen as mg
from mediagen.backend import RunContext
from mediagen_testkit import media_fixtures as media
from mediagen_testkit.replicate_server import SDXL_VERSION, FakeModel, ReplicateServer, default_models

pytest.importorskip("replicate")
from mediagen_replicate import ReplicateBackend


@pytest.fixture
def server() -> Iterator[ReplicateServer]:
    with ReplicateServer(time_scale=0.01) as srv:
        yield srv


@pytest.fixture
async def backend(server: ReplicateServer) -> AsyncIterator[ReplicateBackend]:
    b = ReplicateBackend(api_token=server.token, base_url=server.url, reconcile_delay_s=0, retry_base_delay=0.01)
    yield b
    await b.aclose()


async def run(backend: ReplicateBackend, request: mg.Request, model: str) -> mg.Result:
    return await backend.run(request, model, RunContext())


async def test_image_flux_schnell_aspect_ratio_and_seeds(backend: ReplicateBackend, server: ReplicateServer) -> None:
    # Through the client: it alone splits n (one prediction per seed for a model with one seed input).
    async with mg.Client(backends={"replicate": backend}) as client:
        res = await client.generate(
            mg.ImageRequest(prompt="a fox", aspect_ratio="16:9", seed=5, n=2),
            model="replicate:black-forest-labs/flux-schnell",
        )

    assert [type(a) for a in res.artifacts] == [mg.Image, mg.Image]
    assert res.seeds == [5, 6]
    for seed, art in zip(res.seeds, res.artifacts, strict=True):
        data = await art.aread()
        pil = Image.open(io.BytesIO(data))
        assert pil.size == (64, 36)  # the server's 16:9 at 64 px
        assert art.media_type == "image/webp"
        assert data == media.image_bytes(64, 36, seed=seed, fmt="webp", quality=80)
    # One prediction per seed: output i is made with seed + i, whatever the model does with a batch.
    assert server.stats.predictions_created == 2
    assert res.provider == "replicate" and res.model == "black-forest-labs/flux-schnell"
    assert res.usage.predict_s is not None and res.timings.total_s is not None


async def test_a_backend_run_never_splits_n(backend: ReplicateBackend, server: ReplicateServer) -> None:
    """n is split in one place (the client): a seeded n=2 run straight on the backend is refused, unsent."""
    with pytest.raises(mg.UnsupportedRequestError, match="splits n"):
        await run(backend, mg.ImageRequest(prompt="a fox", seed=5, n=2), "black-forest-labs/flux-schnell")
    assert server.stats.predictions_created == 0


async def test_image_output_format_png(backend: ReplicateBackend) -> None:
    res = await run(
        backend, mg.ImageRequest(prompt="a fox", output_format="png", seed=1), "black-forest-labs/flux-schnell"
    )
    assert Image.open(io.BytesIO(await res.artifacts[0].aread())).format == "PNG"


async def test_sdxl_by_version_and_by_latest(backend: ReplicateBackend, server: ReplicateServer) -> None:
    req = mg.ImageRequest(
        prompt="a castle", negative_prompt="blurry", width=512, height=256, steps=20, guidance=6.5, seed=3
    )
    pinned = await run(backend, req, f"stability-ai/sdxl:{SDXL_VERSION}")
    latest = await run(backend, req, "stability-ai/sdxl")

    for res in (pinned, latest):
        pil = Image.open(io.BytesIO(await res.artifacts[0].aread()))
        assert pil.size == (64, 32) and pil.format == "PNG"
        assert res.warnings == []
    assert server.stats.count("POST", "/v1/predictions") == 2  # both by version, not by name
    sent = server.snapshot(pinned.raw["id"])
    assert sent["version"] == SDXL_VERSION
    assert sent["input"] == {
        "prompt": "a castle",
        "negative_prompt": "blurry",
        "width": 512,
        "height": 256,
        "num_inference_steps": 20,
        "guidance_scale": 6.5,
        "seed": 3,
    }


async def test_text_to_video(backend: ReplicateBackend) -> None:
    res = await run(backend, mg.VideoRequest(prompt="waves on a beach"), "minimax/video-01")
    video = res.artifacts[0]
    assert isinstance(video, mg.Video)
    await video.aread()
    assert video.frames.shape == (8, 48, 64, 3)


async def test_image_to_video_inline_input(backend: ReplicateBackend, server: ReplicateServer) -> None:
    first = media.image_bytes(32, 32, seed=9)
    res = await run(
        backend, mg.VideoRequest(prompt="it moves", image=first, frames=81, fps=16), "wavespeedai/wan-2.1-i2v-480p"
    )
    await res.artifacts[0].aread()
    assert res.artifacts[0].frames.shape[0] == 16
    sent = server.snapshot(res.raw["id"])["input"]
    assert sent["image"].startswith("data:image/png;base64,")  # small: inline
    assert (sent["num_frames"], sent["frames_per_second"]) == (81, 16)


async def test_outputs_pass_by_reference_into_the_next_call(backend: ReplicateBackend, server: ReplicateServer) -> None:
    still = (await run(backend, mg.ImageRequest(prompt="a chair", seed=2), "black-forest-labs/flux-schnell")).artifacts[
        0
    ]
    video = await run(backend, mg.VideoRequest(prompt="turn", image=still), "minimax/video-01")

    assert not still.is_loaded  # never downloaded on the way
    assert server.snapshot(video.raw["id"])["input"]["first_frame_image"] == still.url


async def test_large_input_goes_through_the_files_api(server: ReplicateServer) -> None:
    backend = ReplicateBackend(api_token=server.token, base_url=server.url, data_url_max_bytes=100)
    try:
        picture = media.image_bytes(48, 48, seed=4)
        res = await run(backend, mg.MeshRequest(image=picture), "firtoz/trellis")
    finally:
        await backend.aclose()
    assert server.stats.files_uploaded == 1
    (uploaded,) = server.snapshot(res.raw["id"])["input"]["images"]
    assert uploaded.startswith(server.origin + "/uploads/")  # serve keeps uploads under /uploads/
    assert server.resolve_uri(uploaded) == picture


async def test_music(backend: ReplicateBackend) -> None:
    res = await run(backend, mg.AudioRequest(prompt="calm piano", kind="music", duration_s=2, seed=1), "meta/musicgen")
    sound = res.artifacts[0]
    assert isinstance(sound, mg.Audio)
    with wave.open(io.BytesIO(await sound.aread())) as w:
        assert w.getnframes() / w.getframerate() == pytest.approx(2.0)
    assert sound.channels == 2 and res.usage.audio_s == 2.0


async def test_speech(backend: ReplicateBackend) -> None:
    res = await run(
        backend, mg.AudioRequest(prompt="Hello there, fox.", kind="speech", voice="am_adam"), "jaaari/kokoro-82m"
    )
    soundfile = pytest.importorskip("soundfile")
    samples, rate = soundfile.read(io.BytesIO(await res.artifacts[0].aread()))
    assert rate == 8000 and len(samples) > 0
    assert res.warnings == []


async def test_mesh_with_preview_video(backend: ReplicateBackend, server: ReplicateServer) -> None:
    res = await run(backend, mg.MeshRequest(image=media.image_bytes(32, 32, seed=8), seed=8), "firtoz/trellis")

    mesh, preview = res.artifacts
    assert isinstance(mesh, mg.Mesh) and isinstance(preview, mg.Video)
    await mesh.aread()
    assert len(mesh.to_trimesh().faces) > 0
    await preview.aread()
    assert preview.frames.ndim == 4
    sent = server.snapshot(res.raw["id"])["input"]
    assert sent["generate_model"] is True and sent["randomize_seed"] is False and sent["seed"] == 8


async def test_data_url_output_and_download_option(server: ReplicateServer) -> None:
    png = media.image_bytes(16, 16, seed=3)

    def output(inp: dict[str, Any], srv: ReplicateServer) -> list[str]:
        return ["data:image/png;base64," + base64.b64encode(png).decode()]

    server.add_model(
        FakeModel(
            "acme",
            "inline",
            output=output,
            official=True,
            input_schema={"type": "object", "properties": {"prompt": {"type": "string"}}},
        )
    )
    backend = ReplicateBackend(api_token=server.token, base_url=server.url)
    try:
        res = await run(backend, mg.ImageRequest(prompt="x", options={"download": True}), "acme/inline")
    finally:
        await backend.aclose()
    assert res.artifacts[0].is_loaded and res.artifacts[0].read() == png


async def test_download_option_sniffs_the_real_kind(server: ReplicateServer) -> None:
    wav = media.wav_bytes(0.5)

    def output(inp: dict[str, Any], srv: ReplicateServer) -> str:
        return srv.serve_bytes(wav, "result", "application/octet-stream")  # a name that says nothing

    server.add_model(
        FakeModel(
            "acme",
            "mystery",
            output=output,
            official=True,
            input_schema={"type": "object", "properties": {"prompt": {"type": "string"}}},
        )
    )
    backend = ReplicateBackend(api_token=server.token, base_url=server.url)
    try:
        lazy = await run(backend, mg.ImageRequest(prompt="x"), "acme/mystery")
        eager = await run(backend, mg.ImageRequest(prompt="x", options={"download": True}), "acme/mystery")
    finally:
        await backend.aclose()
    assert isinstance(lazy.artifacts[0], mg.Image)  # nothing to go by but the request
    assert isinstance(eager.artifacts[0], mg.Audio)  # the bytes say otherwise
    assert eager.artifacts[0].media_type == "audio/wav"


def test_every_default_model_is_curated() -> None:
    from mediagen_replicate.curated import CURATED

    assert {m.ref for m in default_models()} <= set(CURATED)
