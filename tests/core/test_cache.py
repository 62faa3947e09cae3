"""The result cache (sdk/cache.py): keys, hits, misses, corruption, eviction, concurrent writers."""

from __future__ import annotations

import io
import json
import multiprocessing
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mediagen as mg
from mediagen.backend import RunContext
from mediagen.cache import ResultCache, cache_key
from mediagen.requests import Request
from mediagen.testing import FakeBackend


def _entries(directory: Path) -> list[Path]:
    return [e for shard in directory.iterdir() if len(shard.name) == 2 for e in shard.iterdir()]


def _png(seed: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    buf = io.BytesIO()
    import PIL.Image

    PIL.Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


BASE: dict[str, Any] = {"prompt": "a red fox", "seed": 7, "width": 32, "height": 32}


async def test_a_repeated_seeded_request_is_served_from_the_cache(tmp_path: Path) -> None:
    backend = FakeBackend()
    async with mg.Client(backends={"test": backend}, cache=tmp_path / "c") as client:
        first = await client.image(model="test:fake", n=2, **BASE)
        second = await client.image(model="test:fake", n=2, **BASE)
    assert backend.calls == 1
    assert not first.cached and second.cached
    assert [a.read() for a in second.artifacts] == [a.read() for a in first.artifacts]
    assert second.seeds == first.seeds == [7, 8]
    assert (second.provider, second.model) == ("test", "fake")
    assert second.artifacts[1].metadata["provenance"]["seed"] == 8
    assert client.usage.cache_hits == 1 and client.usage.jobs == 1


async def test_video_audio_and_mesh_round_trip_through_the_cache(tmp_path: Path) -> None:
    backend = FakeBackend()
    async with mg.Client(backends={"test": backend}, cache=tmp_path / "c") as client:
        for _ in range(2):
            vid = await client.video("waves", model="test:fake", seed=1, frames=4, fps=4, width=16, height=16)
            snd = await client.audio("a beep", model="test:fake", seed=1, duration_s=0.2)
            obj = await client.mesh("a chair", model="test:fake", seed=1)
    assert backend.calls == 3 and vid.cached and snd.cached and obj.cached
    assert vid.artifacts[0].fps == 4 and vid.artifacts[0].num_frames == 4
    assert snd.artifacts[0].sample_rate == 16_000
    assert obj.artifacts[0].vertices.shape == (4, 3)


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": "a blue fox"},
        {"negative_prompt": "blurry"},
        {"seed": 8},
        {"n": 2},
        {"steps": 4},
        {"guidance": 3.0},
        {"width": 40},
        {"options": {"scheduler": "euler"}},
        {"output_format": "jpeg"},
    ],
    ids=lambda c: next(iter(c)),
)
async def test_a_change_of_any_field_misses(tmp_path: Path, change: dict[str, Any]) -> None:
    backend = FakeBackend()
    async with mg.Client(backends={"test": backend}, cache=tmp_path / "c") as client:
        await client.image(model="test:fake", **BASE)
        await client.image(model="test:fake", **{**BASE, **change})
        await client.image(model="test:fake", **{**BASE, **change})
    assert backend.calls == 2


async def test_a_change_of_model_or_one_input_byte_misses(tmp_path: Path) -> None:
    source = bytearray(_png(1))
    backend = FakeBackend()
    async with mg.Client(backends={"test": backend}, cache=tmp_path / "c") as client:
        await client.image(model="test:fake", image=bytes(source), **BASE)
        await client.image(model="test:other", image=bytes(source), **BASE)
        assert backend.calls == 2
        # One pixel one step brighter: a different file, so a different key.
        import PIL.Image

        pixels = np.asarray(PIL.Image.open(io.BytesIO(bytes(source)))).copy()
        pixels[0, 0, 0] ^= 1
        buf = io.BytesIO()
        PIL.Image.fromarray(pixels).save(buf, format="PNG")
        changed = buf.getvalue()
        path = tmp_path / "in.png"
        path.write_bytes(bytes(changed))
        await client.image(model="test:fake", image=path, **BASE)
        assert backend.calls == 3
        path.write_bytes(bytes(source))  # the same bytes from a path hit the entry made from bytes
        res = await client.image(model="test:fake", image=path, **BASE)
    assert res.cached and backend.calls == 3


async def test_a_new_model_revision_misses(tmp_path: Path) -> None:
    class Versioned(FakeBackend):
        revision_now = "v1"

        async def revision(self, model: str) -> str | None:
            return self.revision_now

    backend = Versioned()
    async with mg.Client(backends={"test": backend}, cache=tmp_path / "c") as client:
        await client.image(model="test:fake", **BASE)
        await client.image(model="test:fake", **BASE)
        assert backend.calls == 1
        backend.revision_now = "v2"
        await client.image(model="test:fake", **BASE)
    assert backend.calls == 2


