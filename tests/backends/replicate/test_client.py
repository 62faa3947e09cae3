"""End to end through `mg.Client`: `model="replicate:..."`, jobs and their events, settings, chaining."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import mediagen as mg
from mediagen_testkit.replicate_server import SDXL_VERSION, ReplicateServer, video_model

pytest.importorskip("replicate")


@pytest.fixture
def server() -> Iterator[ReplicateServer]:
    with ReplicateServer(time_scale=0.01) as srv:
        yield srv


@pytest.fixture
def env(server: ReplicateServer, monkeypatch: pytest.MonkeyPatch) -> ReplicateServer:
    monkeypatch.setenv("REPLICATE_API_TOKEN", server.token)
    monkeypatch.setenv("REPLICATE_BASE_URL", server.url)
    return server


async def test_chain_image_video_music_mesh(env: ReplicateServer, tmp_path: Path) -> None:
    async with mg.Client() as client:
        still = await client.image("a red fox", model="replicate:black-forest-labs/flux-schnell", seed=7)
        clip = await client.video("the fox runs", image=still.artifacts[0], model="replicate:minimax/video-01")
        music = await client.audio("calm piano", kind="music", duration_s=2, model="replicate:meta/musicgen")
        mesh = await client.mesh(image=still.artifacts[0], model="replicate:firtoz/trellis")

    assert still.model_string == "replicate:black-forest-labs/flux-schnell" and still.seeds == [7]
    saved = [
        await still.artifacts[0].asave(tmp_path / "fox.png"),  # webp from the model, converted by suffix
        await clip.artifacts[0].asave(tmp_path / "fox.mp4"),
        await music.artifacts[0].asave(tmp_path / "piano.wav"),
        await mesh.meshes[0].asave(tmp_path / "fox.glb"),
    ]
    assert all(p.stat().st_size > 0 for p in saved)
    assert mg.Mesh(path=saved[3]).to_trimesh().faces.shape[1] == 3
    assert env.snapshot(clip.raw["id"])["input"]["first_frame_image"] == still.artifacts[0].url
    assert env.stats.predictions_created == 4


async def test_submit_streams_events_in_order(env: ReplicateServer) -> None:
    env.add_model(video_model(run_seconds=100, log_steps=5))
    async with mg.Client() as client:
        job = client.submit(mg.VideoRequest(prompt="waves"), model="replicate:minimax/video-01")
        events = [event async for event in job.events()]
        result = await job.result()

    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "Queued" and kinds[1] == "Started" and kinds[-1] == "Completed"
    steps = [e.step for e in events if isinstance(e, mg.Progress)]
    assert steps and steps == sorted(steps) and steps[-1] == 5
    assert all(e.job_id == job.id for e in events)
    assert isinstance(result.artifacts[0], mg.Video)


async def test_n_with_a_seed_is_one_prediction_per_seed(env: ReplicateServer) -> None:
    async with mg.Client() as client:
        res = await client.image(
            "a fox", model=f"replicate:stability-ai/sdxl:{SDXL_VERSION}", n=3, seed=10, width=256, height=256
        )
    assert res.seeds == [10, 11, 12]
    assert sorted(p["input"]["seed"] for p in env.predictions.values()) == [10, 11, 12]
    assert all("num_outputs" not in p["input"] for p in env.predictions.values())


def write_config(text: str) -> None:
    Path(os.environ["MEDIAGEN_CONFIG"]).write_text(text)  # conftest points it at an empty file per test


async def test_settings_from_mediagen_toml(env: ReplicateServer) -> None:
    write_config(
        "[aliases]\nfast = 'replicate:black-forest-labs/flux-schnell'\n\n"
        "[providers.replicate]\nmax_concurrency = 2\nsync_wait_s = 0\npoll_interval = 0.05\n"
    )
    async with mg.Client() as client:
        res = await client.image("a fox", model="fast", n=3)
        backend = await client.backend("replicate")
    assert len(res.artifacts) == 3
    assert backend.describe()["max_concurrency"] == 2
    assert all(r.prefer_wait_s is None for r in env.records.values())  # sync mode off: polled


def test_sync_client(env: ReplicateServer) -> None:
    with mg.SyncClient() as client:
        res = client.image("a fox", model="replicate:black-forest-labs/flux-schnell", seed=1)
        assert res.artifacts[0].to_pil().size == (64, 64)


async def test_unsupported_task_is_refused_before_sending(env: ReplicateServer) -> None:
    async with mg.Client() as client:
        with pytest.raises(mg.UnsupportedRequestError, match="text-to-speech"):
            await client.audio("hello", kind="speech", model="replicate:meta/musicgen")
    assert env.stats.predictions_created == 0


async def test_result_cache_keys_on_the_resolved_version(env: ReplicateServer) -> None:
    async with mg.Client(cache=True) as client:
        backend = await client.backend("replicate")
        assert await backend.revision("stability-ai/sdxl") == SDXL_VERSION
        first = await client.image("a fox", model="replicate:stability-ai/sdxl", seed=5, width=128, height=128)
        created = env.stats.predictions_created
        second = await client.image("a fox", model="replicate:stability-ai/sdxl", seed=5, width=128, height=128)
    assert second.cached and not first.cached
    assert env.stats.predictions_created == created  # served from the cache: nothing sent
    assert second.artifacts[0].read() == first.artifacts[0].read()
