"""`mediagen serve --engine ray --replicas 2`: the official replicate client gets a decodable image."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import replicate
from PIL import Image

pytestmark = pytest.mark.slow

TOKEN = "ray-serve-test-token-0123456789"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[str], log: Path) -> None:
    # Ray, its Serve controller and two replicas loading a model: minutes on a busy 2-core machine.
    for _ in range(600):
        if proc.poll() is not None:
            pytest.fail(f"mediagen serve exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"mediagen serve --engine ray never became ready:\n{log.read_text()[-4000:]}")


def test_serve_on_ray_answers_the_official_replicate_client_with_progress(tmp_path: Path, tiny_model: Callable[[str], Path]) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    env = dict(os.environ, MEDIAGEN_SERVE_TOKEN=TOKEN, HF_HUB_OFFLINE="1")
    command = [
        str(Path(sys.executable).parent / "mediagen"),
        "serve",
        "--engine",
        "ray",
        "--replicas",
        "2",
        "--cpus-per-replica",
        "0.5",
        "--port",
        str(port),
        "--db",
        str(tmp_path / "predictions.db"),
        "-m",
        f"acme/tiny-sd=diffusers:{tiny_model('sd')}",
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        _wait_ready(url, proc, log)
        assert httpx.get(f"{url}/v1/predictions", timeout=30).status_code == 401  # the same auth as serve
        client = replicate.Client(api_token=TOKEN, base_url=url)
        inputs = {"prompt": "a red fox", "seed": 7, "width": 32, "height": 32, "steps": 2}
        first = client.run("acme/tiny-sd", input=inputs)
        second = client.run("acme/tiny-sd", input=inputs)
        images = []
        for output in (first, second):
            response = httpx.get(str(output[0]), timeout=60)
            response.raise_for_status()
            images.append(np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB")))
        assert images[0].shape == (32, 32, 3)
        assert np.abs(images[0].astype(int) - images[1].astype(int)).max() <= 2  # same seed, whichever replica
        # The replica's steps cross the deployment handle: the prediction's progress is as on one machine.
        prediction = client.models.predictions.create("acme/tiny-sd", input=inputs)
        prediction.wait()
        assert prediction.status == "succeeded", prediction.error
        assert prediction.progress is not None and prediction.progress.current == prediction.progress.total == 2
    finally:
        proc.send_signal(signal.SIGTERM)  # as a supervisor stops it
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()[-4000:]
