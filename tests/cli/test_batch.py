"""`mediagen batch`: concurrent, resumable, failures by line number, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mediagen as mg
from mediagen.batch import MANIFEST, parse_lines, run_batch
from mediagen.testing import FakeBackend

CLI = Path(sys.executable).with_name("mediagen")


def write_lines(path: Path, count: int, bad: int) -> None:
    lines = [json.dumps({"prompt": f"scene {i}", "seed": i, "width": 16, "height": 16}) for i in range(1, count + 1)]
    lines[bad - 1] = json.dumps({"prompt": "bad", "width": 13})  # not a multiple of 8
    path.write_text("\n".join(lines) + "\n")


def batch(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), "batch", *args], capture_output=True, text=True, timeout=300, env=dict(os.environ))


def test_fifty_lines_one_bad_then_a_rerun_does_only_the_missing_work(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    write_lines(prompts, 50, bad=17)
    out = tmp_path / "out"

    first = batch([str(prompts), "-m", "test:fake", "-o", str(out), "--json"])
    assert first.returncode == 1
    report = json.loads(first.stdout)
    assert len(report["done"]) == 49 and report["skipped"] == []
    assert list(report["failed"]) == ["17"] and "width" in report["failed"]["17"]
    images = sorted(p.name for p in out.glob("*.png"))
    assert len(images) == 49 and "00017.png" not in images
    assert mg.Image(path=out / "00001.png").size == (16, 16)

    # Remove two outputs: a re-run regenerates exactly those and skips the rest.
    (out / "00003.png").unlink()
    (out / "00040.png").unlink()
    again = batch([str(prompts), "-m", "test:fake", "-o", str(out), "--json"])
    assert again.returncode == 1  # line 17 is still bad
    report = json.loads(again.stdout)
    assert report["done"] == [3, 40] and len(report["skipped"]) == 47

    # Fix line 17: the third run does that line only, and succeeds.
    lines = prompts.read_text().splitlines()
    lines[16] = json.dumps({"prompt": "fixed", "width": 16, "height": 16, "seed": 17})
    prompts.write_text("\n".join(lines) + "\n")
    third = batch([str(prompts), "-m", "test:fake", "-o", str(out)])
    assert third.returncode == 0, third.stderr
    assert "1 done, 49 already done, 0 failed" in third.stdout


def test_human_output_names_failed_lines(tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "ok", "width": 16, "height": 16}\nnot json\n{"type": "sculpture", "prompt": "x"}\n')
    proc = batch([str(prompts), "-m", "test:fake", "-o", str(tmp_path / "o")])
    assert proc.returncode == 1
    assert "line 2: not valid JSON" in proc.stderr
    assert "line 3: unknown modality 'sculpture'" in proc.stderr


async def test_run_batch_is_concurrent_and_names_outputs(tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        "\n".join(
            json.dumps({"prompt": f"p{i}", "name": f"../escape-{i}", "width": 16, "height": 16, "n": 2})
            for i in range(6)
        )
        + "\n"
    )
    slow = FakeBackend(steps=2, step_delay_s=0.05)
    async with mg.Client(backends={"test": slow}) as client:
        report = await run_batch(prompts, tmp_path / "o", client=client, model="test:x", concurrency=6)
    assert report.ok and len(report.files) == 12
    # A name from the input file cannot climb out of the output directory.
    assert all(f.parent == tmp_path / "o" for f in report.files)
    assert (tmp_path / "o" / "escape-0-1.png").exists()
    manifest = [json.loads(line) for line in (tmp_path / "o" / MANIFEST).read_text().splitlines()]
    assert sorted(e["line"] for e in manifest) == [1, 2, 3, 4, 5, 6]


def test_parse_lines_skips_blanks_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('\n# a comment\n{"prompt": "a"}\n\n{"type": "audio", "prompt": "b", "duration_s": -1}\n')
    lines = parse_lines(path)
    assert [line.number for line in lines] == [3, 5]
    assert lines[0].error is None and lines[1].error is not None and "duration_s" in lines[1].error


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_failing_backend_lines_are_reported(tmp_path: Path, concurrency: int) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"p{i}"}) for i in range(3)) + "\n")
    broken = FakeBackend(error=mg.GenerationFailedError("out of memory"))
    async with mg.Client(backends={"test": broken}) as client:
        report = await run_batch(prompts, tmp_path / "o", client=client, model="test:x", concurrency=concurrency)
    assert sorted(report.failed) == [1, 2, 3] and all("out of memory" in v for v in report.failed.values())
    assert not (tmp_path / "o" / MANIFEST).exists()
