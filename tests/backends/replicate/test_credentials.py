"""Issue 12, findings 1 and 8: the token goes only where the user sent it, and never comes back in text.

Finding 1: a `mediagen.toml` in the working directory could set `[providers.replicate] base_url`, and
the CLI run there sent `Bearer r8_...` to it; lost-answer recovery followed a page's `next` link, with
auth, to any origin. Finding 8: a server echoing the token in a 401 body put it in `str(error)` and in
the CLI's `--json` output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import mediagen as mg
from mediagen.backend import RunContext
from mediagen_testkit.replicate_server import ReplicateServer, image_model

pytest.importorskip("replicate")
from mediagen_replicate import ReplicateBackend

CLI = Path(sys.executable).with_name("mediagen")
FLUX = "black-forest-labs/flux-schnell"
# Shaped like no known token pattern: only knowing its value can hide it.
TOKEN = "mgtest-Credential-7f3a9c51e2d04b68"


class _Collector(BaseHTTPRequestHandler):
    """A loopback server that records every request and its Authorization header."""

    seen: list[tuple[str, str | None]] = []

    def _record(self) -> None:
        _Collector.seen.append((f"{self.command} {self.path}", self.headers.get("Authorization")))
        body = b'{"results": [], "next": null}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _record

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    _Collector.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def run_cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args], cwd=cwd, capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )


def test_finding_1_a_cwd_config_cannot_send_the_token_to_its_endpoint(tmp_path: Path, collector: str) -> None:
    (tmp_path / "mediagen.toml").write_text(f'[providers.replicate]\nbase_url = "{collector}/v1"\n')
    env = {"REPLICATE_API_TOKEN": TOKEN, "XDG_CONFIG_HOME": str(tmp_path / "home-config")}
    env_without = {k: v for k, v in os.environ.items() if k not in ("MEDIAGEN_CONFIG", "REPLICATE_BASE_URL")}

    proc = subprocess.run(
        [str(CLI), "image", "a fox", "-m", f"replicate:{FLUX}", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**env_without, **env},
    )

    assert proc.returncode != 0
    error = json.loads(proc.stdout)
    assert error["error"] == "ConfigError"
    assert "base_url" in error["message"] and "MEDIAGEN_TRUST_CWD_CONFIG=1" in error["message"]
    assert _Collector.seen == []  # nothing, let alone the token, went there
    assert TOKEN not in proc.stdout + proc.stderr


def test_finding_1_opting_in_to_the_cwd_config_is_explicit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mediagen.toml").write_text('[providers.replicate]\nbase_url = "http://127.0.0.1:9/v1"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MEDIAGEN_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home-config"))
    with pytest.raises(mg.ConfigError, match="MEDIAGEN_CONFIG="):
        mg.load_config()
    monkeypatch.setenv("MEDIAGEN_TRUST_CWD_CONFIG", "1")
    assert mg.load_config().providers["replicate"]["base_url"] == "http://127.0.0.1:9/v1"
    monkeypatch.delenv("MEDIAGEN_TRUST_CWD_CONFIG")
    monkeypatch.setenv("MEDIAGEN_CONFIG", str(tmp_path / "mediagen.toml"))  # naming it is trusting it
    assert mg.load_config().providers["replicate"]["base_url"] == "http://127.0.0.1:9/v1"


async def test_finding_1_a_next_link_to_another_origin_is_never_followed(collector: str) -> None:
    class Redirecting(ReplicateServer):
        def lose_create_answer(self, number: int) -> bool:
            return True  # created, and its answer lost

        def rewrite_list(self, page: dict[str, Any], number: int) -> dict[str, Any]:
            return {"results": [], "next": f"{collector}/v1/predictions?cursor=1"}

    with Redirecting(token=TOKEN, time_scale=0.01, models=[image_model()]) as server:
        backend = ReplicateBackend(api_token=TOKEN, base_url=server.url, reconcile_delay_s=0, max_retries=2)
        try:
            with pytest.raises(mg.ProviderError, match="outside the configured endpoint") as info:
                await backend.run(mg.ImageRequest(prompt="x", seed=1, options={"wait": False}), FLUX, RunContext())
        finally:
            await backend.aclose()
    assert not info.value.retryable
    assert _Collector.seen == []
    assert server.stats.predictions_created == 1  # and the create was not sent again


def test_finding_1_same_origin_rules() -> None:
    from mediagen.safety import same_origin

    base = "https://api.replicate.com/v1"
    assert same_origin("/v1/predictions?cursor=2", base)
    assert same_origin("https://api.replicate.com/v1/predictions?cursor=2", base)
    assert same_origin("https://API.replicate.com:443/x", base)
    for other in (
        "http://api.replicate.com/v1/predictions",  # downgraded scheme
        "https://api.replicate.com:8443/v1/predictions",
        "https://api.replicate.com.evil.example/v1",
        "https://evil.example/v1/predictions",
        "//evil.example/v1/predictions",
        "https://user@evil.example/",
        "ftp://api.replicate.com/",
        "predictions?cursor=2",
        "https://[::1/",
    ):
        assert not same_origin(other, base), other


async def test_finding_8_a_token_echoed_in_a_401_body_is_redacted() -> None:
    with ReplicateServer(token="mgtest-the-right-one-000000", echo_token_in_errors=True, models=[image_model()]) as srv:
        backend = ReplicateBackend(api_token=TOKEN, base_url=srv.url)
        try:
            with pytest.raises(mg.AuthenticationError) as info:
                await backend.run(mg.ImageRequest(prompt="x"), FLUX, RunContext())
        finally:
            await backend.aclose()
    error = info.value
    assert "(got '***')" in (error.detail or "")  # the server did echo it; we hid it
    for text in (str(error), repr(error), error.detail or "", error.message):
        assert TOKEN not in text and "Credential-7f3a" not in text


def test_finding_8_the_cli_json_output_hides_an_echoed_token(tmp_path: Path) -> None:
    with ReplicateServer(token="mgtest-the-right-one-000000", echo_token_in_errors=True, models=[image_model()]) as srv:
        proc = run_cli(
            ["image", "a fox", "-m", f"replicate:{FLUX}", "--json"],
            cwd=tmp_path,
            env={"REPLICATE_API_TOKEN": TOKEN, "REPLICATE_BASE_URL": srv.url},
        )
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["error"] == "AuthenticationError" and "***" in out["message"]
    assert TOKEN not in proc.stdout + proc.stderr


def test_finding_8_redaction_is_generic_in_the_core() -> None:
    from mediagen.safety import redact_secrets, register_secret

    secret = "future-provider-key-5b1e90aa"
    register_secret(secret)  # what any provider does with the credentials it is given
    error = mg.ProviderError(f"echo: {secret}", detail=f"body said {secret}")
    assert secret not in str(error) and secret not in (error.detail or "")
    assert redact_secrets({"files": [f"/x/{secret}"], "n": 1}) == {"files": ["/x/***"], "n": 1}
