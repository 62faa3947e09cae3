"""The official `fal_client` against the loopback fal queue: the fake speaks what the real client expects.

`fal_client` builds `https://` queue URLs only, from `FAL_QUEUE_RUN_HOST` read at import, so the
fake serves https here with a throw-away self-signed certificate that the client is told to trust
(`SSL_CERT_FILE`, honoured by httpx), and the client runs in a child process with that environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mediagen_testkit.fal_server import FalServer, expected_image

pytest.importorskip("fal_client")

CHILD = r"""
import asyncio, json, sys
import fal_client

async def main():
    client = fal_client.AsyncClient(key=sys.argv[1])
    out = {}
    handle = await client.submit("fal-ai/flux/schnell", {"prompt": "a fox", "seed": 9, "output_format": "png"})
    out["request_id"] = handle.request_id
    updates = []
    async for status in handle.iter_events(with_logs=True, interval=0.02):
        updates.append(type(status).__name__)
    out["updates"] = updates
    out["result"] = await handle.get()
    slow = await client.submit("fal-ai/flux/dev", {"prompt": "slow"})
    await slow.cancel()
    out["cancelled"] = slow.request_id
    try:
        await client.submit("fal-ai/trellis", {})
    except fal_client.client.FalClientHTTPError as exc:
        out["invalid"] = exc.status_code
    print(json.dumps(out))

asyncio.run(main())
"""


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[FalServer]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a throw-away certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    with FalServer(time_scale=0.01, certfile=str(cert), keyfile=str(key)) as server:
        server.cert = str(cert)  # type: ignore[attr-defined]
        yield server


@pytest.mark.slow
def test_the_official_client_runs_submit_status_result_cancel(tls_server: FalServer) -> None:
    server = tls_server
    server.apps["fal-ai/flux/dev"].run_s = 3000  # 30 s at this scale: cancelled long before
    host = server.url.removeprefix("https://")
    env = {**os.environ, "FAL_QUEUE_RUN_HOST": host, "SSL_CERT_FILE": server.cert}  # type: ignore[attr-defined]
    env.pop("FAL_KEY", None)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, server.key], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])

    assert out["updates"][-1] == "Completed"
    image = out["result"]["images"][0]
    assert image["content_type"] == "image/png"
    assert server.file_bytes(image["url"]) == expected_image(9)
    assert server.stats.cancels[out["cancelled"]] == 1
    assert out["invalid"] == 422
    # The client polled status under owner/alias and submitted to the full app id.
    assert server.stats.by_route["POST submit"] == 3 and server.stats.by_route["GET status"] >= 1
