"""Each curated fal family round-trips through the loopback queue into an artifact that decodes."""

from __future__ import annotations

import io
import wave

import pytest
from PIL import Image

import mediagen as mg
from mediagen.backend import RunContext
from mediagen_fal import FalBackend
from mediagen_testkit import media_fixtures as media
from mediagen_testkit.fal_server import FalServer, expected_image


async def run(backend: FalBackend, request: mg.Request, model: str, ctx: RunContext | None = None) -> mg.Result:
    return await backend.run(request, model, ctx or RunContext())


@pytest.mark.parametrize("app", ["fal-ai/flux/schnell", "fal-ai/flux/dev", "fal-ai/flux-pro/v1.1"])
async def test_flux_family_png_with_seeds(backend: FalBackend, server: FalServer, app: str) -> None:
    res = await run(backend, mg.ImageRequest(prompt="a fox", seed=11, n=2, output_format="png"), app)

    assert res.seeds == [11, 12]
    for seed, art in zip(res.seeds, res.artifacts, strict=True):
        data = await art.aread()
        assert data == expected_image(seed)  # the server's image for that seed, byte for byte
        assert Image.open(io.BytesIO(data)).format == "PNG"
    # One job per seed, submitted to the full app id; status and result under owner/alias only.
    assert server.stats.jobs_queued == 2
    assert server.stats.by_route["POST submit"] == 2
    job = next(iter(server.jobs.values()))
    assert job.base == "/".join(app.split("/")[:2])
    assert job.input["output_format"] == "png" and job.input["prompt"] == "a fox"
    assert res.usage.predict_s is not None
    assert isinstance(res.raw, list) and {job["request_id"] for job in res.raw} == set(server.jobs)


async def test_flux_schnell_without_seed_batches_and_reports_the_seed(backend: FalBackend, server: FalServer) -> None:
    res = await run(backend, mg.ImageRequest(prompt="a fox", n=3, aspect_ratio="16:9"), "fal-ai/flux/schnell")

    assert len(res.artifacts) == 3 and server.stats.jobs_queued == 1
    job = next(iter(server.jobs.values()))
    assert job.input["num_images"] == 3 and job.input["image_size"] == "landscape_16_9"
    assert Image.open(io.BytesIO(await res.artifacts[0].aread())).size == (64, 36)
    assert res.seeds[0] == job.output["seed"]  # type: ignore[index]


async def test_flux_schnell_warns_about_guidance_and_negative_prompt(backend: FalBackend) -> None:
    ctx = RunContext()
    res = await run(
        backend,
        mg.ImageRequest(prompt="a fox", negative_prompt="blur", guidance=3.0, seed=1),
        "fal-ai/flux/schnell",
        ctx,
    )
    assert {w.feature for w in res.warnings} >= {"negative_prompt", "guidance"}


async def test_kling_text_to_video_mp4(backend: FalBackend, server: FalServer) -> None:
    pytest.importorskip("imageio_ffmpeg")
    res = await run(
        backend,
        mg.VideoRequest(prompt="the fox runs", duration_s=10, width=576, height=1024),
        "fal-ai/kling-video/v2.1/master/text-to-video",
    )

    video = res.artifacts[0]
    assert isinstance(video, mg.Video)
    data = await video.aread()
    assert data[4:8] == b"ftyp"  # an MP4 container
    assert video.num_frames == 8
    job = next(iter(server.jobs.values()))
    assert job.input["duration"] == "10" and job.input["aspect_ratio"] == "9:16"
    assert res.usage.video_s == 10


async def test_kling_image_to_video_sends_the_image_inline(backend: FalBackend, server: FalServer) -> None:
    pytest.importorskip("imageio_ffmpeg")
    first = media.png_bytes(32, 32, seed=3)
    res = await run(
        backend,
        mg.VideoRequest(prompt="it moves", image=first, duration_s=5),
        "fal-ai/kling-video/v2.1/master/image-to-video",
    )

    assert isinstance(res.artifacts[0], mg.Video)
    sent = next(iter(server.jobs.values())).input["image_url"]
    assert sent.startswith("data:image/png;base64,")


async def test_stable_audio_wav(backend: FalBackend, server: FalServer) -> None:
    res = await run(
        backend, mg.AudioRequest(prompt="calm piano", kind="music", duration_s=20, steps=50), "fal-ai/stable-audio"
    )

    audio = res.artifacts[0]
    assert isinstance(audio, mg.Audio)
    data = await audio.aread()
    with wave.open(io.BytesIO(data)) as w:
        assert w.getframerate() == 8000 and w.getnframes() == 16000  # the fake's tenth of 20 s
    job = next(iter(server.jobs.values()))
    assert job.input == {"prompt": "calm piano", "seconds_total": 20, "steps": 50}
    assert res.usage.audio_s == 20


