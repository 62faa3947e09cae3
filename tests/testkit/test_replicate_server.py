"""The loopback Replicate server, driven by plain httpx and by the official `replicate` client."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import time
import wave
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from PIL import Image

from mediagen_replicate import verify_webhook
from mediagen_testkit import media_fixtures as media
from mediagen_testkit.replicate_server import (
    SDXL_VERSION,
    FakeModel,
    FaultPlan,
    ReplicateServer,
    audio_model,
    default_models,
    i2v_model,
    image_model,
    mesh_model,
    parse_duration,
    sdxl_model,
    sign_webhook,
    tqdm_line,
    tts_model,
    video_model,
)

replicate = pytest.importorskip("replicate")

TOKEN = "r8_test_0123456789abcdef"  # the server's default token (serve wants 16 characters or more)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def server() -> Iterator[ReplicateServer]:
    with ReplicateServer(time_scale=0.01) as srv:
        yield srv


def make_client(server: ReplicateServer) -> Any:
    client = replicate.Client(api_token=TOKEN, base_url=server.url)
    client.poll_interval = 0.02
    return client


def api(server: ReplicateServer, **kw: Any) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=AUTH, timeout=10, **kw)


def slow_model(**kw: Any) -> FakeModel:
    """An official model that takes a minute of model time (0.6 s at time_scale 0.01)."""
    kw.setdefault("run_seconds", 60.0)
    return image_model(owner="acme", name="slow", **kw)


def fetch(url: str) -> bytes:
    assert url.startswith("http://127.0.0.1:")
    resp = httpx.get(url, timeout=10)
    resp.raise_for_status()
    return resp.content


def decode_wav(data: bytes) -> tuple[int, int, int]:
    with wave.open(io.BytesIO(data)) as w:
        return w.getnframes(), w.getframerate(), w.getnchannels()


def decode_mp4(data: bytes) -> tuple[int, ...]:
    import imageio.v3 as iio

    return tuple(iio.imread(data, extension=".mp4").shape)


# -- pure helpers --------------------------------------------------------------------------------------


def test_webhook_signature_matches_replicate_test_vector() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    sig = sign_webhook(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    headers = {"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330"}
    assert verify_webhook({**headers, "webhook-signature": f"v1,bad {sig}"}, '{"test": 2432232314}', secret, None)
    assert not verify_webhook({**headers, "webhook-signature": sig}, '{"test": 1}', secret, None)


@pytest.mark.parametrize(
    ("text", "seconds"), [("5s", 5), ("1m30s", 90), ("1h", 3600), ("1h30m45s", 5445), ("90", 90), ("7.5", 7.5)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "4s", "2", "soon", "5ms", "-10"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_tqdm_line_parses_with_the_official_progress_regex() -> None:
    line = tqdm_line(2, 5, 1.27)
    assert line == " 40%|████      | 2/5 [00:01<00:01,  1.57it/s]"
    progress = replicate.prediction.Prediction.Progress.parse(f"Using seed: 1\n{line}\n")
    assert (progress.percentage, progress.current, progress.total) == (0.4, 2, 5)


def test_media_fixtures_decode() -> None:
    import trimesh

    for fmt in ("png", "jpg", "webp"):
        img = Image.open(io.BytesIO(media.image_bytes(64, 36, seed=1, fmt=fmt)))
        assert img.size == (64, 36)
    assert media.png_bytes(seed=1) == media.png_bytes(seed=1) != media.png_bytes(seed=2)
    assert decode_wav(media.wav_bytes(1.5, sample_rate=8000)) == (12000, 8000, 1)
    assert decode_mp4(media.mp4_bytes(64, 48, frames=8))[:3] == (8, 48, 64)
    mesh: Any = trimesh.load(io.BytesIO(media.glb_bytes(seed=4)), file_type="glb", force="mesh")
    assert mesh.faces.shape == (12, 3) and mesh.is_watertight and mesh.volume == pytest.approx(1.0)


# -- auth, lookups, errors -----------------------------------------------------------------------------


def test_auth_required(server: ReplicateServer) -> None:
    with httpx.Client(base_url=server.url) as http:
        missing = http.get("/account")
        wrong = http.get("/account", headers={"Authorization": "Bearer nope"})
        token_scheme = http.get("/account", headers={"Authorization": f"Token {TOKEN}"})
    assert missing.status_code == wrong.status_code == 401
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json() == {
        "title": "Unauthenticated",
        "detail": "You did not pass an authentication token",
        "status": 401,
    }
    assert wrong.json()["detail"] == "You did not pass a valid authentication token"
    assert token_scheme.status_code == 200 and token_scheme.json()["username"] == "test"

    bad = replicate.Client(api_token="r8_wrong", base_url=server.url)
    with pytest.raises(replicate.exceptions.ReplicateError) as err:
        bad.run("black-forest-labs/flux-schnell", input={"prompt": "x"})
    assert err.value.status == 401
    assert server.stats.predictions_created == 0


def test_origin_and_api_url_both_work_as_base_url(server: ReplicateServer) -> None:
    assert server.url == server.origin + "/v1"
    for base in (server.url, server.origin):
        client = replicate.Client(api_token=TOKEN, base_url=base)
        assert client.accounts.current().username == "test"
    assert server.stats.count("GET", "/v1/account") == 2


def test_models_versions_and_not_found(server: ReplicateServer) -> None:
    client = make_client(server)
    model = client.models.get("stability-ai/sdxl")
    assert model.latest_version.id == SDXL_VERSION
    schema = model.latest_version.openapi_schema["components"]["schemas"]
    assert schema["Input"]["properties"]["num_outputs"]["maximum"] == 4
    assert schema["scheduler"]["enum"][0] == "DDIM"
    version = client.models.get("black-forest-labs/flux-schnell").versions.get(
        server.get_model("black-forest-labs/flux-schnell").version
    )
    assert version.openapi_schema["components"]["schemas"]["Output"]["type"] == "array"
    with api(server) as http:
        assert http.get("/models/stability-ai/sdxl/versions").json()["results"][0]["id"] == SDXL_VERSION
        assert http.get("/models/nobody/nothing").status_code == 404
        assert http.get("/models/stability-ai/sdxl/versions/" + "0" * 64).status_code == 404
        assert http.get("/predictions/doesnotexist").status_code == 404
        assert http.get("/no/such/route").status_code == 404
        # Only official models run by name.
        by_name = http.post("/models/stability-ai/sdxl/predictions", json={"input": {"prompt": "x"}})
        assert by_name.status_code == 404
        assert by_name.json() == {"detail": "The requested resource could not be found.", "status": 404}
        assert http.post("/models/nobody/nothing/predictions", json={"input": {}}).status_code == 404
        for bad_version in ("0" * 64, "stability-ai/sdxl", "stability-ai/sdxl:" + "1" * 64, "nobody/x"):
            resp = http.post("/predictions", json={"version": bad_version, "input": {"prompt": "x"}})
            assert resp.status_code == 422, bad_version
            assert resp.json()["title"] == "Invalid version or not permitted"
        not_text = http.post("/predictions", json={"version": 7, "input": {"prompt": "x"}})
        assert not_text.status_code == 422 and "version is required" in not_text.json()["detail"]
    with pytest.raises(replicate.exceptions.ReplicateError) as err:
        client.run("stability-ai/sdxl", input={"prompt": "x"})
    assert err.value.status == 404
    assert server.stats.predictions_created == 0


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ({"input": {"prompt": "x", "num_outputs": 5}}, "number_lte"),
        ({"input": {"prompt": "x", "num_outputs": 0}}, "number_gte"),
        ({"input": {"prompt": "x", "aspect_ratio": "7:5"}}, "enum"),
        ({"input": {"prompt": "x", "seed": "7"}}, "invalid_type"),
        ({"input": {"prompt": "x", "go_fast": 1}}, "invalid_type"),
        ({"input": {"prompt": "x", "prompt_typo": "y"}}, "additional_property_not_allowed"),
        ({"input": {"aspect_ratio": "1:1"}}, "required"),
        ({"inptu": {"prompt": "x"}}, "additional_property_not_allowed"),
        ({}, "required"),
        ({"input": {"prompt": "x"}, "webhook_events_filter": ["sometimes"]}, "enum"),
    ],
)
def test_validation_errors_create_nothing(server: ReplicateServer, body: dict[str, Any], kind: str) -> None:
    with api(server) as http:
        resp = http.post("/models/black-forest-labs/flux-schnell/predictions", json=body)
    assert resp.status_code == 422
    problem = resp.json()
    assert problem["status"] == 422 and problem["detail"]
    assert kind in {f["type"] for f in problem["invalid_fields"]}
    assert server.stats.predictions_created == 0 and server.predictions == {}


def test_schema_validation_via_ref_enums_and_arrays(server: ReplicateServer) -> None:
    with api(server) as http:
        bad_scheduler = http.post("/predictions", json={"version": SDXL_VERSION, "input": {"scheduler": "EULER_FAST"}})
        bad_images = http.post(
            "/predictions",
            json={"version": server.get_model("firtoz/trellis").version, "input": {"images": ["not a uri"]}},
        )
        empty_images = http.post(
            "/predictions", json={"version": server.get_model("firtoz/trellis").version, "input": {"images": []}}
        )
    assert bad_scheduler.json()["title"] == "Input validation failed"
    assert bad_scheduler.json()["invalid_fields"][0] == {
        "type": "enum",
        "field": "input.scheduler",
        "description": bad_scheduler.json()["invalid_fields"][0]["description"],
    }
    assert bad_images.json()["invalid_fields"][0]["field"] == "input.images.0"
    assert empty_images.status_code == 422
    assert server.stats.predictions_created == 0


# -- round trips through the official client -------------------------------------------------------------


def test_image_model_outputs_follow_seed_aspect_and_format(server: ReplicateServer) -> None:
    client = make_client(server)
    inp = {"prompt": "a red fox", "seed": 7, "num_outputs": 2, "aspect_ratio": "16:9", "output_format": "png"}
    first = client.run("black-forest-labs/flux-schnell", input=inp)
    again = client.run("black-forest-labs/flux-schnell", input=inp)
    other = client.run("black-forest-labs/flux-schnell", input={**inp, "seed": 8})
    assert len(first) == 2 and all(isinstance(u, str) for u in first)  # http: URLs stay plain strings
    images = [Image.open(io.BytesIO(fetch(u))) for u in first]
    assert [im.format for im in images] == ["PNG", "PNG"] and images[0].size == (64, 36)
    assert fetch(first[0]) == fetch(again[0]) != fetch(other[0])
    assert fetch(first[1]) == fetch(other[0])  # output i uses seed + i
    webp = client.run("black-forest-labs/flux-schnell", input={"prompt": "x"})
    assert Image.open(io.BytesIO(fetch(webp[0]))).format == "WEBP"
    preds = list(server.predictions.values())
    assert {p["version"] for p in preds} == {"hidden"} and {p["status"] for p in preds} == {"succeeded"}
    assert server.stats.predictions_created == 4


@pytest.mark.parametrize(
    "factory", [sdxl_model, video_model, audio_model, tts_model, mesh_model, i2v_model], ids=lambda f: f.__name__
)
def test_model_factory_round_trip(server: ReplicateServer, factory: Any) -> None:
    import trimesh

    model = next(m for m in server.models if m.ref == factory().ref)
    client = make_client(server)
    ref = model.ref if model.official else f"{model.ref}:{model.version}"
    inputs: dict[str, dict[str, Any]] = {
        "stability-ai/sdxl": {"prompt": "fox", "width": 768, "height": 1024, "seed": 1, "num_outputs": 2},
        "minimax/video-01": {"prompt": "the fox runs"},
        "meta/musicgen": {"prompt": "calm piano", "duration": 2, "model_version": "large"},
        "jaaari/kokoro-82m": {"text": "Hello there, fox.", "voice": "am_adam"},
        # A file handle input is uploaded through POST /v1/files by the client and replaced by its URL.
        "firtoz/trellis": {"images": [io.BytesIO(media.png_bytes())], "generate_model": True, "seed": 3},
        "wavespeedai/wan-2.1-i2v-480p": {"image": io.BytesIO(media.png_bytes(seed=2)), "prompt": "go"},
    }
    out = client.run(ref, input=inputs[model.ref])
    if model.ref == "stability-ai/sdxl":
        assert [Image.open(io.BytesIO(fetch(u))).size for u in out] == [(48, 64), (48, 64)]
    elif model.ref in ("minimax/video-01", "wavespeedai/wan-2.1-i2v-480p"):
        assert out.endswith(".mp4")
        assert decode_mp4(fetch(out))[1:3] == (48, 64)
    elif model.ref == "meta/musicgen":
        assert decode_wav(fetch(out)) == (16000, 8000, 1)
    elif model.ref == "jaaari/kokoro-82m":
        frames, rate, _ = decode_wav(fetch(out))
        assert rate == 8000 and frames > 0.5 * 8000
    else:
        mesh: Any = trimesh.load(io.BytesIO(fetch(out["model_file"])), file_type="glb", force="mesh")
        assert len(mesh.faces) == 12
        assert decode_mp4(fetch(out["combined_video"]))[0] == 8
        assert out["color_video"] is None
    if model.ref in ("firtoz/trellis", "wavespeedai/wan-2.1-i2v-480p"):
        assert server.stats.files_uploaded == 1
        sent = list(server.predictions.values())[-1]["input"]
        uploaded = sent["images"][0] if "trellis" in model.ref else sent["image"]
        assert server.resolve_uri(uploaded) == media.png_bytes(seed=0 if "trellis" in model.ref else 2)
    (pred,) = server.predictions.values()
    assert pred["status"] == "succeeded" and pred["metrics"]["predict_time"] > 0
    assert pred["version"] == ("hidden" if model.official else model.version)


async def test_async_run_and_async_create(server: ReplicateServer) -> None:
    client = make_client(server)
    out = await client.async_run("black-forest-labs/flux-schnell", input={"prompt": "x", "seed": 1})
    assert Image.open(io.BytesIO(fetch(out[0]))).size == (64, 64)
    pred = await client.predictions.async_create(version=f"stability-ai/sdxl:{SDXL_VERSION}", input={"prompt": "x"})
    assert pred.status == "starting"
    await pred.async_wait()
    assert pred.status == "succeeded" and pred.progress is not None and pred.progress.percentage == 1.0


def test_create_forms(server: ReplicateServer) -> None:
    flux = server.get_model("black-forest-labs/flux-schnell")
    with api(server) as http:
        forms = [
            ("/predictions", {"version": SDXL_VERSION}),
            ("/predictions", {"version": f"stability-ai/sdxl:{SDXL_VERSION}"}),
            ("/predictions", {"version": "black-forest-labs/flux-schnell"}),
            ("/predictions", {"version": flux.version}),
        ]
        created = [http.post(path, json={**extra, "input": {"prompt": "x"}}) for path, extra in forms]
        assert [r.status_code for r in created] == [201] * 4
        assert [r.json()["version"] for r in created] == [SDXL_VERSION, SDXL_VERSION, "hidden", flux.version]
        # Only official models run by name.
        assert http.post("/models/stability-ai/sdxl/predictions", json={"input": {}}).status_code == 404
        assert http.post("/predictions", json={"version": "stability-ai/sdxl", "input": {}}).status_code == 422
        # The version endpoint refuses the body keys it does not know.
        assert (
            http.post(
                "/models/black-forest-labs/flux-schnell/predictions", json={"version": "x", "input": {}}
            ).status_code
            == 422
        )
    assert server.stats.predictions_created == 4


# -- sync mode, polling, timing -------------------------------------------------------------------------


def test_prefer_wait_returns_the_result_and_plain_create_returns_starting(server: ReplicateServer) -> None:
    with api(server) as http:
        sync = http.post(
            "/models/black-forest-labs/flux-schnell/predictions",
            json={"input": {"prompt": "x"}},
            headers={"Prefer": "wait"},
        )
        plain = http.post("/models/black-forest-labs/flux-schnell/predictions", json={"input": {"prompt": "x"}})
        assert sync.status_code == plain.status_code == 201
        assert sync.headers["Preference-Applied"] == "wait=1"  # 60 s on the model clock: serve waits whole seconds
        assert sync.json()["status"] == "succeeded" and len(sync.json()["output"]) == 1
        body = plain.json()
        assert "Preference-Applied" not in plain.headers
        assert body["status"] == "starting" and body["output"] is None and body["logs"] == ""
        assert "started_at" not in body and "completed_at" not in body
        assert len(body["id"]) == 26 and body["id"].isalnum() and body["id"].islower()
        assert plain.headers["Location"] == body["urls"]["get"] == f"{server.url}/predictions/{body['id']}"
        assert body["urls"]["cancel"].endswith("/cancel")
        deadline = time.monotonic() + 5
        while (got := http.get(body["urls"]["get"]).json())["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert got["status"] == "succeeded" and got["completed_at"] >= got["started_at"] >= got["created_at"]
        assert "100%|" in got["logs"]
    assert server.records[body["id"]].prefer_wait_s is None
    assert server.records[sync.json()["id"]].prefer_wait_s == 60


def test_long_model_outlives_the_wait_window() -> None:
    # 5 model seconds of wait are one real second (serve waits whole seconds); the model runs three.
    with ReplicateServer(models=[slow_model(run_seconds=300)], time_scale=0.01) as server:
        with api(server) as http:
            t0 = time.monotonic()
            resp = http.post(
                "/models/acme/slow/predictions", json={"input": {"prompt": "x"}}, headers={"Prefer": "wait=5"}
            )
            waited = time.monotonic() - t0
        assert resp.status_code == 202 and resp.headers["Preference-Applied"] == "wait=1"
        assert resp.json()["status"] == "starting" and resp.json()["output"] is None
        assert waited >= 0.9  # it held the request for the window
        assert server.predictions[resp.json()["id"]]["status"] == "processing"
        # The official client sees `starting`, so it polls until the end.
        client = make_client(server)
        out = client.run("acme/slow", input={"prompt": "y"}, wait=2)
        assert len(out) == 1 and fetch(out[0])
        assert server.wait_for(resp.json()["id"], 5)["status"] == "succeeded"


def test_failed_predictions(server: ReplicateServer) -> None:
    def boom(inp: dict[str, Any], srv: ReplicateServer) -> Any:
        raise RuntimeError("CUDA out of memory")

    server.add_model(image_model(owner="acme", name="broken", fail_with="NSFW content detected"))
    server.add_model(FakeModel("acme", "boom", output=boom, official=True, run_seconds=0.5))
    client = make_client(server)
    with pytest.raises(replicate.exceptions.ModelError) as err:
        client.run("acme/broken", input={"prompt": "x"})
    assert err.value.prediction.error == "NSFW content detected"
    pred = client.models.predictions.create("acme/boom", input={})
    pred.wait()
    assert pred.status == "failed" and pred.error == "CUDA out of memory" and pred.output is None


# -- cancel and Cancel-After -----------------------------------------------------------------------------


def test_cancel(server: ReplicateServer) -> None:
    server.add_model(slow_model())
    client = make_client(server)
    pred = client.models.predictions.create("acme/slow", input={"prompt": "x"})
    time.sleep(0.05)
    pred.cancel()
    assert pred.status == "canceled" and pred.completed_at
    assert server.stats.cancels == 1
    time.sleep(0.7)  # past the model's natural end: the timers were stopped
    pred.reload()
    assert pred.status == "canceled" and pred.output is None
    with api(server) as http:
        again = http.post(f"/predictions/{pred.id}/cancel")
        assert again.status_code == 200 and again.json()["status"] == "canceled"
        assert http.post("/predictions/nope/cancel").status_code == 404


def test_cancel_after(server: ReplicateServer) -> None:
    server.add_model(slow_model())
    with api(server) as http:
        running = http.post(
            "/models/acme/slow/predictions", json={"input": {"prompt": "x"}}, headers={"Cancel-After": "5s"}
        ).json()
        bare = http.post(
            "/models/acme/slow/predictions", json={"input": {"prompt": "x"}}, headers={"Cancel-After": "10"}
        ).json()
        fine = http.post(
            "/models/acme/slow/predictions", json={"input": {"prompt": "x"}}, headers={"Cancel-After": "1m30s"}
        ).json()
        too_short = http.post(
            "/models/acme/slow/predictions", json={"input": {"prompt": "x"}}, headers={"Cancel-After": "2s"}
        )
    assert too_short.status_code == 422
    assert "deadline" in running
    assert server.records[running["id"]].cancel_after_s == 5
    assert server.records[bare["id"]].cancel_after_s == 10
    assert server.records[fine["id"]].cancel_after_s == 90
    assert server.wait_for(running["id"], 5)["status"] == "canceled"
    assert server.wait_for(bare["id"], 5)["status"] == "canceled"
    assert server.wait_for(fine["id"], 5)["status"] == "succeeded"  # ended before its 90 s deadline
    assert server.stats.predictions_created == 3 and server.stats.cancels == 0


# -- webhooks ------------------------------------------------------------------------------------------


class Receiver:
    """A tiny loopback webhook receiver."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.cond:
                    receiver.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    receiver.cond.notify_all()
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook?x=1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait(self, n: int, timeout: float = 5.0) -> list[tuple[dict[str, str], bytes]]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.calls) >= n, timeout), self.calls
            return list(self.calls)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.close()


