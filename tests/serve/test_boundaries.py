"""The server's boundaries: tokens, tenants, sizes, limits, inputs it refuses, metrics, health."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from PIL import Image

from mediagen.serve import BindRefused, ServeSettings, TokenSpec, check_bind, parse_model_spec
from mediagen_testkit.serve_server import OTHER_TOKEN, TEST_TOKEN, ServeServer, fake_model


def _auth(token: str = TEST_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _create(server: ServeServer, input: dict[str, object], token: str = TEST_TOKEN, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/models/acme/fox/predictions",
        json={"input": input},
        headers={**_auth(token), **headers},
        timeout=60,
    )


def test_bind_policy() -> None:
    open_settings = ServeSettings()
    check_bind("127.0.0.1", open_settings)
    check_bind("::1", open_settings)
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.com"):
        with pytest.raises(BindRefused):
            check_bind(host, open_settings)
    check_bind("0.0.0.0", ServeSettings(tokens=[TokenSpec.from_token("a", "x" * 32)]))


def test_model_specs() -> None:
    assert parse_model_spec("acme/sd=diffusers:/m/sd").chain == "diffusers:/m/sd"
    assert parse_model_spec("acme/r=replicate:a/b,diffusers:/m").chain == ["replicate:a/b", "diffusers:/m"]
    assert parse_model_spec("video:acme/v=test:fake").modality == "video"
    for bad in ("acme=test:fake", "acme/sd", "weird:acme/sd=test:fake"):
        with pytest.raises(ValueError):
            parse_model_spec(bad)


def test_tenants_see_only_their_own_predictions(start_server: Callable[..., ServeServer]) -> None:
    server = start_server(models=[fake_model("fox", "image")])
    mine = _create(server, {"prompt": "a fox"}, Prefer="wait").json()

    assert httpx.get(f"{server.url}/v1/predictions/{mine['id']}", headers=_auth(OTHER_TOKEN)).status_code == 404
    assert httpx.post(f"{server.url}/v1/predictions/{mine['id']}/cancel", headers=_auth(OTHER_TOKEN)).status_code == 404
    theirs = httpx.get(f"{server.url}/v1/predictions", headers=_auth(OTHER_TOKEN)).json()
    assert theirs["results"] == []
    # The output itself needs no token: its URL is the permission; a wrong key is not found.
    url = mine["output"][0]
    assert httpx.get(url).status_code == 200
    assert httpx.get(url.replace("/outputs/" + mine["id"] + "/", "/outputs/" + mine["id"] + "/x")).status_code == 404


def test_inputs_the_server_refuses(start_server: Callable[..., ServeServer], tmp_path: object) -> None:
    server = start_server(models=[fake_model("fox", "image")])

    cases = [
        ({"prompt": "x", "image": "http://169.254.169.254/latest/meta-data"}, "input.image"),
        ({"prompt": "x", "image": "/etc/passwd"}, "input.image"),
        ({"prompt": "x", "loras": ["/etc/some-adapter"]}, "input"),
        ({"prompt": "x", "options": {"anything": 1}}, "input"),
        ({"prompt": "x", "n": 9}, "input.n"),
        ({"prompt": "x", "width": 33}, "input.width"),
        ({}, "input"),
    ]
    for given, field in cases:
        response = _create(server, given)
        assert response.status_code == 422, given
        assert response.json()["invalid_fields"][0]["field"] == field, given

    # A data: URL is accepted, and so is the URL of an output of this server.
    png = io.BytesIO()
    Image.new("RGB", (16, 16), (0, 255, 0)).save(png, format="PNG")
    data_url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    first = _create(server, {"prompt": "x", "image": data_url}, Prefer="wait").json()
    assert first["status"] == "succeeded"
    chained = _create(server, {"prompt": "y", "image": first["output"][0]}, Prefer="wait").json()
    assert chained["status"] == "succeeded"


def test_size_rate_and_concurrency_limits(start_server: Callable[..., ServeServer]) -> None:
    from mediagen._config import Config

    server = start_server(
        models=[fake_model("fox", "image")],
        config=Config(providers={"test": {"steps": 200, "step_delay_s": 0.05}}),
        max_body_bytes=4096,
        tokens=[
            TokenSpec.from_token("tester", TEST_TOKEN, max_concurrency=1),
            TokenSpec.from_token("other", OTHER_TOKEN, requests_per_minute=6),
        ],
    )

    big = _create(server, {"prompt": "x" * 10_000})
    assert big.status_code == 413
    first = _create(server, {"prompt": "a"})
    assert first.status_code == 201
    second = _create(server, {"prompt": "b"})
    assert second.status_code == 429 and int(second.headers["retry-after"]) >= 1
    httpx.post(f"{server.url}/v1/predictions/{first.json()['id']}/cancel", headers=_auth())
    statuses = [_create(server, {"prompt": "c"}, OTHER_TOKEN).status_code for _ in range(3)]
    assert statuses[0] == 201 and 429 in statuses  # 6 a minute: a burst of 1


def test_health_and_metrics(start_server: Callable[..., ServeServer]) -> None:
    server = start_server(models=[fake_model("fox", "image")])
    _create(server, {"prompt": "a fox"}, Prefer="wait")
    httpx.get(f"{server.url}/v1/predictions", headers=_auth("wrong-token-0000000000"))

    health = httpx.get(f"{server.url}/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok", "models": 1, "queued": 0, "running": 0}
    assert httpx.get(f"{server.url}/metrics").status_code == 401  # tokens are set: metrics need one
    text = httpx.get(f"{server.url}/metrics", headers=_auth()).text
    assert (
        'mediagen_serve_requests_total{method="POST",route="/v1/models/{owner}/{name}/predictions",status="201"} 1.0'
        in text
    )
    assert 'mediagen_serve_predictions_total{model="acme/fox",status="succeeded"} 1.0' in text
    assert 'mediagen_serve_errors_total{kind="unauthenticated"} 2.0' in text  # the wrong token, then no token
    assert "mediagen_serve_queue_depth 0.0" in text


def test_a_token_budget_is_enforced_from_the_price_table(start_server: Callable[..., ServeServer]) -> None:
    from mediagen._config import Config

    server = start_server(
        models=[fake_model("fox", "image")],
        config=Config(prices={"test": {"images": 1.0}}),
        tokens=[TokenSpec.from_token("tester", TEST_TOKEN, budget=2.0)],
    )

    statuses = [_create(server, {"prompt": "a fox"}, Prefer="wait").status_code for _ in range(3)]

    assert statuses == [201, 201, 402]
    refused = _create(server, {"prompt": "a fox"})
    assert refused.json()["title"] == "Billing required" and "budget" in refused.json()["detail"]


def test_settings_from_the_config_and_a_token_file(tmp_path: Path) -> None:
    import hashlib

    from mediagen.serve.command import settings_from

    tokens = tmp_path / "tokens.toml"
    digest = hashlib.sha256(b"y" * 20).hexdigest()
    tokens.write_text(
        f'[tokens.alice]\ntoken = "{"x" * 20}"\nrequests_per_minute = 30\n\n[tokens.ci]\nsha256 = "{digest}"\n'
    )
    tokens.chmod(0o600)
    table = {
        "retention_days": 3,
        "models": {
            "acme/sd": "diffusers:/m/sd",
            "acme/robust": ["replicate:a/b", "diffusers:/m/sd"],
            "acme/voice": {"model": "test:fake", "modality": "audio", "expose": ["options"]},
        },
    }

    settings = settings_from(models=["acme/sd=test:fake"], token_file=str(tokens), config_table=table)

    by_ref = {m.ref: m for m in settings.models}
    assert by_ref["acme/sd"].chain == "test:fake"  # the command line wins
    assert by_ref["acme/robust"].chain == ["replicate:a/b", "diffusers:/m/sd"]
    assert by_ref["acme/voice"].modality == "audio" and by_ref["acme/voice"].expose == {"options"}
    assert settings.retention_days == 3
    assert [t.name for t in settings.tokens] == ["alice", "ci"]
    assert settings.tokens[0].requests_per_minute == 30 and settings.tokens[1].sha256 == digest
    tokens.write_text('[tokens.short]\ntoken = "abc"\n')
    with pytest.raises(ValueError, match="too short"):
        settings_from(token_file=str(tokens))
