"""Output directories (`mediagen._outputs`): local paths and fsspec URLs, atomic, never over a file silently.

The remote cases are real: an FTP server on loopback (`mediagen_testkit.ftp_server`, a filesystem
with renames: temporary name, then move) and fsspec's in-memory store (one put, as object stores).
"""

from __future__ import annotations

import ftplib
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
from PIL import Image

import mediagen as mg
from mediagen._outputs import LocalDir, OutputDir, RemoteDir, open_output
from mediagen.batch import MANIFEST, run_batch
from mediagen_testkit.ftp_server import FtpServer

PASSWORD = "ftp-secret-0123456789"
CLI = Path(sys.executable).with_name("mediagen")


@pytest.fixture
def ftp(tmp_path: Path) -> Iterator[tuple[FtpServer, Path]]:
    root = tmp_path / "ftp-root"
    root.mkdir()
    with FtpServer(root, password=PASSWORD) as server:
        yield server, root


@pytest.fixture
def memory() -> Iterator[str]:
    url = "memory://mediagen-outputs-test"
    yield url
    fs = fsspec.filesystem("memory")
    if fs.exists(url):
        fs.rm(url, recursive=True)


@pytest.fixture(params=["local", "file-url", "ftp", "memory"])
def out(request: pytest.FixtureRequest, tmp_path: Path) -> OutputDir:
    kind = request.param
    if kind == "local":
        return open_output(tmp_path / "o")
    if kind == "file-url":
        return open_output(f"file://{tmp_path}/o")
    if kind == "ftp":
        server, _ = request.getfixturevalue("ftp")
        return open_output(f"{server.url}/runs/o")
    return open_output(request.getfixturevalue("memory") + "/o")


def test_a_write_never_replaces_a_file_unless_asked(out: OutputDir) -> None:
    out.prepare()
    first = out.write("a.png", b"first")
    with pytest.raises(mg.OutputExistsError):
        out.write("a.png", b"second")
    assert out.read("a.png") == b"first"
    assert out.write("a.png", b"third", overwrite=True) == first == out.location("a.png")
    assert out.read("a.png") == b"third" and out.read("missing.png") is None
    out.append(MANIFEST, "one\n")
    out.append(MANIFEST, "two\n")
    assert out.read(MANIFEST) == b"one\ntwo\n"
    # No temporary file is left behind by any of it.
    assert out.names() == {"a.png", MANIFEST}
    out.remove("a.png")
    out.remove("a.png")  # already gone: fine
    assert out.names() == {MANIFEST}
    assert PASSWORD not in str(first)


@pytest.mark.parametrize("name", ["../escape.png", "sub/dir.png", "..", "", " lead.png", "a\0b"])
def test_a_name_that_leaves_the_directory_is_refused(out: OutputDir, name: str) -> None:
    out.prepare()
    with pytest.raises(mg.InvalidRequestError):
        out.write(name, b"x")
    assert out.names() == set()


def test_file_urls_are_local_directories(tmp_path: Path) -> None:
    local = open_output(f"file://{tmp_path}/a%20b")
    assert isinstance(local, LocalDir) and local.path == tmp_path / "a b"
    assert isinstance(open_output(f"file://localhost{tmp_path}"), LocalDir)
    with pytest.raises(mg.ConfigError, match="another host"):
        open_output("file://fileserver/share/run")


def test_a_failed_remote_write_leaves_no_partial_file(tmp_path: Path) -> None:
    root = tmp_path / "ftp-root"
    root.mkdir()
    # Writes are allowed, renames are not: the temporary file lands, the move into place fails.
    with FtpServer(root, password=PASSWORD, perm="elradmwMT") as server:
        out = open_output(f"{server.url}/o")
        out.prepare()
        with pytest.raises(ftplib.error_perm, match="550") as caught:  # the refused rename
            out.write("a.png", b"bytes")
        assert PASSWORD not in str(caught.value)
        assert out.names() == set()
    assert list((root / "o").iterdir()) == []


def test_a_failed_local_write_leaves_the_target_as_it_was(tmp_path: Path) -> None:
    out = open_output(tmp_path / "o")
    out.prepare()
    (tmp_path / "o" / "a.png").mkdir()  # something that is not a file sits at the name
    with pytest.raises(OSError):
        out.write("a.png", b"bytes", overwrite=True)
    assert out.names() == {"a.png"} and (tmp_path / "o" / "a.png").is_dir()


