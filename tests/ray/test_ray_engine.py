"""Batch on a real local Ray instance: same outputs as the local engine, resume, a killed worker, clean shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import ray
from PIL import Image

import mediagen as mg
from mediagen.batch import MANIFEST, BatchReport, run_batch
from mediagen.ray import Generate, RayEngine, RaySettings
from mediagen.ray.batch import run_batch_on_ray
from mediagen_testkit.ftp_server import FtpServer

pytestmark = pytest.mark.slow

FTP_PASSWORD = "ftp-secret-0123456789"

# Two workers on a 2-core machine: half a CPU each leaves room for the driver.
SETTINGS = RaySettings(workers=2, cpus_per_worker=0.5, requests_per_worker=4)


def _lines(path: Path, count: int = 8) -> Path:
    path.write_text(
        "\n".join(
            json.dumps({"prompt": f"a fox, take {i}", "seed": 100 + i, "width": 32, "height": 32, "steps": 2})
            for i in range(count)
        )
        + "\n"
    )
    return path


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.int16)


def _manifest(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]


def test_ray_batch_equals_local_and_a_rerun_does_no_new_work(
    tmp_path: Path, tiny_model: Callable[[str], Path], no_ray_left_behind: None
) -> None:
    model = f"diffusers:{tiny_model('sd')}"
    jsonl = _lines(tmp_path / "in.jsonl")
    url = f"file://{tmp_path}/ray"  # outputs, manifest and resume through a URL, as on a shared filesystem

    async def main() -> tuple[BatchReport, BatchReport, BatchReport]:
        async with mg.Client() as client:
            local = await run_batch(jsonl, tmp_path / "local", client=client, model=model, concurrency=4)
            on_ray = await run_batch_on_ray(jsonl, url, client=client, settings=SETTINGS, model=model)
            again = await run_batch_on_ray(jsonl, url, client=client, settings=SETTINGS, model=model)
        return local, on_ray, again

    local, on_ray, again = asyncio.run(main())
    assert local.ok and on_ray.ok, (local.failed, on_ray.failed)
    assert local.done == on_ray.done == list(range(1, 9))
    for number in range(1, 9):
        a, b = _pixels(tmp_path / "local" / f"{number:05d}.png"), _pixels(tmp_path / "ray" / f"{number:05d}.png")
        differ = np.abs(a - b)
        # Same seed, same image; batching may move a value by float noise only.
        assert differ.max() <= 2 and (differ > 0).mean() <= 0.01, (number, differ.max())
    assert again.done == [] and again.skipped == list(range(1, 9))
    entries = _manifest(tmp_path / "ray")
    assert sorted((e["line"], e["files"]) for e in entries) == [(n, [f"{n:05d}.png"]) for n in range(1, 9)]
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == sorted(
        [MANIFEST, *(f"{n:05d}.png" for n in range(1, 9))]
    )


def test_a_worker_killed_mid_run_loses_no_line_and_duplicates_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_ray_left_behind: None
) -> None:
    # Slow fake generations (0.3 s each), so a worker is certainly busy when it is killed.
    config = tmp_path / "slow.toml"
    config.write_text("[providers.test]\nsteps = 6\nstep_delay_s = 0.05\n")
    monkeypatch.setenv("MEDIAGEN_CONFIG", str(config))  # the workers read it too
    jsonl = _lines(tmp_path / "in.jsonl", count=12)
    out = tmp_path / "out"
    killed: list[int] = []

    async def main() -> tuple[BatchReport, int]:
        async with mg.Client() as client, RayEngine(SETTINGS) as engine:
            victim = engine.worker_pids[0]

            def on_line_done(number: int, error: str | None) -> None:
                if not killed:
                    os.kill(victim, signal.SIGKILL)
                    killed.append(victim)

            report = await run_batch(
                jsonl,
                out,
                client=client,
                model="test:fake",
                concurrency=8,
                on_line_done=on_line_done,
                generate=lambda request, model: engine.generate(request, model),
            )
            return report, engine.restarts

    report, restarts = asyncio.run(main())
    assert killed and restarts >= 1
    assert report.ok and report.done == list(range(1, 13)), report.failed
    entries = _manifest(out)
    assert sorted(int(e["line"]) for e in entries) == list(range(1, 13))  # each line recorded once
    files = sorted(p.name for p in out.iterdir() if p.name != MANIFEST)
    assert files == [f"{n:05d}.png" for n in range(1, 13)]
    for name in files:
        with Image.open(out / name) as img:
            img.load()


def test_generate_in_ray_data_writes_files_that_match_the_client(
    tmp_path: Path, tiny_model: Callable[[str], Path], no_ray_left_behind: None
) -> None:
    model = f"diffusers:{tiny_model('sd')}"
    rows = [{"prompt": f"an owl {i}", "seed": 7 + i, "width": 32, "height": 32, "steps": 2} for i in range(3)]
    rows.append({"prompt": "", "seed": 1})  # invalid: reported on its row, the others still run
    (tmp_path / "ftp").mkdir()
    # The workers (other processes) write over a real socket to a filesystem URL, as to a cluster's store.
    with FtpServer(tmp_path / "ftp", password=FTP_PASSWORD) as server:
        ray.init(
            address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False
        )
        try:
            ds = ray.data.from_items(rows)
            out = ds.map_batches(
                Generate,
                fn_constructor_kwargs={"model": model, "output": f"{server.url}/run"},
                concurrency=1,
                batch_size=4,
                num_cpus=1,
            ).take_all()
        finally:
            ray.shutdown()
    by_prompt = {row["prompt"]: row for row in out}
    assert by_prompt[""]["error"] and not list(by_prompt[""]["paths"])
    with mg.SyncClient() as client:
        for i in range(3):
            row = by_prompt[f"an owl {i}"]
            assert row["error"] is None and list(row["seeds"]) == [7 + i]
            (url,) = list(row["paths"])
            assert url.startswith(f"ftp://127.0.0.1:{server.port}/run/") and FTP_PASSWORD not in url
            alone = client.image(f"an owl {i}", model=model, seed=7 + i, width=32, height=32, steps=2)
            expected = np.asarray(alone.artifacts[0].to_pil().convert("RGB"), dtype=np.int16)
            assert np.abs(_pixels(tmp_path / "ftp" / "run" / url.rsplit("/", 1)[-1]) - expected).max() <= 2
    assert len(list((tmp_path / "ftp" / "run").iterdir())) == 3  # the three files, no temporary left


def test_an_unusable_output_url_fails_before_ray_starts(tmp_path: Path, no_ray_left_behind: None) -> None:
    jsonl = _lines(tmp_path / "in.jsonl", count=1)

    async def main() -> None:
        async with mg.Client() as client:
            await run_batch_on_ray(jsonl, "nosuch://bucket/run", client=client, settings=SETTINGS, model="test:x")

    with pytest.raises(mg.ConfigError, match="'nosuch'"):
        asyncio.run(main())
    assert not ray.is_initialized()
