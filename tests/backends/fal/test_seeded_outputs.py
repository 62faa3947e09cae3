"""A seeded request for several outputs: output i comes from seed + i, as fal makes one seed per call."""

from __future__ import annotations

import mediagen as mg
from mediagen.backend import RunContext
from mediagen_fal import FalBackend
from mediagen_testkit import media_fixtures as media
from mediagen_testkit.fal_server import FalServer, expected_image


async def test_seeded_n_is_one_job_per_output_each_with_its_own_seed(server: FalServer) -> None:
    backend = FalBackend(key=server.key, base_url=server.url, storage_url=server.url, poll_interval=0.01)
    async with mg.Client(backends={"fal": backend}) as client:
        res = await client.generate(
            mg.ImageRequest(prompt="a fox", seed=21, n=2, output_format="png"), model="fal:fal-ai/flux/schnell"
        )
    assert res.seeds == [21, 22]
    assert [await a.aread() for a in res.artifacts] == [expected_image(21), expected_image(22)]
    assert server.stats.jobs_queued == 2


async def test_seeded_jobs_share_one_upload_of_the_input(server: FalServer) -> None:
    # Three seeded jobs read the same image: it is uploaded once (too big to inline), not per job.
    photo = media.image_bytes(320, 320, seed=5, fmt="png")
    assert len(photo) > 1024
    backend = FalBackend(
        key=server.key, base_url=server.url, storage_url=server.url, poll_interval=0.01, data_url_max_bytes=1024
    )
    try:
        res = await backend.run(
            mg.ImageRequest(prompt="make it dusk", image=photo, seed=30, n=3), "fal-ai/flux-pro/kontext", RunContext()
        )
    finally:
        await backend.aclose()
    assert res.seeds == [30, 31, 32] and server.stats.jobs_queued == 3
    assert server.stats.uploads == 1
    urls = {job.input["image_url"] for job in server.jobs.values()}
    assert len(urls) == 1 and server.file_bytes(urls.pop()) == photo
