"""No silent overwrite, atomic writes (issue 12, finding 5): what `save()` and the CLI do to files."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

import mediagen as mg
from mediagen._files import write_atomic, write_new
from mediagen.artifacts import name_outputs
from mediagen.cli import main


def image(value: int, size: int = 16) -> mg.Image:
    return mg.Image.from_array(np.full((size, size, 3), value, dtype=np.uint8))


def pixel(path: Path) -> int:
    with PIL.Image.open(path) as im:
        return int(np.asarray(im.convert("RGB"))[0, 0, 0])


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_save_refuses_to_replace_a_named_file(tmp_path: Path) -> None:
    target = tmp_path / "fox.png"
    image(10).save(target)
    with pytest.raises(mg.OutputExistsError, match="overwrite=True") as info:
        image(200).save(target)
    assert isinstance(info.value, FileExistsError) and info.value.path == str(target)
    assert pixel(target) == 10  # untouched
    assert image(200).save(target, overwrite=True) == target
    assert pixel(target) == 200
    assert leftovers(tmp_path) == []


async def test_asave_refuses_too(tmp_path: Path) -> None:
    target = await image(10).asave(tmp_path / "fox.png")
    with pytest.raises(mg.OutputExistsError):
        await image(20).asave(target)
    await image(20).asave(target, overwrite=True)
    assert pixel(target) == 20


def test_saving_into_a_directory_takes_the_next_free_name(tmp_path: Path) -> None:
    first = image(10).save(tmp_path)
    second = image(20).save(tmp_path)
    third = image(30).save(str(tmp_path) + os.sep)
    assert [first.name, second.name, third.name] == ["image.png", "image-1.png", "image-2.png"]
    assert [pixel(p) for p in (first, second, third)] == [10, 20, 30]
    # overwrite=True replaces the derived name instead.
    assert image(40).save(tmp_path, overwrite=True) == first and pixel(first) == 40


def test_seeded_outputs_of_one_result_get_unique_names(tmp_path: Path) -> None:
    # Every Replicate prediction names its file out-0.webp; a local backend's are all image.png.
    shared = [mg.Image(image(v).read(), metadata={"filename": "out-0.png"}) for v in (10, 20, 30)]
    name_outputs(shared)
    assert [a.metadata["filename"] for a in shared] == ["out-0.png", "out-1.png", "out-2.png"]
    assert sorted(p.name for p in (a.save(tmp_path) for a in shared)) == ["out-0.png", "out-1.png", "out-2.png"]
    unnamed = [image(1), image(2), mg.Audio.from_samples(np.zeros(800, dtype=np.float32), 8000)]
    name_outputs(unnamed)
    assert [a.metadata["filename"] for a in unnamed] == ["image-0.png", "image-1.png", "audio.wav"]


async def test_client_results_save_every_output(tmp_path: Path) -> None:
    async with mg.Client() as client:
        res = await client.image("a fox", model="test:fake", n=3, seed=7, width=16, height=16)
    paths = [a.save(tmp_path) for a in res.artifacts]
    assert len({p.name for p in paths}) == 3 and all(p.is_file() for p in paths)


def test_planted_symlink_does_not_redirect_the_write(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    outputs = tmp_path / "out"
    outputs.mkdir()
    link = outputs / "fox.png"
    link.symlink_to(victim)
    with pytest.raises(mg.OutputExistsError):
        image(10).save(link)
    # Even told to overwrite, the write replaces the link itself; the file it pointed at is untouched.
    image(10).save(link, overwrite=True)
    assert not link.is_symlink() and pixel(link) == 10
    assert victim.read_text() == "precious"
    # A dangling link at a derived name is skipped, never followed.
    (outputs / "image.png").symlink_to(tmp_path / "elsewhere.png")
    assert image(20).save(outputs).name == "image-1.png"
    assert not (tmp_path / "elsewhere.png").exists()


def test_temp_files_are_random_exclusive_and_beside_the_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, int]] = []
    real_open = os.open

    def spy(path: str | os.PathLike[str], flags: int, mode: int = 0o777, **kw: object) -> int:
        if str(path).endswith(".tmp"):
            seen.append((str(path), flags))
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", spy)
    image(1).save(tmp_path / "a.png")
    image(2).save(tmp_path / "b.png")
    monkeypatch.undo()
    assert len(seen) == 2 and seen[0][0] != seen[1][0]
    for path, flags in seen:
        assert Path(path).parent == tmp_path and Path(path).name.startswith(".")
        assert flags & os.O_EXCL and flags & os.O_CREAT and flags & os.O_NOFOLLOW
        assert str(os.getpid()) not in Path(path).name  # not guessable from the pid


def test_failed_write_leaves_no_temp_file(tmp_path: Path) -> None:
    tmp_path = tmp_path / "out"  # the fixture's own directory holds the test's mediagen.toml
    tmp_path.mkdir()
    target = tmp_path / "clip.bin"

    def writer() -> object:
        yield b"x" * 1000
        raise OSError(28, "No space left on device")  # a full disk half-way

    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, writer())  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
    # An existing file stays as it was when the replacing write fails.
    target.write_bytes(b"old")
    with pytest.raises(OSError):
        write_atomic(target, writer(), overwrite=True)  # type: ignore[arg-type]
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_failed_encode_in_save_leaves_nothing(tmp_path: Path) -> None:
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    broken = mg.Image(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(Exception):  # noqa: B017 - PIL's own error; what matters is what is left on disk
        broken.save(tmp_path / "x.jpg")
    assert list(tmp_path.iterdir()) == []


def test_concurrent_saves_to_one_path_leave_one_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "fox.png"
    payloads = {v: image(v, size=256).read() for v in range(0, 250, 25)}
    errors: list[BaseException] = []
    start = threading.Barrier(len(payloads))

    def save(value: int) -> None:
        try:
            start.wait()
            mg.Image(payloads[value]).save(target, overwrite=True)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(v,)) for v in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert target.read_bytes() in payloads.values()  # one writer's whole file, not a mix
    assert leftovers(tmp_path) == []


def test_concurrent_saves_without_overwrite_claim_the_name_once(tmp_path: Path) -> None:
    target = tmp_path / "fox.png"
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def save(value: int) -> None:
        start.wait()
        try:
            image(value).save(target)
            outcomes.append("saved")
        except mg.OutputExistsError:
            outcomes.append("refused")

    threads = [threading.Thread(target=save, args=(v * 20,)) for v in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused"] * 7 + ["saved"]
    # Into a directory, concurrent saves all succeed under distinct names.
    names: list[str] = []
    threads = [
        threading.Thread(target=lambda v=v: names.append(image(v).save(str(tmp_path / "d") + "/").name))
        for v in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(names)) == 8 and leftovers(tmp_path / "d") == []


def test_write_new_moves_on_and_never_replaces(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"1")
    assert write_new(tmp_path, "a.bin", b"2").name == "a-1.bin"
    assert (tmp_path / "a.bin").read_bytes() == b"1"


# -- the CLI ---------------------------------------------------------------------------------------


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().out


def test_cli_refuses_to_replace_without_overwrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["image", "a fox", "-m", "test:fake", "--seed", "1", "--size", "16x16"]
    code, out = run_cli([*args, "-o", "fox.png", "--json"], capsys)
    assert code == 0, out
    before = (tmp_path / "fox.png").read_bytes()
    code, out = run_cli([*args, "--seed", "2", "-o", "fox.png", "--json"], capsys)
    assert code == 2
    assert json.loads(out)["error"] == "OutputExistsError"
    assert (tmp_path / "fox.png").read_bytes() == before
    code, out = run_cli([*args, "--seed", "2", "-o", "fox.png", "--overwrite", "--json"], capsys)
    assert code == 0 and (tmp_path / "fox.png").read_bytes() != before
    # Default names move on instead of replacing.
    names = [json.loads(run_cli([*args, "--json"], capsys)[1])["files"][0] for _ in range(2)]
    assert [Path(n).name for n in names] == ["image.png", "image-1.png"]
