"""The official `replicate` (sync and async) and `openai` clients against the test kit's Replicate server.

The server is `mediagen serve` with the simulation layer: these are the clients a user would point
at it, checking what they decode.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from mediagen_testkit import media_fixtures as media
from mediagen_testkit.replicate_server import ReplicateServer, image_model, mesh_model

replicate = pytest.importorskip("replicate")
openai = pytest.importorskip("openai")


@pytest.fixture
def server() -> Iterator[ReplicateServer]:
    with ReplicateServer(time_scale=0.01, models=[image_model(), mesh_model()]) as srv:
        yield srv


def test_replicate_sync_run_gives_the_models_bytes(server: ReplicateServer) -> None:
    client = replicate.Client(api_token=server.token, base_url=server.url)
    urls = client.run(
        "black-forest-labs/flux-schnell", input={"prompt": "a fox", "seed": 4, "num_outputs": 2, "output_format": "png"}
    )
    images = [httpx.get(str(u)).content for u in urls]  # no token: output URLs are capabilities
    assert images == [media.image_bytes(64, 64, seed=s, fmt="png", quality=80) for s in (4, 5)]
    assert server.stats.predictions_created == 1


async def test_replicate_async_run_and_an_object_output(server: ReplicateServer) -> None:
    client = replicate.Client(api_token=server.token, base_url=server.url)
    model = server.get_model("firtoz/trellis")
    out = await client.async_run(
        f"firtoz/trellis:{model.version}",
        input={"images": [io.BytesIO(media.png_bytes())], "generate_model": True, "seed": 3},
    )
    assert set(out) == {"model_file", "color_video", "combined_video", "no_background_images"}
    assert out["color_video"] is None and out["no_background_images"] == []
    async with httpx.AsyncClient() as http:
        assert (await http.get(str(out["model_file"]))).content == media.glb_bytes(seed=3)
    assert server.stats.files_uploaded == 1  # the file handle went through POST /v1/files


def test_openai_images_generate_on_a_replicate_shaped_model(server: ReplicateServer) -> None:
    client = openai.OpenAI(api_key=server.token, base_url=server.url)
    answer = client.images.generate(
        model="black-forest-labs/flux-schnell", prompt="a fox", n=2, size="1024x576", response_format="b64_json"
    )
    sizes = [Image.open(io.BytesIO(base64.b64decode(d.b64_json or ""))).size for d in answer.data]
    assert sizes == [(64, 36), (64, 36)]  # width x height became flux's aspect_ratio 16:9
    (record,) = server.state.store.page("test", before=None, created_after=None, limit=5)
    assert record.input["n"] == 2

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(api_key="wrong-token-0123456789", base_url=server.url).images.generate(
            model="black-forest-labs/flux-schnell", prompt="x"
        )
    with pytest.raises(openai.BadRequestError, match="aspect_ratio"):  # 2:1 is not among flux's ratios
        client.images.generate(model="black-forest-labs/flux-schnell", prompt="x", size="128x64")
