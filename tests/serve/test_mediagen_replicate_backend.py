"""mediagen's own `replicate:` backend, pointed at `mediagen serve`, round-trips every modality."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import mediagen as mg
from mediagen_testkit.serve_server import TEST_TOKEN, ServeServer, fake_model

pytest.importorskip("replicate")


async def test_all_four_modalities_round_trip(start_server: Callable[..., ServeServer]) -> None:
    from mediagen_replicate import ReplicateBackend

    server = start_server(
        models=[
            fake_model("pic", "image"),
            fake_model("clip", "video"),
            fake_model("sound", "audio"),
            fake_model("chair", "mesh"),
        ]
    )
    backend = ReplicateBackend(api_token=TEST_TOKEN, base_url=server.url, poll_interval=0.05)
    async with mg.Client(backends={"replicate": backend}) as client:
        image = await client.image("a fox", model="replicate:acme/pic", seed=5, width=32, height=32, n=2)
        video = await client.video("waves", model="replicate:acme/clip", seed=1, frames=4, width=32, height=32)
        sound = await client.audio("piano", model="replicate:acme/sound", seed=1, duration_s=0.5)
        mesh = await client.mesh("a chair", model="replicate:acme/chair", seed=1)

    assert [img.size for img in image.images] == [(32, 32), (32, 32)]
    assert image.images[0].to_numpy().tolist() != image.images[1].to_numpy().tolist()
    assert video.videos[0].num_frames == 4
    assert sound.audios[0].duration_s > 0
    assert len(mesh.meshes[0].vertices) > 0
    # The same seed through the server gives the same bytes as the fake backend in-process.
    async with mg.Client() as local:
        direct = await local.image("a fox", model="test:fake", seed=5, width=32, height=32, n=2)
    assert image.images[0].to_numpy().tolist() == direct.images[0].to_numpy().tolist()


async def test_large_inputs_go_through_uploads(start_server: Callable[..., ServeServer]) -> None:
    import httpx
    import numpy as np

    from mediagen_replicate import ReplicateBackend

    server = start_server(models=[fake_model("pic", "image")])
    # No input goes inline: every image is uploaded with POST /v1/files first.
    backend = ReplicateBackend(api_token=TEST_TOKEN, base_url=server.url, poll_interval=0.05, data_url_max_bytes=0)
    start = mg.Image.from_array(np.full((24, 24, 3), 90, dtype="uint8"))
    async with mg.Client(backends={"replicate": backend}) as client:
        result = await client.image("a fox", model="replicate:acme/pic", image=start, seed=2, width=16, height=16)

    assert result.images[0].size == (16, 16)
    async with httpx.AsyncClient() as http:
        page = (
            await http.get(f"{server.url}/v1/predictions", headers={"Authorization": f"Bearer {TEST_TOKEN}"})
        ).json()
        sent = page["results"][0]["input"]["image"]
        assert sent.startswith(server.url + "/uploads/")
        assert (await http.get(sent)).content == start.read()  # the upload itself, readable by its URL alone
        wrong = sent.rsplit("/", 2)[0] + "/" + "x" * 32 + "/" + sent.rsplit("/", 1)[1]
        assert (await http.get(wrong)).status_code == 404