def test_webhooks_are_signed_and_filtered(server: ReplicateServer, receiver: Receiver) -> None:
    client = make_client(server)
    secret = client.webhooks.default.secret()
    assert secret.key == server.webhook_secret and secret.key.startswith("whsec_")
    assert len(base64.b64decode(secret.key.split("_", 1)[1])) == 24

    pred = client.models.predictions.create(
        "black-forest-labs/flux-schnell",
        input={"prompt": "x"},
        webhook=receiver.url,
        webhook_events_filter=["start", "logs", "completed"],
    )
    # start, log deliveries (serve throttles them: the first always goes, later ones at most one
    # per interval), completed.
    first = json.loads(receiver.wait(3)[-1][1])
    deadline = time.monotonic() + 5
    while json.loads(receiver.calls[-1][1])["status"] != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    calls = list(receiver.calls)
    bodies = [json.loads(body) for _, body in calls]
    assert first["id"] == pred.id
    assert [b["status"] for b in bodies] == ["processing"] * (len(bodies) - 1) + ["succeeded"]
    assert 3 <= len(bodies) <= 1 + 5 + 1  # start, 1..5 logs (a seed line and 4 steps), completed
    assert {b["id"] for b in bodies} == {pred.id} and bodies[-1]["output"]
    assert "Using seed" in bodies[1]["logs"] and "100%|" in bodies[-1]["logs"]
    for headers, body in calls:
        assert verify_webhook(headers, body, server.webhook_secret)
        replicate.webhook.Webhooks.validate(headers=headers, body=body.decode(), secret=secret, tolerance=60)
    assert len({h["webhook-id"] for h, _ in calls}) == len(calls)

    # Default filter: one delivery when the prediction completes with its output.
    before = len(calls)
    client.models.predictions.create("black-forest-labs/flux-schnell", input={"prompt": "y"}, webhook=receiver.url)
    receiver.wait(before + 1)
    # The server counts a delivery once it has read the receiver's answer, a moment after it arrived.
    deadline = time.monotonic() + 30
    while server.stats.webhooks_sent < before + 1:
        assert time.monotonic() < deadline, server.stats.webhooks_sent
        time.sleep(0.01)
    assert len(receiver.calls) == before + 1 and json.loads(receiver.calls[-1][1])["status"] == "succeeded"
    assert server.stats.webhooks_sent == before + 1 and server.stats.webhooks_failed == 0

    with api(server) as http:
        public = http.post(
            "/models/black-forest-labs/flux-schnell/predictions",
            json={"input": {"prompt": "x"}, "webhook": "https://example.com/hook"},
        )
    assert public.status_code == 422 and server.stats.predictions_created == 2