def test_the_key_covers_provider_model_revision_and_request() -> None:
    request = mg.ImageRequest(**BASE)
    key = cache_key(request, "test", "fake", None)
    assert len(key) == 64 and key == cache_key(mg.ImageRequest(**BASE), "test", "fake", None)
    others = {
        cache_key(request, "other", "fake", None),
        cache_key(request, "test", "other", None),
        cache_key(request, "test", "fake", "abc"),
        cache_key(request.model_copy(update={"seed": 9}), "test", "fake", None),
    }
    assert key not in others and len(others) == 4
    by_url = mg.ImageRequest(**BASE, image="https://example.com/a.png")
    assert cache_key(by_url, "test", "fake", None) != key


async def test_unseeded_requests_are_cached_only_on_request(tmp_path: Path) -> None:
    backend = FakeBackend()
    async with mg.Client(backends={"test": backend}, cache=tmp_path / "c") as client:
        await client.image("a fox", model="test:fake")
        await client.image("a fox", model="test:fake")
        assert backend.calls == 2
        await client.image("a fox", model="test:fake", cache=True)
        res = await client.image("a fox", model="test:fake", cache=True)
    assert backend.calls == 3 and res.cached


async def test_cache_false_bypasses_and_refresh_replaces(tmp_path: Path) -> None:
    backend = FakeBackend()
    async with mg.Client(backends={"test": backend}, cache=tmp_path / "c") as client:
        await client.image(model="test:fake", **BASE)
        await client.image(model="test:fake", cache=False, **BASE)
        assert backend.calls == 2
        fresh = await client.image(model="test:fake", cache="refresh", **BASE)
        assert backend.calls == 3 and not fresh.cached
        hit = await client.image(model="test:fake", **BASE)
        assert hit.cached and backend.calls == 3
        with pytest.raises(mg.InvalidRequestError, match="cache"):
            await client.image(model="test:fake", cache="sometimes", **BASE)
    assert len(_entries(tmp_path / "c")) == 1


async def test_the_cache_is_off_by_default_and_on_from_config(tmp_path: Path) -> None:
    backend = FakeBackend()
    async with mg.Client(backends={"test": backend}) as client:
        assert client.cache is None
        await client.image(model="test:fake", **BASE)
        await client.image(model="test:fake", **BASE)
        assert backend.calls == 2
        await client.image(model="test:fake", cache=True, **BASE)  # one call may opt in ...
        hit = await client.image(model="test:fake", cache=True, **BASE)
        assert hit.cached and backend.calls == 3
        await client.image(model="test:fake", **BASE)  # ... without turning it on for the others
        assert client.cache is None and backend.calls == 4

    config = mg.Config(cache={"enabled": True, "dir": str(tmp_path / "from-config"), "max_bytes": 10**7})
    backend = FakeBackend()
    async with mg.Client(config=config, backends={"test": backend}) as client:
        assert client.cache is not None and client.cache.max_bytes == 10**7
        await client.image(model="test:fake", **BASE)
        await client.image(model="test:fake", **BASE)
    assert backend.calls == 1 and _entries(tmp_path / "from-config")

    with pytest.raises(ValueError, match="cache"):
        mg.Client(config=mg.Config(cache={"enabled": True, "size": 3}))


async def test_default_directory_is_under_the_user_cache_dir(tmp_path: Path) -> None:
    async with mg.Client(cache=True) as client:
        assert client.cache is not None
        assert client.cache.directory == tmp_path / "mediagen-cache" / "results"  # conftest sets MEDIAGEN_CACHE_DIR


async def test_a_chain_is_answered_by_any_members_entry(tmp_path: Path) -> None:
    backend = FakeBackend()
    async with mg.Client(backends={"test": backend}, cache=tmp_path / "c") as client:
        await client.image(model="test:b", **BASE)
        res = await client.image(model=["test:a", "test:b"], **BASE)
    assert res.cached and res.model == "b" and backend.calls == 1


@pytest.mark.parametrize("damage", ["truncate-artifact", "flip-byte", "bad-manifest", "checksum", "no-manifest"])
async def test_a_corrupt_entry_is_detected_removed_and_recomputed(tmp_path: Path, damage: str) -> None:
    backend = FakeBackend()
    cache_dir = tmp_path / "c"
    async with mg.Client(backends={"test": backend}, cache=cache_dir) as client:
        first = await client.image(model="test:fake", **BASE)
        [entry] = _entries(cache_dir)
        artifact = entry / "0.png"
        manifest = entry / "manifest.json"
        if damage == "truncate-artifact":
            artifact.write_bytes(artifact.read_bytes()[:-10])
        elif damage == "flip-byte":
            data = bytearray(artifact.read_bytes())
            data[40] ^= 0xFF
            artifact.write_bytes(bytes(data))
        elif damage == "bad-manifest":
            manifest.write_text("{ not json")
        elif damage == "checksum":
            doc = json.loads(manifest.read_text())
            doc["result"]["seeds"] = [99]
            manifest.write_text(json.dumps(doc))
        else:
            manifest.unlink()
        again = await client.image(model="test:fake", **BASE)
        assert backend.calls == 2 and not again.cached
        assert again.artifacts[0].read() == first.artifacts[0].read()
        third = await client.image(model="test:fake", **BASE)
    assert third.cached and backend.calls == 2, "the recomputed entry is good"


