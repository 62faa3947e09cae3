"""The compile cache: torch's portable compiled artifacts kept in a file only we write and read.

The file checks run without compiling anything. One test compiles a one-line function with the CPU
inductor backend in a subprocess and loads its artifacts in a second, fresh process whose own torch
cache is empty: the second finds the graph in the artifacts (counted by torch), instead of compiling.
It needs a C++ compiler and is skipped, saying so, where there is none.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mediagen_local.compile_cache import ARTIFACTS_MAGIC, CompileCache, use_inductor_cache_dir

KEY = {"model": "tiny", "dtype": "float32"}


def _valid_file(tmp_path: Path, payload: bytes) -> CompileCache:
    cache = CompileCache(KEY, root=tmp_path / "compile")
    cache.root.mkdir(mode=0o700, parents=True)
    cache.root.parent.chmod(0o700)
    cache._write(payload)
    return cache


def test_no_file_loads_nothing_quietly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = CompileCache(KEY, root=tmp_path / "compile")
    with caplog.at_level(logging.WARNING, logger="mediagen"):
        assert cache.load() is False
    assert not caplog.records
    # The directories it made are private.
    assert stat.S_IMODE(cache.root.stat().st_mode) == 0o700
    assert stat.S_IMODE(cache.root.parent.stat().st_mode) == 0o700


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("garbage", "not a mediagen"),
        ("truncated", "truncated header"),
        ("other-key", "another model"),
        ("bad-checksum", "checksum mismatch"),
        ("bad-version", "format 32513"),
        ("torch-rejects", "torch could not read"),
    ],
)
def test_foreign_or_corrupt_file_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str, reason: str
) -> None:
    cache = _valid_file(tmp_path, b"not torch's format at all" * 10)
    data = bytearray(cache.path.read_bytes())
    if damage == "garbage":
        # Longer than the header, so that it is the magic bytes that refuse it.
        data = bytearray(b"\x80\x04pickle bytes that must never reach pickle.loads" * 4)
    elif damage == "truncated":
        data = data[: len(ARTIFACTS_MAGIC) + 4]
    elif damage == "other-key":
        other = CompileCache({"model": "another"}, root=tmp_path / "compile")
        other._write(b"x" * 40)
        data = bytearray(other.path.read_bytes())
    elif damage == "bad-checksum":
        data[-1] ^= 0xFF
    elif damage == "bad-version":
        data[len(ARTIFACTS_MAGIC)] ^= 0x7F
    cache.path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="mediagen"):
        assert cache.load() is False
    messages = [r.getMessage() for r in caplog.records]
    assert any("compile cache" in m and "ignored" in m and reason in m for m in messages), messages


def test_symlink_in_place_of_the_file_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    real = _valid_file(tmp_path / "elsewhere", b"payload")
    cache = CompileCache(KEY, root=tmp_path / "compile")
    cache.root.mkdir(mode=0o700, parents=True)
    cache.root.parent.chmod(0o700)
    cache.path.symlink_to(real.path)
    with caplog.at_level(logging.WARNING, logger="mediagen"):
        assert cache.load() is False
    assert any("cannot open it safely" in r.getMessage() for r in caplog.records)


def test_open_directory_is_closed_and_file_written_private(tmp_path: Path) -> None:
    root = tmp_path / "compile"
    root.mkdir(mode=0o777)
    root.chmod(0o777)
    cache = CompileCache(KEY, root=root)
    cache._write(b"payload")  # the cache makes its own directories private (no chmod here)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE(cache.root.stat().st_mode) == 0o700
    assert stat.S_IMODE(cache.path.stat().st_mode) == 0o600
    assert cache._read() == b"payload"


def test_oversized_file_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mediagen_local import compile_cache

    cache = _valid_file(tmp_path, b"y" * 100)
    monkeypatch.setattr(compile_cache, "MAX_ARTIFACTS_BYTES", 10)
    with pytest.raises(ValueError, match="cap"):
        cache._read()


def test_inductor_dir_follows_the_user_when_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "theirs"))
    assert use_inductor_cache_dir(tmp_path / "compile") is None
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "theirs")
    # torch writes its default into the variable on first use (importing diffusers does): not a choice.
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())
    chosen = use_inductor_cache_dir(tmp_path / "compile")
    assert chosen == str(tmp_path / "compile" / "inductor")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == chosen
    assert stat.S_IMODE(Path(chosen).stat().st_mode) == 0o700


_CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import torch
    from torch._dynamo.utils import counters
    from mediagen_local.compile_cache import CompileCache

    cache = CompileCache({"fn": "sin+1"}, root=Path(sys.argv[1]))
    loaded = cache.load()
    fn = torch.compile(lambda x: torch.sin(x) * 2 + 1, fullgraph=True, dynamic=False)
    y = fn(torch.arange(8, dtype=torch.float32))
    saved = cache.save_if_new()
    print(json.dumps({
        "loaded": loaded, "saved": saved, "y": y.tolist(),
        "inductor": dict(counters["inductor"]), "aot": dict(counters["aot_autograd"]),
    }))
    """
)


def _child(tmp_path: Path, inductor_dir: Path) -> dict[str, object]:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(inductor_dir)}
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "compile")],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="no C++ compiler for inductor")
def test_artifacts_let_a_fresh_process_skip_compiling(tmp_path: Path) -> None:
    first = _child(tmp_path, tmp_path / "inductor-1")
    assert first["loaded"] is False and first["saved"] is True
    assert first["inductor"].get("fxgraph_cache_miss", 0) >= 1  # type: ignore[attr-defined]
    # A fresh process, and torch's own cache empty: only our file can supply the compiled graph.
    second = _child(tmp_path, tmp_path / "inductor-2")
    assert second["loaded"] is True
    assert second["inductor"].get("fxgraph_cache_hit", 0) >= 1  # type: ignore[attr-defined]
    assert second["inductor"].get("fxgraph_cache_miss", 0) == 0  # type: ignore[attr-defined]
    assert second["aot"].get("autograd_cache_miss", 0) == 0  # type: ignore[attr-defined]
    assert second["saved"] is False  # nothing new: the file is left as it is
    assert second["y"] == first["y"]