# -- fault injection -----------------------------------------------------------------------------------


def test_429_on_creates_creates_nothing(server: ReplicateServer) -> None:
    server.faults = FaultPlan(create_429_every=2, retry_after="3")
    with api(server) as http:
        codes = []
        for _ in range(4):
            resp = http.post("/models/black-forest-labs/flux-schnell/predictions", json={"input": {"prompt": "x"}})
            codes.append(resp.status_code)
            if resp.status_code == 429:
                assert resp.headers["Retry-After"] == "3"
                assert resp.json()["detail"].startswith("Request was throttled.")
    assert codes == [201, 429, 201, 429]
    assert server.stats.predictions_created == 2 == len(server.predictions)
    assert server.stats.faults_injected == 2
    assert server.stats.count("POST", "/v1/models/{owner}/{name}/predictions") == 4
    # The official client never retries a POST: the 429 surfaces.
    client = make_client(server)
    client.models.predictions.create("black-forest-labs/flux-schnell", input={"prompt": "x"})
    with pytest.raises(replicate.exceptions.ReplicateError) as err:
        client.models.predictions.create("black-forest-labs/flux-schnell", input={"prompt": "x"})
    assert err.value.status == 429
    assert server.stats.predictions_created == 3


def test_5xx_on_gets(server: ReplicateServer) -> None:
    client = make_client(server)
    pred = client.models.predictions.create("black-forest-labs/flux-schnell", input={"prompt": "x"})
    server.faults = FaultPlan(get_503_every=2)
    with api(server) as http:
        codes = [http.get(f"/predictions/{pred.id}").status_code for _ in range(4)]
    assert codes == [200, 503, 200, 503]
    # The official client retries GETs on 503 by itself.
    for _ in range(3):
        assert client.predictions.get(pred.id).id == pred.id
    server.faults = FaultPlan(get_500_every=1)
    with api(server) as http:
        assert http.get(f"/predictions/{pred.id}").status_code == 500
        assert http.get("/account").status_code == 500
    assert server.stats.faults_injected >= 5