async def test_trellis_image_to_glb_uploads_a_large_image(backend: FalBackend, server: FalServer) -> None:
    trimesh = pytest.importorskip("trimesh")
    # Bigger than the inline limit: it goes through fal's storage (initiate, then a keyless PUT).
    photo = media.image_bytes(640, 640, seed=9, fmt="png")
    assert len(photo) > 1024
    big = FalBackend(
        key=server.key, base_url=server.url, storage_url=server.url, poll_interval=0.01, data_url_max_bytes=1024
    )
    try:
        res = await run(big, mg.MeshRequest(image=photo, seed=4, steps=20), "fal-ai/trellis")
    finally:
        await big.aclose()

    mesh = res.artifacts[0]
    assert isinstance(mesh, mg.Mesh)
    loaded = trimesh.load(io.BytesIO(await mesh.aread()), file_type="glb", force="mesh")
    assert len(loaded.faces) == 12
    job = next(iter(server.jobs.values()))
    assert job.input["seed"] == 4 and job.input["ss_sampling_steps"] == 20 and job.input["slat_sampling_steps"] == 20
    assert server.stats.uploads == 1
    assert server.file_bytes(job.input["image_url"]) == photo


async def test_any_other_app_gets_the_generic_mapping_without_warnings(backend: FalBackend, server: FalServer) -> None:
    res = await run(
        backend,
        mg.ImageRequest(
            prompt="a fox",
            negative_prompt="blur",
            steps=9,
            guidance=2.5,
            width=512,
            height=256,
            seed=3,
            options={"acceleration": "high"},
        ),
        "acme/any-image",
    )

    assert res.warnings == []
    job = next(iter(server.jobs.values()))
    assert job.input == {
        "prompt": "a fox",
        "negative_prompt": "blur",
        "num_inference_steps": 9,
        "guidance_scale": 2.5,
        "image_size": {"width": 512, "height": 256},
        "seed": 3,
        "acceleration": "high",
    }
    assert Image.open(io.BytesIO(await res.artifacts[0].aread())).size == (64, 32)


async def test_through_the_client_with_the_entry_point(server: FalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAL_KEY", server.key)
    async with mg.Client(
        providers={"fal": {"base_url": server.url, "storage_url": server.url, "poll_interval": 0.01}}
    ) as client:
        res = await client.image("a fox", model="fal:fal-ai/flux/schnell", seed=2, output_format="png")
    assert res.provider == "fal"
    assert await res.artifacts[0].aread() == expected_image(2)


async def test_fill_sends_image_and_mask(backend: FalBackend, server: FalServer) -> None:
    photo, mask = media.png_bytes(16, 16, seed=1), media.png_bytes(16, 16, seed=2)
    res = await run(backend, mg.ImageRequest(prompt="a window", image=photo, mask=mask), "fal-ai/flux-pro/v1/fill")
    (job,) = server.jobs.values()
    assert job.input["image_url"].startswith("data:image/png;base64,")
    assert (
        job.input["mask_url"].startswith("data:image/png;base64,") and job.input["mask_url"] != job.input["image_url"]
    )
    assert isinstance(res.artifacts[0], mg.Image)


async def test_any_other_app_gets_image_mask_and_references_by_fals_names(
    backend: FalBackend, server: FalServer
) -> None:
    photo, mask = media.png_bytes(16, 16, seed=1), media.png_bytes(16, 16, seed=2)
    refs = [media.png_bytes(16, 16, seed=3), media.png_bytes(16, 16, seed=4)]
    await run(backend, mg.ImageRequest(prompt="x", image=photo, mask=mask, images=refs, strength=0.6), "acme/any-image")
    (job,) = server.jobs.values()
    assert set(job.input) == {"prompt", "image_url", "mask_url", "image_urls", "strength"}
    from mediagen._media import decode_data_url

    assert [decode_data_url(u)[0] for u in job.input["image_urls"]] == refs and job.input["strength"] == 0.6
    assert decode_data_url(job.input["image_url"])[0] == photo and decode_data_url(job.input["mask_url"])[0] == mask


async def test_status_logs_become_progress_and_log_events(backend: FalBackend, server: FalServer) -> None:
    events: list[object] = []
    ctx = RunContext(emit=events.append)
    server.apps["fal-ai/flux/dev"].run_s = 100.0  # 1 s at this scale: several polls see the bar move
    await run(backend, mg.ImageRequest(prompt="a fox", seed=1), "fal-ai/flux/dev", ctx)

    progress = [e for e in events if isinstance(e, mg.Progress)]
    logs = [e.message for e in events if isinstance(e, mg.Log)]
    assert progress and progress[-1].step == progress[-1].total == 4
    assert [p.step for p in progress] == sorted(p.step for p in progress)
    assert "Running fal-ai/flux/dev" in logs
    assert not any("|" in line for line in logs)  # bars went to Progress, not to the log
