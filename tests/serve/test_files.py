"""`/v1/files` through the official `replicate` client: upload, get, list, delete, each tenant apart."""

from __future__ import annotations

import io
from collections.abc import Callable

import httpx
import pytest

from mediagen_testkit import media_fixtures as media
from mediagen_testkit.serve_server import OTHER_TOKEN, TEST_TOKEN, ServeServer, fake_model

replicate = pytest.importorskip("replicate")


def test_files_round_trip_with_the_official_client(start_server: Callable[..., ServeServer]) -> None:
    server = start_server(models=[fake_model("fox", "image")], page_size=2)
    client = replicate.Client(api_token=TEST_TOKEN, base_url=server.url)
    other = replicate.Client(api_token=OTHER_TOKEN, base_url=server.url)
    png = media.png_bytes(8, 8)

    made = [
        client.files.create(io.BytesIO(png), filename=f"in-{i}.png", content_type="image/png", metadata={"i": i})
        for i in range(3)
    ]
    got = client.files.get(made[0].id)
    assert (got.name, got.content_type, got.size, got.metadata) == ("in-0.png", "image/png", len(png), {"i": 0})
    assert got.checksums["sha256"] == made[0].checksums["sha256"] and got.urls["get"] == made[0].urls["get"]
    assert httpx.get(got.urls["get"]).content == png  # the capability URL needs no token

    # Newest first; the client reads the first page, the next one is an absolute URL.
    assert [f.id for f in client.files.list()] == [made[2].id, made[1].id]
    page = httpx.get(f"{server.url}/v1/files", headers={"Authorization": f"Bearer {TEST_TOKEN}"}).json()
    rest = httpx.get(page["next"], headers={"Authorization": f"Bearer {TEST_TOKEN}"}).json()
    assert [f["id"] for f in rest["results"]] == [made[0].id] and rest["next"] is None

    # Another tenant sees none of them and cannot delete them.
    assert other.files.list() == []
    with pytest.raises(replicate.exceptions.ReplicateError):
        other.files.get(made[0].id)
    with pytest.raises(replicate.exceptions.ReplicateError, match="404"):
        other.files.delete(made[0].id)

    assert client.files.delete(made[0].id) is True
    assert httpx.get(made[0].urls["get"]).status_code == 404  # the bytes are gone too
    with pytest.raises(replicate.exceptions.ReplicateError):
        client.files.get(made[0].id)
    with pytest.raises(replicate.exceptions.ReplicateError, match="404"):
        client.files.delete(made[0].id)
    assert [f.id for f in client.files.list()] == [made[2].id, made[1].id]


def test_metadata_must_be_an_object(start_server: Callable[..., ServeServer]) -> None:
    server = start_server(models=[fake_model("fox", "image")])
    response = httpx.post(
        f"{server.url}/v1/files",
        headers={"Authorization": f"Bearer {TEST_TOKEN}"},
        files={"content": ("x.png", media.png_bytes(8, 8), "image/png")},
        data={"metadata": "[1, 2]"},
    )
    assert response.status_code == 422 and response.json()["invalid_fields"][0]["field"] == "metadata"