def test_dropped_connections(server: ReplicateServer) -> None:
    body = {"input": {"prompt": "x"}}
    path = "/models/black-forest-labs/flux-schnell/predictions"
    server.faults = FaultPlan(drop_every=1)
    with api(server) as http:
        with pytest.raises(httpx.TransportError):
            http.post(path, json=body)
        with pytest.raises(httpx.TransportError):
            http.get("/account")
    assert server.stats.predictions_created == 0 and server.stats.dropped == 2

    server.faults = FaultPlan(drop_every=1, drop_after_create=True)
    with api(server) as http, pytest.raises(httpx.TransportError):
        http.post(path, json=body, headers={"Idempotency-Key": "k1", "Prefer": "wait"})
    assert server.stats.predictions_created == 1 and server.stats.creates_by_key == {"k1": 1}
    (pred,) = server.predictions.values()
    assert server.wait_for(pred["id"], 5)["status"] == "succeeded"

    server.faults = FaultPlan(drop_every=2)
    with api(server) as http:
        assert http.get("/account").status_code == 200
        with pytest.raises(httpx.TransportError):
            http.get("/account")
        assert http.get("/account").status_code == 200  # a fresh connection after the drop
    assert server.stats.dropped == 4


def test_402_and_latency(server: ReplicateServer) -> None:
    server.faults = FaultPlan(status_402=True)
    with api(server) as http:
        resp = http.post("/models/black-forest-labs/flux-schnell/predictions", json={"input": {"prompt": "x"}})
        assert resp.status_code == 402 and resp.json()["title"] == "Billing required"
        server.faults = FaultPlan(latency_s=0.1)
        t0 = time.monotonic()
        assert http.get("/account").status_code == 200
        assert time.monotonic() - t0 >= 0.1
    assert server.stats.predictions_created == 0


