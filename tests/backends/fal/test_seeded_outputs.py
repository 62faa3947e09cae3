"""A seeded request for several outputs: output i comes from seed + i, as fal makes one seed per call."""

from __future__ import annotations

import mediagen as mg
from mediagen_fal import FalBackend
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