def test_lru_eviction_past_the_size_limit(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "c", max_bytes=10**9)
    requests = [mg.ImageRequest(prompt=f"fox {i}", seed=1) for i in range(4)]
    keys = [cache_key(r, "test", "fake", None) for r in requests]

    def result(i: int) -> mg.Result:
        return mg.Result(artifacts=[mg.Image(_png(i))], provider="test", model="fake", seeds=[1])

    for i in range(3):
        assert cache.put(keys[i], result(i))
    size_of_one = cache.size() // 3
    import os
    import time

    for i, key in enumerate(keys[:3]):  # make "last used" strictly ordered
        os.utime(cache._entry(key) / "manifest.json", (time.time() - 100 + i, time.time() - 100 + i))
    assert cache.get(keys[0]) is not None  # a hit makes entry 0 the most recently used
    cache.max_bytes = size_of_one * 3 + size_of_one // 2
    cache.put(keys[3], result(3))
    assert cache.get(keys[1]) is None, "the least recently used entry went"
    assert all(cache.get(k) is not None for k in (keys[0], keys[2], keys[3]))
    assert cache.size() <= cache.max_bytes


def test_put_keeps_an_existing_entry_unless_replacing(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "c")
    key = cache_key(mg.ImageRequest(**BASE), "test", "fake", None)
    first = mg.Result(artifacts=[mg.Image(_png(1))], provider="test", model="fake")
    second = mg.Result(artifacts=[mg.Image(_png(2))], provider="test", model="fake")
    assert cache.put(key, first) and not cache.put(key, second)
    got = cache.get(key)
    assert got is not None and got.artifacts[0].read() == _png(1)
    assert cache.put(key, second, replace=True)
    got = cache.get(key)
    assert got is not None and got.artifacts[0].read() == _png(2)
    with pytest.raises(ValueError):
        cache.get("../../etc/passwd")


def _writer(directory: str, key: str, seed: int, barrier: Any, rounds: int) -> None:
    cache = ResultCache(directory)
    payload = _png(seed) + bytes(256 * 1024)  # big enough that two writes overlap
    result = mg.Result(artifacts=[mg.Image(payload, media_type="image/png")], provider="test", model="f")
    for round_ in range(rounds):
        barrier.wait()
        # Round 0 races two first writes; later rounds race two replacements ("refresh").
        cache.put(key, result, replace=round_ > 0)
        barrier.wait()


def test_two_processes_writing_one_key_leave_one_good_entry(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    key = cache_key(mg.ImageRequest(**BASE), "test", "fake", None)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(str(directory), key, seed, barrier, 4)) for seed in (1, 2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    entries = _entries(directory)
    assert [e.name for e in entries] == [key]
    got = ResultCache(directory).get(key)
    assert got is not None
    data = got.artifacts[0].read()
    assert data in (_png(1) + bytes(256 * 1024), _png(2) + bytes(256 * 1024))
    assert not any((directory / ".tmp").iterdir()), "no temporary directory left behind"
    assert not any((directory / ".trash").iterdir()), "replaced entries are deleted"


async def test_a_backend_that_cannot_be_keyed_still_runs(tmp_path: Path) -> None:
    class NoRevision(FakeBackend):
        async def revision(self, model: str) -> str | None:
            raise mg.ProviderError("versions endpoint down", status=503)

    backend = NoRevision()
    async with mg.Client(backends={"test": backend}, cache=tmp_path / "c") as client:
        await client.image(model="test:fake", **BASE)
        res = await client.image(model="test:fake", **BASE)
    assert backend.calls == 2 and not res.cached


async def test_a_failing_cache_write_does_not_fail_the_job(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    async with mg.Client(cache=blocker) as client:
        res = await client.image(model="test:fake", **BASE)
    assert res.artifacts and not res.cached


async def test_function_backend_results_are_cached_with_metadata(tmp_path: Path) -> None:
    from mediagen.testing import FunctionBackend

    def run(request: Request, model: str, ctx: RunContext) -> mg.Image:
        return mg.Image(_png(3), metadata={"seed": request.seed, "filename": "out-0.png", "odd": object()})

    backend = FunctionBackend(run, provider="fn")
    async with mg.Client(backends={"fn": backend}, cache=tmp_path / "c") as client:
        await client.image(model="fn:m", **BASE)
        res = await client.image(model="fn:m", **BASE)
    assert res.cached and backend.calls == 1
    assert res.artifacts[0].metadata["filename"] == "out-0.png" and "odd" not in res.artifacts[0].metadata
    shutil.rmtree(tmp_path / "c")