def test_unusable_urls_fail_with_a_clear_error_and_no_credentials(
    ftp: tuple[FtpServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = ftp
    with pytest.raises(mg.ConfigError, match="'nosuch'"):
        open_output("nosuch://bucket/run")
    wrong = server.url.replace(PASSWORD, "wrong-password-0123456789")
    with pytest.raises(mg.ConfigError, match="cannot reach") as caught:
        open_output(f"{wrong}/o")
    assert "wrong-password" not in str(caught.value) and f"127.0.0.1:{server.port}" in str(caught.value)
    closed = f"ftp://u:{PASSWORD}@127.0.0.1:1/o"  # nothing listens on port 1
    with pytest.raises(mg.ConfigError, match="cannot reach") as caught:
        open_output(closed)
    assert PASSWORD not in str(caught.value)
    try:
        import s3fs  # noqa: F401
    except ImportError:
        with pytest.raises(mg.ConfigError, match="s3://"):
            open_output("s3://bucket/run")
    monkeypatch.setitem(sys.modules, "fsspec", None)  # as if fsspec were not installed
    with pytest.raises(mg.ConfigError, match=r"pip install 'mediagen\[ray\]'"):
        open_output("s3://bucket/run")


@pytest.mark.parametrize("where", ["ftp", "memory"])
async def test_batch_writes_to_a_url_and_a_rerun_does_no_new_work(
    where: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if where == "ftp":
        server, root = request.getfixturevalue("ftp")
        url, read = f"{server.url}/runs/one", (lambda name: (root / "runs" / "one" / name).read_bytes())
    else:
        url = request.getfixturevalue("memory") + "/runs/one"
        fs = fsspec.filesystem("memory")
        read = lambda name: bytes(fs.cat_file(f"{url}/{name}"))  # noqa: E731
    prompts = tmp_path / "p.jsonl"
    lines = [{"prompt": f"p{i}", "seed": i, "width": 16, "height": 16} for i in range(3)]
    lines.append({"prompt": "named", "name": "../../etc/cat", "width": 16, "height": 16})
    prompts.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    async with mg.Client() as client:
        first = await run_batch(prompts, url, client=client, model="test:x", concurrency=2)
        again = await run_batch(prompts, url, client=client, model="test:x")
    assert first.ok and first.done == [1, 2, 3, 4]
    names = ["00001.png", "00002.png", "00003.png", "etc_cat.png"]
    assert sorted(str(f).rsplit("/", 1)[-1] for f in first.files) == names
    assert all(isinstance(f, str) and PASSWORD not in f and f.startswith(RemoteDir(url).url) for f in first.files)
    for name in names:
        with Image.open(io.BytesIO(read(name))) as img:
            assert img.size == (16, 16)
    entries = [json.loads(t) for t in read(MANIFEST).decode().splitlines()]
    assert sorted((e["line"], e["files"]) for e in entries) == [(n, [names[n - 1]]) for n in range(1, 5)]
    assert again.done == [] and again.skipped == [1, 2, 3, 4]


def test_the_cli_writes_to_an_ftp_url_and_shows_no_password(ftp: tuple[FtpServer, Path], tmp_path: Path) -> None:
    server, root = ftp
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "a", "seed": 1, "width": 16, "height": 16}) + "\n")
    command = [str(CLI), "batch", str(prompts), "-m", "test:x", "-o", f"{server.url}/cli", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["done"] == [1] and report["files"] == [f"ftp://127.0.0.1:{server.port}/cli/00001.png"]
    assert (root / "cli" / "00001.png").is_file() and (root / "cli" / MANIFEST).is_file()
    refused = subprocess.run(
        [*command[:-2], f"nosuch://x:{PASSWORD}@h/cli"], capture_output=True, text=True, timeout=120
    )
    assert refused.returncode != 0 and "nosuch" in refused.stderr
    assert PASSWORD not in done.stdout + done.stderr + refused.stdout + refused.stderr


def test_import_mediagen_does_not_import_fsspec() -> None:
    code = "import sys, mediagen, mediagen.batch, mediagen._outputs; print('fsspec' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "False"
