"""`mediagen batch`: concurrent, resumable, failures by line number, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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


# -- issue 12: a batch survives bad lines, edits, clashing names and a full disk ------------------------


def test_finding_6_batch_bad_lines_each_get_an_outcome_and_the_rest_run(tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    good = json.dumps({"prompt": "ok", "width": 16, "height": 16}).encode()
    prompts.write_bytes(
        b"\xef\xbb\xbf"
        + good
        + b"\n"  # 1: a UTF-8 BOM before the first line
        + b'{"prompt": "x", "model": 123}\n'  # 2: model not a string
        + b'{"prompt": "caf\xe9"}\n'  # 3: Latin-1, not UTF-8
        + b'{"prompt": 5}\n'  # 4: prompt not a string
        + b'{"type": ["image"], "prompt": "x"}\n'  # 5: type not a string
        + b'{"name": {"a": 1}, "prompt": "x"}\n'  # 6: name not a string
        + b"[1, 2]\n"  # 7: not an object
        + good
        + b"\r\n"  # 8: fine (CRLF)
        + b'{"prompt": "x", "model": "diffusers:~nobody/m\\u0000"}\n'  # 9: a model string nothing can run
    )
    proc = batch([str(prompts), "-m", "test:fake", "-o", str(tmp_path / "o"), "--json"])
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["done"] == [1, 8]
    failed = report["failed"]
    assert sorted(failed, key=int) == ["2", "3", "4", "5", "6", "7", "9"]
    assert '"model" must be a model string' in failed["2"]
    assert "not valid UTF-8 (byte 0xe9" in failed["3"]
    assert "prompt" in failed["4"]
    assert '"type" must be a string' in failed["5"] and '"name" must be a string' in failed["6"]
    assert "JSON object" in failed["7"]


async def test_finding_5_batch_resume_after_inserting_and_editing_lines_redoes_exactly_those(tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    lines = [{"prompt": f"p{i}", "seed": i, "width": 16, "height": 16} for i in range(5)]
    prompts.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    out = tmp_path / "o"
    async with mg.Client() as client:
        first = await run_batch(prompts, out, client=client, model="test:x")
        assert first.done == [1, 2, 3, 4, 5]
        before = {p.name: p.read_bytes() for p in out.glob("*.png")}

        # Insert a line at the top and edit what was line 3 (now line 4).
        lines[2]["prompt"] = "p2, edited"
        edited = [{"prompt": "new", "seed": 99, "width": 16, "height": 16}, *lines]
        prompts.write_text("\n".join(json.dumps(line) for line in edited) + "\n")
        second = await run_batch(prompts, out, client=client, model="test:x")

    assert second.done == [1, 4] and second.skipped == [2, 3, 5, 6] and second.ok
    # The new lines took free names: "00001" and "00004" belong to the old lines 1 and 4 (skipped now).
    assert {p.name for p in second.files} == {"00001_2.png", "00004_2.png"}
    # Nothing was overwritten (the superseded output of the edited line stays until removed).
    assert all((out / n).read_bytes() == before[n] for n in before)
    manifest = [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]
    assert len(manifest) == 7 and all(len(e["key"]) > 30 for e in manifest)


async def test_finding_5_batch_lines_with_the_same_name_do_not_overwrite_each_other(tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    names = ["cat", "dog", "cat", "Dog", "bird", "cat"]
    prompts.write_text(
        "\n".join(json.dumps({"prompt": f"p{i}", "name": n, "width": 16, "height": 16}) for i, n in enumerate(names))
        + "\n"
    )
    out = tmp_path / "o"
    out.mkdir()
    (out / "bird.png").write_bytes(b"the user's own file")
    async with mg.Client() as client:
        report = await run_batch(prompts, out, client=client, model="test:x")
    assert report.done == [1, 2]
    assert "already used by line 1" in report.failed[3] and "already used by line 2" in report.failed[4]
    assert "already used by line 1" in report.failed[6]
    assert "taken" in report.failed[5]  # a file this batch did not write is never replaced
    assert (out / "bird.png").read_bytes() == b"the user's own file"
    assert sorted(p.name for p in out.glob("*.png")) == ["bird.png", "cat.png", "dog.png"]


async def test_finding_6_batch_full_disk_on_the_manifest_stops_cleanly_with_a_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import mediagen.batch as batch_module

    real = batch_module._append_text
    appended: list[str] = []

    def filling_up(out: Any, name: str, text: str) -> None:
        if len(appended) == 2:  # the disk is full from the third record on
            raise OSError(errno.ENOSPC, "No space left on device", name)
        appended.append(text)
        real(out, name, text)

    monkeypatch.setattr(batch_module, "_append_text", filling_up)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"p{i}", "width": 16, "height": 16}) for i in range(6)) + "\n")
    out = tmp_path / "o"
    async with mg.Client() as client:
        report = await run_batch(prompts, out, client=client, model="test:x", concurrency=1)

    assert report.done == [1, 2]
    assert "could not be recorded" in report.failed[3]
    assert report.not_run == [4, 5, 6]
    assert report.stopped is not None and "No space left" in report.stopped
    assert not report.ok
    assert report.outcomes()[3].startswith("failed:") and report.outcomes()[6] == "not run"
    # Line 3's files were removed: not recorded means not done, so a resume redoes it cleanly.
    assert sorted(p.name for p in out.glob("*.png")) == ["00001.png", "00002.png"]

    monkeypatch.setattr(batch_module, "_append_text", real)  # space freed: resume
    async with mg.Client() as client:
        resumed = await run_batch(prompts, out, client=client, model="test:x")
    assert resumed.skipped == [1, 2] and resumed.done == [3, 4, 5, 6] and resumed.ok


async def test_finding_5_batch_an_edited_named_line_replaces_only_its_own_superseded_file(tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "a", "seed": 1, "name": "cat", "width": 16, "height": 16}) + "\n")
    out = tmp_path / "o"
    async with mg.Client() as client:
        await run_batch(prompts, out, client=client, model="test:x")
        old = (out / "cat.png").read_bytes()
        prompts.write_text(json.dumps({"prompt": "a", "seed": 2, "name": "cat", "width": 16, "height": 16}) + "\n")
        report = await run_batch(prompts, out, client=client, model="test:x")
        again = await run_batch(prompts, out, client=client, model="test:x")
    assert report.done == [1] and (out / "cat.png").read_bytes() != old
    assert again.skipped == [1] and again.done == []


async def test_finding_5_batch_a_default_name_never_takes_a_name_another_line_asked_for(tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        json.dumps({"prompt": "a", "width": 16, "height": 16})
        + "\n"
        + json.dumps({"prompt": "b", "name": "00001", "width": 16, "height": 16})
        + "\n"
    )
    async with mg.Client() as client:
        report = await run_batch(prompts, tmp_path / "o", client=client, model="test:x", concurrency=2)
    assert report.ok and sorted(p.name for p in report.files) == ["00001.png", "00001_2.png"]
    manifest = {
        json.loads(t)["line"]: json.loads(t)["files"] for t in (tmp_path / "o" / MANIFEST).read_text().splitlines()
    }
    assert manifest == {1: ["00001_2.png"], 2: ["00001.png"]}
