"""Editing on Replicate: the image (and mask) or the reference images reach the input the model expects."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator

import pytest
from PIL import Image

import mediagen as mg
from mediagen.backend import RunContext
from mediagen_testkit import media_fixtures as media
from mediagen_testkit.replicate_server import ReplicateServer, default_models, edit_model

pytest.importorskip("replicate")
from mediagen_replicate import ReplicateBackend

PHOTO = media.png_bytes(16, 16, seed=1)
REF_A = media.png_bytes(16, 16, seed=2)
REF_B = media.png_bytes(16, 16, seed=3)
MASK = media.png_bytes(16, 16, seed=4)


@pytest.fixture
def server() -> Iterator[ReplicateServer]:
    with ReplicateServer(time_scale=0.01) as srv:
        srv.add_model(edit_model(owner="google", name="nano-banana", style="references"))
        srv.add_model(edit_model(owner="black-forest-labs", name="flux-kontext-pro", style="single"))
        srv.add_model(edit_model(owner="black-forest-labs", name="flux-fill-pro", style="mask"))
        srv.add_model(edit_model(owner="acme", name="refs-by-schema", style="references"))
        yield srv


@pytest.fixture
async def backend(server: ReplicateServer) -> AsyncIterator[ReplicateBackend]:
    b = ReplicateBackend(api_token=server.token, base_url=server.url, reconcile_delay_s=0, retry_base_delay=0.01)
    yield b
    await b.aclose()


def sent(server: ReplicateServer) -> dict[str, object]:
    (record,) = server.records.values()
    return record.effective_input


def data_url_bytes(url: object) -> bytes:
    from mediagen._media import decode_data_url

    assert isinstance(url, str) and url.startswith("data:image/png;base64,")
    return decode_data_url(url)[0]


async def test_image_and_references_share_nano_bananas_array_in_order(
    backend: ReplicateBackend, server: ReplicateServer
) -> None:
    req = mg.ImageRequest(prompt="put the hat on the cat", image=PHOTO, images=[REF_A, REF_B], output_format="png")
    res = await backend.run(req, "google/nano-banana", RunContext())

    inputs = sent(server)["image_input"]
    assert isinstance(inputs, list)
    assert [data_url_bytes(u) for u in inputs] == [PHOTO, REF_A, REF_B]
    assert Image.open(io.BytesIO(await res.artifacts[0].aread())).format == "PNG"


async def test_references_alone_go_to_an_array_input_found_in_the_schema(
    backend: ReplicateBackend, server: ReplicateServer
) -> None:
    await backend.run(mg.ImageRequest(prompt="a collage", images=[REF_A, REF_B]), "acme/refs-by-schema", RunContext())
    assert [data_url_bytes(u) for u in sent(server)["image_input"]] == [REF_A, REF_B]  # type: ignore[union-attr]


async def test_kontext_takes_the_image_as_input_image(backend: ReplicateBackend, server: ReplicateServer) -> None:
    await backend.run(
        mg.ImageRequest(prompt="make it night", image=PHOTO), "black-forest-labs/flux-kontext-pro", RunContext()
    )
    assert data_url_bytes(sent(server)["input_image"]) == PHOTO


async def test_fill_takes_image_and_mask(backend: ReplicateBackend, server: ReplicateServer) -> None:
    await backend.run(
        mg.ImageRequest(prompt="a window", image=PHOTO, mask=MASK), "black-forest-labs/flux-fill-pro", RunContext()
    )
    inputs = sent(server)
    assert data_url_bytes(inputs["image"]) == PHOTO and data_url_bytes(inputs["mask"]) == MASK


async def test_references_are_refused_by_a_single_image_model(
    backend: ReplicateBackend, server: ReplicateServer
) -> None:
    with pytest.raises(mg.UnsupportedRequestError, match="edits one input_image") as info:
        await backend.run(
            mg.ImageRequest(prompt="x", image=PHOTO, images=[REF_A]), "black-forest-labs/flux-kontext-pro", RunContext()
        )
    assert info.value.feature == "images"
    assert server.stats.predictions_created == 0


async def test_references_are_refused_where_the_schema_has_no_array_of_images(
    backend: ReplicateBackend, server: ReplicateServer
) -> None:
    # stability-ai/sdxl takes one `image`: several references have nowhere to go.
    with pytest.raises(mg.UnsupportedRequestError, match="cannot take images"):
        await backend.run(mg.ImageRequest(prompt="x", images=[REF_A, REF_B]), "stability-ai/sdxl", RunContext())
    assert server.stats.predictions_created == 0


async def test_a_mask_is_refused_by_a_model_that_cannot_paint_into_one(backend: ReplicateBackend) -> None:
    with pytest.raises(mg.UnsupportedRequestError, match="inpaint"):
        await backend.run(mg.ImageRequest(prompt="x", image=PHOTO, mask=MASK), "google/nano-banana", RunContext())


def test_default_models_hold_no_edit_model() -> None:
    # The edit models are opt-in: tests that count models elsewhere are unaffected.
    assert not any(m.name in ("nano-banana", "flux-fill-pro") for m in default_models())
