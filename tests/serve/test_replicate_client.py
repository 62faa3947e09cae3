"""The official `replicate` client against `mediagen serve` running a tiny diffusers model."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from mediagen._config import Config
from mediagen.serve import ServedModel
from mediagen_testkit.serve_server import TEST_TOKEN, ServeServer, fake_model

replicate = pytest.importorskip("replicate")
pytest.importorskip("diffusers")

INPUT = {"prompt": "a red fox", "seed": 7, "width": 64, "height": 64, "steps": 2}


def _pixels(url: str) -> np.ndarray:
    # Downloaded without the token: output URLs are capabilities of their own.
    response = httpx.get(url)
    response.raise_for_status()
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


@pytest.fixture
def sd_server(start_server: Callable[..., ServeServer], tiny_model: Callable[[str], Path]) -> ServeServer:
    served = ServedModel(owner="acme", name="tiny-sd", model=f"diffusers:{tiny_model('sd')}")
    return start_server(models=[served])


def test_sync_run_downloads_decodable_images_and_a_seed_repeats(sd_server: ServeServer) -> None:
    client = replicate.Client(api_token=TEST_TOKEN, base_url=sd_server.url)

    first = client.run("acme/tiny-sd", input=INPUT)
    second = client.run("acme/tiny-sd", input=INPUT)

    assert isinstance(first, list) and len(first) == 1
    url = str(first[0])
    assert url.startswith(sd_server.url + "/outputs/")
    a, b = _pixels(url), _pixels(str(second[0]))
    assert a.shape == (64, 64, 3)
    assert np.array_equal(a, b)
    other = client.run("acme/tiny-sd", input={**INPUT, "seed": 8})
    assert not np.array_equal(a, _pixels(str(other[0])))


async def test_async_run_and_the_model_object(sd_server: ServeServer) -> None:
    client = replicate.Client(api_token=TEST_TOKEN, base_url=sd_server.url)

    output = await client.async_run("acme/tiny-sd", input={**INPUT, "n": 2})
    model = await client.models.async_get("acme/tiny-sd")

    assert len(output) == 2
    images = [_pixels(str(u)) for u in output]
    assert not np.array_equal(images[0], images[1])  # seed 7 and seed 8
    assert model.owner == "acme" and model.name == "tiny-sd" and model.run_count >= 1
    schema = model.latest_version.openapi_schema["components"]["schemas"]["Input"]
    assert {"prompt", "seed", "n", "width", "height", "steps", "guidance"} <= set(schema["properties"])
    assert "loras" not in schema["properties"]  # loads files on the server: not exposed by default
    assert schema["properties"]["n"]["maximum"] == 8


def test_predictions_api_progress_list_and_get(sd_server: ServeServer) -> None:
    client = replicate.Client(api_token=TEST_TOKEN, base_url=sd_server.url)

    prediction = client.models.predictions.create("acme/tiny-sd", input=INPUT)
    prediction.wait()

    assert prediction.status == "succeeded"
    assert prediction.progress is not None and prediction.progress.current == prediction.progress.total == 2
    assert prediction.metrics and prediction.metrics["predict_time"] > 0
    again = client.predictions.get(prediction.id)
    assert again.output == prediction.output
    listed = client.predictions.list()
    assert prediction.id in [p.id for p in listed.results]


def test_cancel_ends_a_running_prediction_canceled(start_server: Callable[..., ServeServer]) -> None:
    config = Config(providers={"test": {"steps": 400, "step_delay_s": 0.05}})
    server = start_server(models=[fake_model("slow", "image")], config=config)
    client = replicate.Client(api_token=TEST_TOKEN, base_url=server.url)

    prediction = client.models.predictions.create("acme/slow", input={"prompt": "x"})
    while prediction.status == "starting":
        prediction.reload()
    prediction.cancel()
    prediction.reload()

    assert prediction.status == "canceled"
    assert prediction.output is None


def test_a_sync_wait_that_runs_out_answers_starting(start_server: Callable[..., ServeServer]) -> None:
    config = Config(providers={"test": {"steps": 100, "step_delay_s": 0.05}})
    server = start_server(models=[fake_model("slow", "image")], config=config)

    response = httpx.post(
        f"{server.url}/v1/models/acme/slow/predictions",
        json={"input": {"prompt": "x"}},
        headers={"Authorization": f"Bearer {TEST_TOKEN}", "Prefer": "wait=1"},
        timeout=30,
    )

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "starting" and body["output"] is None
    assert response.headers["location"].endswith(body["id"])
    client = replicate.Client(api_token=TEST_TOKEN, base_url=server.url)
    done = client.predictions.get(body["id"])
    done.wait()
    assert done.status == "succeeded"


def test_wrong_token_is_401_in_replicates_shape(sd_server: ServeServer) -> None:
    client = replicate.Client(api_token="not-the-token-at-all-000", base_url=sd_server.url)

    with pytest.raises(replicate.exceptions.ReplicateError) as caught:
        client.models.get("acme/tiny-sd")

    assert caught.value.status == 401
    response = httpx.get(f"{sd_server.url}/v1/predictions")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["title"] == "Unauthenticated"