# -- files and listing ---------------------------------------------------------------------------------


def test_files(server: ReplicateServer) -> None:
    data = bytes(range(256)) * 40 + b"\r\n--boundary\r\n"
    with api(server) as http:
        created = http.post(
            "/files",
            files={"content": ("blob.bin", data, "application/octet-stream")},
            data={"metadata": json.dumps({"k": "v"})},
        )
        assert created.status_code == 201
        obj = created.json()
        assert obj["size"] == len(data) and obj["name"] == "blob.bin" and obj["metadata"] == {"k": "v"}
        # serve keeps an upload under an unguessable URL, readable without the token.
        assert obj["urls"]["get"].startswith(f"{server.origin}/uploads/{obj['id']}/")
        assert obj["checksums"]["md5"] == obj["etag"]
        assert httpx.get(obj["urls"]["get"]).content == data
        ranged = httpx.get(obj["urls"]["get"], headers={"Range": "bytes=0-9"})
        assert ranged.status_code == 206 and ranged.content == data[:10]
        assert server.resolve_uri(obj["urls"]["get"]) == data
    client = make_client(server)
    up = client.files.create(io.BytesIO(b"hello"), filename="hi.txt")
    assert up.size == 5 and up.content_type == "text/plain"
    assert httpx.get(up.urls["get"]).content == b"hello"
    assert server.stats.files_uploaded == 2
    assert [f.id for f in client.files.list()] == [up.id, obj["id"]] and client.files.get(up.id).size == 5


