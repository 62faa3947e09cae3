"""Replicate outputs, bounded and kept (issue 12, findings 4 and 5), against the loopback server."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import mediagen as mg
from mediagen.backend import RunContext
from mediagen_testkit import media_fixtures as media
from mediagen_testkit.replicate_server import ReplicateServer, image_model

pytest.importorskip("replicate")
from mediagen_replicate import ReplicateBackend

FLUX = "black-forest-labs/flux-schnell"


def _model(name: str, output: Any) -> Any:
    """An image model like flux-schnell whose output is `output(input, server)`."""
    return dataclasses.replace(image_model(owner="acme", name=name), output=output)


@pytest.fixture
def server() -> Iterator[ReplicateServer]:
    png = media.image_bytes(16, 16, seed=1, fmt="png")
    big = png + b"\x00" * 300_000
    models = [
        image_model(),
        _model("many", lambda inp, srv: [srv.serve_bytes(png, f"out-{i}.png") for i in range(1000)]),
        _model("inline", lambda inp, srv: ["data:image/png;base64," + base64.b64encode(big).decode()]),
        _model("html", lambda inp, srv: [srv.serve_bytes(b"<html><body>oops</body></html>", "out-0.png")]),
        _model("pair", lambda inp, srv: [srv.serve_bytes(big, "out-0.png"), srv.serve_bytes(big, "out-1.png")]),
    ]
    with ReplicateServer(time_scale=0.01, models=models) as srv:
        yield srv


@pytest.fixture
async def backend(server: ReplicateServer) -> AsyncIterator[ReplicateBackend]:
    b = ReplicateBackend(api_token=server.token, base_url=server.url, reconcile_delay_s=0, retry_base_delay=0.01)
    yield b
    await b.aclose()


async def test_n1_request_with_1000_outputs_fails_clearly(backend: ReplicateBackend, server: ReplicateServer) -> None:
    with pytest.raises(mg.MediaTooLargeError, match="returned 1000 outputs for n=1; at most 8") as info:
        await backend.run(mg.ImageRequest(prompt="x", seed=1), "acme/many", RunContext())
    assert not info.value.retryable and info.value.limit == 8
    assert server.stats.by_route[("GET", "/delivery/{path}")] == 0  # refused before one output was fetched
    # The bound is a setting: relative to n, configurable per backend (and so in mediagen.toml).
    generous = ReplicateBackend(api_token=server.token, base_url=server.url, max_outputs_per_n=1000)
    try:
        res = await generous.run(mg.ImageRequest(prompt="x", seed=1), "acme/many", RunContext())
    finally:
        await generous.aclose()
    assert len(res.artifacts) == 1000


async def test_replicate_data_url_output_respects_byte_cap(server: ReplicateServer) -> None:
    capped = ReplicateBackend(api_token=server.token, base_url=server.url, max_download_bytes=100_000)
    try:
        with pytest.raises(mg.MediaTooLargeError, match="size cap of 100000"):
            await capped.run(mg.ImageRequest(prompt="x", seed=1), "acme/inline", RunContext())
    finally:
        await capped.aclose()


async def test_result_total_bytes_are_bounded(server: ReplicateServer) -> None:
    capped = ReplicateBackend(api_token=server.token, base_url=server.url, max_result_bytes=400_000)
    try:
        with pytest.raises(mg.MediaTooLargeError, match="total download cap of 400000"):
            await capped.run(mg.ImageRequest(prompt="x", seed=1, options={"download": True}), "acme/pair", RunContext())
        lazy = await capped.run(mg.ImageRequest(prompt="x", seed=1), "acme/pair", RunContext())
        await lazy.artifacts[0].aread()  # lazily, the same budget holds across the result's artifacts
        with pytest.raises(mg.MediaTooLargeError):
            await lazy.artifacts[1].aread()
    finally:
        await capped.aclose()


async def test_an_html_output_is_not_an_image(backend: ReplicateBackend) -> None:
    res = await backend.run(mg.ImageRequest(prompt="x", seed=1), "acme/html", RunContext())
    with pytest.raises(mg.DownloadError, match="an HTML page"):
        await res.artifacts[0].aread()
    with pytest.raises(mg.DownloadError, match="an HTML page"):
        await backend.run(mg.ImageRequest(prompt="x", seed=1, options={"download": True}), "acme/html", RunContext())


async def test_seeded_n_outputs_are_not_all_named_out_0(server: ReplicateServer, tmp_path: Path) -> None:
    async with mg.Client(
        providers={"replicate": {"api_token": server.token, "base_url": server.url, "reconcile_delay_s": 0}}
    ) as client:
        res = await client.image("a fox", model=f"replicate:{FLUX}", n=3, seed=7)
    # Each seeded prediction named its file out-0.webp; the result numbers them.
    assert [a.metadata["filename"] for a in res.artifacts] == ["out-0.webp", "out-1.webp", "out-2.webp"]
    saved = [await artifact.asave(tmp_path) for artifact in res.artifacts]
    assert [p.name for p in saved] == ["out-0.webp", "out-1.webp", "out-2.webp"]
    assert len({p.read_bytes() for p in saved}) == 3  # three different images, all kept


async def test_api_body_respects_byte_cap(backend: ReplicateBackend) -> None:
    # The inline model's prediction JSON carries a 300 KB data: URL; an API answer past the cap is refused.
    backend._connect().max_body_bytes = 100_000
    with pytest.raises(mg.MediaTooLargeError, match="the API answered with"):
        await backend.run(mg.ImageRequest(prompt="x", seed=1), "acme/inline", RunContext())
    backend._connect().max_body_bytes = 10_000_000
    res = await backend.run(mg.ImageRequest(prompt="x", seed=1), "acme/inline", RunContext())
    assert len(await res.artifacts[0].aread()) > 300_000
