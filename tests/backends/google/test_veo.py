"""Veo: a long-running operation polled with progress; the MP4 (soundtrack kept) fetched lazily, with the key only at home."""

from __future__ import annotations

import asyncio
import base64
import pickle
import subprocess
import tempfile
from pathlib import Path

import pytest

import mediagen as mg
from mediagen._mux import ffmpeg_exe
from mediagen.backend import RunContext
from mediagen_google import GeminiFileVideo, GoogleBackend
from mediagen_testkit import media_fixtures as media
from mediagen_testkit.fake_http import Faults
from mediagen_testkit.google_server import GoogleServer

pytest.importorskip("imageio_ffmpeg")


def has_audio_stream(data: bytes, _: object = None) -> bool:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.mp4"
        path.write_bytes(data)
        probe = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, check=False)
    return b"Audio:" in probe.stderr


async def polls_after_stopping(server: GoogleServer, polls_at_stop: int) -> bool:
    """Whether polling stopped: the count settles, at most one poll past the stop.

    A poll already on the wire when the job stopped may reach the (threaded) server a little later
    on a loaded machine, so one is allowed; a poller still running never lets the count settle.
    """
    settled = server.stats["polls"]
    for _ in range(20):
        await asyncio.sleep(0.3)  # six of the fixture's longest poll intervals
        now = server.stats["polls"]
        if now == settled:
            return now <= polls_at_stop + 1
        settled = now
    return False


async def test_text_to_video_polls_with_progress_and_keeps_veo3_audio(
    backend: GoogleBackend, server: GoogleServer
) -> None:
    events: list[mg.Event] = []
    result = await backend.run(
        mg.VideoRequest(prompt="waves at dusk", negative_prompt="people", width=1280, height=720, duration_s=8),
        "veo-3.0-generate-001",
        RunContext(emit=events.append),
    )

    (video,) = result.videos
    assert isinstance(video, GeminiFileVideo) and not video.is_loaded  # lazy: nothing fetched yet
    assert server.stats["downloads"] == 0
    data = await video.aread()
    assert data == server.video_bytes("veo-3.0-generate-001", GoogleServer.seed_for("waves at dusk"))
    assert video.num_frames == 8 and video.frames.shape[1:3] == (48, 64)
    assert has_audio_stream(data, None)
    assert server.stats["key_leaked"] == 0  # the redirect to storage did not carry the key

    (sent,) = server.stats.bodies_of("models.predictLongRunning")
    assert sent == {
        "instances": [{"prompt": "waves at dusk"}],
        "parameters": {
            "sampleCount": 1,
            "aspectRatio": "16:9",
            "resolution": "720p",
            "durationSeconds": 8,
            "negativePrompt": "people",
        },
    }
    progress = [e for e in events if isinstance(e, mg.Progress)]
    assert server.stats["polls"] >= 1 and progress[-1].step == progress[-1].total == 100
    assert result.usage.video_s == 8.0 and result.raw["done"] is True


async def test_image_to_video_sends_the_image_inline(backend: GoogleBackend, server: GoogleServer) -> None:
    still = mg.Image(media.png_bytes(32, 32, seed=3))
    result = await backend.run(
        mg.VideoRequest(prompt="it moves", image=still, duration_s=5, fps=30, options={"download": True}),
        "veo-2.0-generate-001",
        RunContext(),
    )
    instance = server.stats.bodies_of("models.predictLongRunning")[0]["instances"][0]
    assert base64.b64decode(instance["image"]["bytesBase64Encoded"]) == still.read()
    assert instance["image"]["mimeType"] == "image/png"
    video = result.videos[0]
    assert video.is_loaded and not has_audio_stream(video.read(), None)  # Veo 2 is silent
    assert any(w.feature == "fps" for w in result.warnings)