def test_list_predictions_paginates() -> None:
    with ReplicateServer(time_scale=0.01, page_size=3) as server:
        with api(server) as http:
            ids = [
                http.post("/predictions", json={"version": SDXL_VERSION, "input": {"prompt": str(i)}}).json()["id"]
                for i in range(7)
            ]
        client = make_client(server)
        seen = [p.id for page in replicate.pagination.paginate(client.predictions.list) for p in page]
        assert seen == ids[::-1]


# -- load ----------------------------------------------------------------------------------------------


async def test_200_concurrent_predictions() -> None:
    models = [image_model(run_seconds=4.0, log_steps=2)]
    # httpx's pool bookkeeping grows with the square of its size, so 8 clients of 40 connections keep the
    # client cheap while the server still holds all 200 requests open at once.
    limits = httpx.Limits(max_connections=40, max_keepalive_connections=40)
    with ReplicateServer(models=models, time_scale=0.1) as server:
        clients = [httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=30, limits=limits) for _ in range(8)]

        async def one(i: int) -> tuple[dict[str, Any], bytes]:
            http = clients[i % len(clients)]
            resp = await http.post(
                "/models/black-forest-labs/flux-schnell/predictions",
                json={"input": {"prompt": f"p{i}", "seed": i, "output_format": "png"}},
                headers={"Prefer": "wait" if i % 2 else "wait=1"},  # wait=1: 1 s (serve waits whole seconds)
            )
            pred = resp.json()
            # serve answers a sync create that is not done in its window with 202 and `starting`.
            assert (resp.status_code, pred["status"] == "starting") in ((201, False), (202, True))
            while pred["status"] not in ("succeeded", "failed", "canceled"):
                await asyncio.sleep(0.05)
                pred = (await http.get(pred["urls"]["get"])).json()
            image = (await http.get(pred["output"][0])).content
            return pred, image

        try:
            results = await asyncio.gather(*(one(i) for i in range(200)))
        finally:
            for http in clients:
                await http.aclose()
    assert all(pred["status"] == "succeeded" for pred, _ in results)
    assert len({pred["id"] for pred, _ in results}) == 200
    assert server.stats.predictions_created == 200
    assert server.stats.peak_in_flight >= 50  # held open at once (the raw test below goes to 300)
    assert results[5][1] == media.image_bytes(64, 64, seed=5, fmt="png", quality=80)
    assert len({image for _, image in results}) == 200


async def test_300_concurrent_keep_alive_connections(server: ReplicateServer) -> None:
    request = f"GET /v1/account HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    conns = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", server.port) for _ in range(300)))

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> dict[str, Any]:
        writer.write(request)
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        assert head.startswith("HTTP/1.1 200")
        length = next(int(h.split(":")[1]) for h in head.split("\r\n") if h.lower().startswith("content-length"))
        return dict(json.loads(await reader.readexactly(length)))

    for _ in range(2):  # the second round reuses every connection
        bodies = await asyncio.gather(*(one(r, w) for r, w in conns))
        assert [b["username"] for b in bodies] == ["test"] * 300
    for _, writer in conns:
        writer.close()
    assert server.stats.count("GET", "/v1/account") == 600


def test_default_models_are_distinct_and_stop_is_idempotent() -> None:
    refs = [m.ref for m in default_models()]
    assert len(refs) == len(set(refs)) == 7
    server = ReplicateServer(models=[]).start()
    with api(server) as http:
        assert http.get("/models").json()["results"] == []
        server.stop()
        server.stop()
        with pytest.raises(httpx.TransportError):
            http.get("/account")
