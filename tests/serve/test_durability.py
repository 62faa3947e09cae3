"""A real `mediagen serve` process, killed with SIGKILL and started again on the same database."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mediagen_testkit.serve_server import TEST_TOKEN

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")

# The console script of this environment: a real `mediagen serve` process.
_MEDIAGEN = str(Path(sys.executable).with_name("mediagen"))


def _start(
    tmp_path: Path, db: Path, *, host: str = "127.0.0.1", token: str | None = TEST_TOKEN
) -> tuple[subprocess.Popen[str], str]:
    config = tmp_path / "mediagen.toml"
    config.write_text("[providers.test]\nsteps = 60\nstep_delay_s = 0.05\n")
    env = {**os.environ, "MEDIAGEN_CONFIG": str(config)}
    env.pop("MEDIAGEN_SERVE_TOKEN", None)
    if token is not None:
        env["MEDIAGEN_SERVE_TOKEN"] = token
    command = [_MEDIAGEN, "serve", "--host", host, "--port", "0"]
    command += ["--model", "image:acme/fox=test:fake", "--db", str(db)]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    deadline = time.monotonic() + 120
    seen = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        seen.append(line)
        match = re.search(r"listening on (http://\S+)", line)
        if match:
            url = match[1]
            while time.monotonic() < deadline:  # the port is bound before the app has started
                try:
                    if httpx.get(url + "/healthz").status_code == 200:
                        return process, url
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
    process.kill()
    raise AssertionError("the server did not start:\n" + "".join(seen))


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TEST_TOKEN}"}


def test_finished_predictions_survive_kill_9_and_running_ones_fail(tmp_path: Path) -> None:
    db = tmp_path / "state" / "predictions.db"
    process, url = _start(tmp_path, db)
    try:
        done = httpx.post(
            f"{url}/v1/models/acme/fox/predictions",
            json={"input": {"prompt": "a fox", "seed": 4}},
            headers={**_auth(), "Prefer": "wait=60"},
            timeout=90,
        ).json()
        assert done["status"] == "succeeded"
        before = httpx.get(done["output"][0]).content
        running = httpx.post(
            f"{url}/v1/models/acme/fox/predictions", json={"input": {"prompt": "slow"}}, headers=_auth()
        ).json()
        while httpx.get(f"{url}/v1/predictions/{running['id']}", headers=_auth()).json()["status"] != "processing":
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    process, url = _start(tmp_path, db)
    try:
        again = httpx.get(f"{url}/v1/predictions/{done['id']}", headers=_auth()).json()
        assert again["status"] == "succeeded"
        assert again["output"][0].startswith(url)  # built from the new server's address, not stored
        assert httpx.get(again["output"][0]).content == before
        lost = httpx.get(f"{url}/v1/predictions/{running['id']}", headers=_auth()).json()
        assert lost["status"] == "failed"
        assert "server stopped while this prediction was running" in lost["error"]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def test_a_public_address_without_a_token_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "mediagen.toml"
    config.touch()
    env = {**os.environ, "MEDIAGEN_CONFIG": str(config)}
    env.pop("MEDIAGEN_SERVE_TOKEN", None)

    result = subprocess.run(
        [_MEDIAGEN, "serve", "--host", "0.0.0.0", "--port", "0", "--model", "image:acme/fox=test:fake"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0 without a token" in result.stderr


def test_sigterm_lets_a_running_prediction_finish(tmp_path: Path) -> None:
    db = tmp_path / "state" / "predictions.db"
    process, url = _start(tmp_path, db)
    try:
        running = httpx.post(
            f"{url}/v1/models/acme/fox/predictions", json={"input": {"prompt": "slow"}}, headers=_auth()
        ).json()
        while httpx.get(f"{url}/v1/predictions/{running['id']}", headers=_auth()).json()["status"] != "processing":
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once it has shut down gracefully: the exit status says SIGTERM.
        assert process.wait(timeout=60) in (0, -signal.SIGTERM)

    process, url = _start(tmp_path, db)
    try:
        finished = httpx.get(f"{url}/v1/predictions/{running['id']}", headers=_auth()).json()
        assert finished["status"] == "succeeded"  # within shutdown_grace_s, so not cut off
        assert httpx.get(finished["output"][0]).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