async def test_durations_snap_to_what_the_model_makes(backend: GoogleBackend, server: GoogleServer) -> None:
    result = await backend.run(mg.VideoRequest(prompt="x", duration_s=4), "veo-3.0-fast-generate-001", RunContext())
    assert server.stats.bodies_of("models.predictLongRunning")[0]["parameters"]["durationSeconds"] == 8
    assert any(w.type == "compatibility" and w.feature == "duration_s" for w in result.warnings)


async def test_cancelling_stops_polling_at_once_and_sends_no_cancel(
    server: GoogleServer, backend: GoogleBackend
) -> None:
    server.video_s = 60.0  # a long job
    task = asyncio.create_task(backend.run(mg.VideoRequest(prompt="long"), "veo-3.0-generate-001", RunContext()))
    while server.stats["polls"] < 2:  # noqa: ASYNC110 - the counter lives in the server's thread
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await polls_after_stopping(server, server.stats["polls"])
    assert server.stats["cancel_attempts"] == 0  # the Gemini API has no cancel; none was tried
    assert backend.describe()["requests"]["abandoned"] == 1 and backend.describe()["in_flight"] == 0


async def test_the_deadline_stops_polling_and_says_the_job_may_still_run(
    server: GoogleServer, backend: GoogleBackend
) -> None:
    server.video_s = 60.0
    async with mg.Client(backends={"google": backend}) as client:
        await client.generate(mg.ImageRequest(prompt="warm up"), model="google:imagen-4.0-fast-generate-001")
        with pytest.raises(mg.DeadlineExceededError):
            await client.generate(mg.VideoRequest(prompt="long"), model="google:veo-3.0-generate-001", timeout=0.5)
    assert await polls_after_stopping(server, server.stats["polls"])
    assert server.stats["operations"] == 1


async def test_the_key_goes_only_to_the_configured_endpoint(server: GoogleServer) -> None:
    with GoogleServer() as elsewhere:
        # A URI on another origin (as a compromised answer could name) is fetched without the key.
        file_id = "0001abcd"
        elsewhere.files[file_id] = b"\x00\x00\x00\x18ftypmp42"
        uri = f"{elsewhere.origin}/v1beta/files/{file_id}:download?alt=media"
        backend = GoogleBackend(api_key=server.api_key, base_url=server.url)
        connection = (await backend._connect()).connection
        video = GeminiFileVideo(uri, key=server.api_key, same_origin=connection.same_origin)
        with pytest.raises(mg.DownloadError):
            await video.aread()  # the other server wants a key it was never given
        await backend.aclose()
    assert elsewhere.stats.routes["files.download"] >= 1


def test_a_fetched_video_pickles_as_a_plain_video(server: GoogleServer) -> None:
    data = server.video_bytes("veo-2.0-generate-001", 1)
    server.files["f1"] = data
    video = GeminiFileVideo(
        f"{server.origin}/v1beta/files/f1:download?alt=media",
        key=server.api_key,
        same_origin=lambda url: url.startswith(server.origin),
    )
    clone = pickle.loads(pickle.dumps(video))
    assert type(clone) is mg.Video and clone.read() == data
    assert server.api_key not in repr(video) and server.api_key.encode() not in pickle.dumps(video)


async def test_veo_jobs_under_faults_each_start_once_and_download(backend: GoogleBackend, server: GoogleServer) -> None:
    server.faults = Faults(rate_limit_every=3, error_every=5, retry_after_s=0.02)  # creates, polls and downloads
    server.video_s = 0.1
    requests = [mg.VideoRequest(prompt=f"tide {i}", options={"download": True}) for i in range(4)]
    results = await asyncio.gather(*(backend.run(r, "veo-2.0-generate-001", RunContext()) for r in requests))

    for i, result in enumerate(results):
        assert result.videos[0].read() == server.video_bytes("veo-2.0-generate-001", GoogleServer.seed_for(f"tide {i}"))
    assert server.stats["faults"] > 0
    assert server.stats["operations"] == server.stats["billed"] == 4  # no operation started twice
