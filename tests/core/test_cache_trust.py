"""Cache trust (issue 12, finding 7): entries stay inside their directory, and only you can write it."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

import mediagen as mg
from mediagen.cache import ResultCache, _checksum, cache_key


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _stored(tmp_path: Path) -> tuple[ResultCache, str, Path]:
    cache = ResultCache(tmp_path / "cache")
    key = cache_key(mg.ImageRequest(prompt="a fox", seed=1), "test", "fake", None)
    assert cache.put(key, mg.Result(artifacts=[mg.Image(_png(10))], provider="test", model="fake", seeds=[1]))
    return cache, key, cache._entry(key)


def _rewrite(entry: Path, change: dict[str, object]) -> None:
    """Plant a manifest that is consistent (checksum and all), as any writer of the directory could."""
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["artifacts"][0].update(change)
    manifest["checksum"] = _checksum(manifest)
    (entry / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "name", ["../../../secret.png", "/etc/hostname", "manifest.json", "..", "0.png/../../x.png", "sub/0.png"]
)
def test_cache_manifest_names_stay_inside_the_entry(tmp_path: Path, name: str) -> None:
    cache, key, entry = _stored(tmp_path)
    secret = tmp_path / "secret.png"
    secret.write_bytes(_png(200))
    _rewrite(entry, {"file": name, "size": len(_png(200)), "sha256": hashlib.sha256(_png(200)).hexdigest()})
    assert cache.get(key) is None  # an entry that names a file outside itself is corrupt: a miss
    assert not entry.exists()  # ... and removed
    assert secret.read_bytes() == _png(200)


def test_cache_entry_files_are_never_read_through_a_link(tmp_path: Path) -> None:
    cache, key, entry = _stored(tmp_path)
    secret = tmp_path / "secret.png"
    secret.write_bytes(_png(200))
    (entry / "0.png").unlink()
    (entry / "0.png").symlink_to(secret)
    _rewrite(entry, {"size": len(_png(200)), "sha256": hashlib.sha256(_png(200)).hexdigest()})
    assert cache.get(key) is None


def test_cache_dir_and_entries_are_private(tmp_path: Path) -> None:
    cache, key, entry = _stored(tmp_path)
    for folder in (cache.directory, entry.parent, entry):
        assert stat.S_IMODE(folder.stat().st_mode) & 0o077 == 0, folder
    for file in entry.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) & 0o077 == 0, file
    assert cache.get(key) is not None


def test_a_cache_dir_open_to_others_is_closed_on_first_use(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o777)
    os.chmod(directory, 0o777)  # as an older version, or a careless umask, left it
    cache = ResultCache(directory)
    key = cache_key(mg.ImageRequest(prompt="a fox", seed=1), "test", "fake", None)
    cache.put(key, mg.Result(artifacts=[mg.Image(_png(10))], provider="test", model="fake", seeds=[1]))
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert cache.get(key) is not None


async def test_the_client_cache_round_trip_is_unchanged(tmp_path: Path) -> None:
    async with mg.Client(cache=tmp_path / "c") as client:
        first = await client.image("a fox", model="test:fake", seed=3, width=16, height=16)
        again = await client.image("a fox", model="test:fake", seed=3, width=16, height=16)
    assert again.cached and again.artifacts[0].read() == first.artifacts[0].read()
