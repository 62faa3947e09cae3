"""Provenance in saved files (sdk/provenance.py) and the safety nets (sdk/safety.py)."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mediagen as mg
from mediagen import provenance as prov
from mediagen.safety import RedactingFilter, install_log_redaction, safe_filename

PROVENANCE = {"prompt": 'ein Fuchs im Schnee: \u00fc\u2603 "quoted"\nnew line', "seed": 7, "model": "m"}


def _image() -> mg.Image:
    arr = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    return mg.Image.from_array(arr)


def _mesh() -> mg.Mesh:
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
    return mg.Mesh.from_arrays(verts, [[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


def _artifact(suffix: str) -> mg.Artifact:
    if suffix in (".png", ".jpg", ".webp", ".gif", ".bmp"):
        return _image()
    if suffix in (".mp4", ".webm"):
        return mg.Video.from_frames(np.full((4, 16, 16, 3), 90, dtype=np.uint8), fps=4)
    if suffix in (".wav", ".flac", ".ogg"):
        return mg.Audio.from_samples(np.sin(np.arange(4000) / 9.0) * 0.5, 16_000)
    return _mesh()


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".mp4", ".wav", ".glb", ".obj", ".ply"])
def test_provenance_round_trips_inside_the_file(tmp_path: Path, suffix: str) -> None:
    artifact = _artifact(suffix)
    artifact.metadata["provenance"] = PROVENANCE
    path = artifact.save(tmp_path / f"out{suffix}")
    assert mg.read_provenance(path) == PROVENANCE
    assert not prov.sidecar_path(path).exists()


@pytest.mark.parametrize("suffix", [".webp", ".gif", ".flac", ".webm"])
def test_formats_without_a_place_get_a_sidecar(tmp_path: Path, suffix: str) -> None:
    artifact = _artifact(suffix)
    artifact.metadata["provenance"] = PROVENANCE
    path = artifact.save(tmp_path / f"out{suffix}")
    assert prov.sidecar_path(path).name == f"out{suffix}.mediagen.json"
    assert json.loads(prov.sidecar_path(path).read_text()) == {"mediagen": PROVENANCE}
    assert mg.read_provenance(path) == PROVENANCE


def test_bytes_already_in_the_target_format_still_get_provenance(tmp_path: Path) -> None:
    # The old save wrote such bytes as they were, so provenance was lost exactly here.
    for suffix, media_type in [(".png", "image/png"), (".wav", "audio/wav"), (".glb", "model/gltf-binary")]:
        source = _artifact(suffix)
        encoded = type(source)(source.read(), media_type=media_type, metadata={"provenance": PROVENANCE})
        path = encoded.save(tmp_path / f"raw{suffix}")
        assert mg.read_provenance(path) == PROVENANCE, suffix


def test_embedding_changes_no_pixel_sample_or_frame(tmp_path: Path) -> None:
    import PIL.Image

    img = _image()
    img.metadata["provenance"] = PROVENANCE
    saved = PIL.Image.open(img.save(tmp_path / "a.png"))
    assert np.array_equal(np.asarray(saved), img.to_numpy())

    snd = _artifact(".wav")
    assert isinstance(snd, mg.Audio)
    plain = mg.Audio(snd.read())
    snd.metadata["provenance"] = PROVENANCE
    again = mg.Audio((snd.save(tmp_path / "a.wav")).read_bytes())
    assert np.array_equal(again.samples, plain.samples) and again.sample_rate == 16_000
    import soundfile as sf

    data, rate = sf.read(tmp_path / "a.wav")
    assert rate == 16_000 and len(data) == 4000

    vid = _artifact(".mp4")
    assert isinstance(vid, mg.Video)
    original = vid.read()
    vid.metadata["provenance"] = PROVENANCE
    remuxed = mg.Video((vid.save(tmp_path / "a.mp4")).read_bytes())
    assert np.array_equal(remuxed.frames, mg.Video(original).frames)

    mesh = _mesh()
    mesh.metadata["provenance"] = PROVENANCE
    loaded = mg.Mesh(mesh.save(tmp_path / "a.glb").read_bytes())
    assert np.allclose(loaded.vertices, mesh.vertices)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".wav", ".glb", ".obj", ".ply", ".mp4"])
def test_saving_again_replaces_not_duplicates(tmp_path: Path, suffix: str) -> None:
    artifact = _artifact(suffix)
    artifact.metadata["provenance"] = PROVENANCE
    first = artifact.save(tmp_path / f"one{suffix}").read_bytes()
    reread = type(artifact)(first)
    reread.metadata["provenance"] = {**PROVENANCE, "seed": 8}
    second = reread.save(tmp_path / f"two{suffix}")
    assert mg.read_provenance(second) == {**PROVENANCE, "seed": 8}
    if suffix != ".mp4":  # ffmpeg may rewrite other boxes; the byte count is for the byte-level writers
        assert abs(len(second.read_bytes()) - len(first)) <= 8


@pytest.mark.slow
def test_m4a_and_mov_round_trip(tmp_path: Path) -> None:
    import subprocess

    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    m4a = tmp_path / "tone.m4a"
    subprocess.run(
        [ffmpeg, "-v", "error", "-f", "lavfi", "-i", "sine=d=0.2", "-c:a", "aac", str(m4a)], check=True, timeout=60
    )
    data = m4a.read_bytes()
    stamped = prov.embed(data, "audio/mp4", PROVENANCE)
    assert stamped is not None and prov.extract(stamped) == PROVENANCE
    mov = prov.embed(_artifact(".mp4").read(), "video/quicktime", PROVENANCE)
    assert mov is not None and prov.extract(mov, "video/quicktime") == PROVENANCE


async def test_the_client_stamps_every_output(tmp_path: Path) -> None:
    async with mg.Client() as client:
        res = await client.image(
            "a red fox",
            model="test:fake",
            negative_prompt="blurry",
            seed=7,
            n=2,
            steps=4,
            guidance=5.5,
            width=16,
            height=16,
        )
        paths = [a.save(tmp_path / f"fox-{i}.png") for i, a in enumerate(res.artifacts)]
    found = [mg.read_provenance(p) for p in paths]
    assert [f["seed"] for f in found if f] == [7, 8]
    first = found[0]
    assert first is not None
    assert first["prompt"] == "a red fox" and first["negative_prompt"] == "blurry"
    assert (first["provider"], first["model"]) == ("test", "fake")
    assert (first["steps"], first["guidance"]) == (4, 5.5)
    assert first["mediagen_version"] == mg.__version__


async def test_provenance_off_per_client_or_per_call(tmp_path: Path) -> None:
    async with mg.Client(provenance=False) as client:
        res = await client.image("a fox", model="test:fake", width=16, height=16)
        on = await client.image("a fox", model="test:fake", width=16, height=16, provenance=True)
    assert "provenance" not in res.artifacts[0].metadata
    path = res.artifacts[0].save(tmp_path / "plain.webp")
    assert mg.read_provenance(path) is None and not prov.sidecar_path(path).exists()
    assert mg.read_provenance(on.artifacts[0].save(tmp_path / "on.png")) is not None

    async with mg.Client() as client:
        off = await client.audio("a beep", model="test:fake", duration_s=0.1, provenance=False)
    assert mg.read_provenance(off.artifacts[0].save(tmp_path / "off.wav")) is None


def test_files_mediagen_did_not_stamp_have_none(tmp_path: Path) -> None:
    for suffix in (".png", ".jpg", ".wav", ".glb", ".mp4", ".obj"):
        path = _artifact(suffix).save(tmp_path / f"plain{suffix}")
        assert mg.read_provenance(path) is None, suffix
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert mg.read_provenance(empty) is None
    with pytest.raises(FileNotFoundError):
        mg.read_provenance(tmp_path / "missing.png")


def test_in_memory_bytes_stay_the_models(tmp_path: Path) -> None:
    img = _image()
    img.metadata["provenance"] = PROVENANCE
    assert prov.extract(img.read()) is None, "read() returns the model's bytes; only save() adds provenance"


# -- safety -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("out-0.png", "out-0.png"),
        ("https://replicate.delivery/abc/out-0.png?token=x", "out-0.png"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system32\\evil.dll", "evil.dll"),
        ("..", "output"),
        ("", "output"),
        (".bashrc", "bashrc"),
        ("CON.png", "_CON.png"),
        ("a b\x00c.png", "a_b_c.png"),
        ("%2e%2e%2fsecret.png", "secret.png"),
    ],
)
def test_safe_filename(name: str, expected: str) -> None:
    assert safe_filename(name) == expected


@given(st.text(max_size=300))
def test_safe_filename_never_escapes(name: str) -> None:
    safe = safe_filename(name)
    assert safe and "/" not in safe and "\\" not in safe and safe not in (".", "..")
    assert len(safe) <= 200 and not safe.startswith(".")
    base = Path("/srv/out")
    assert (base / safe).resolve().parent == base.resolve()


def test_save_into_a_directory_uses_a_safe_provider_name(tmp_path: Path) -> None:
    outdir = tmp_path / "outputs"
    outdir.mkdir()
    img = mg.Image(_image().read(), metadata={"filename": "../../escaped.png"})
    path = img.save(outdir)
    assert path == outdir / "escaped.png" and path.is_file()
    assert not (tmp_path / "escaped.png").exists()

    by_url = mg.Image(url="https://cdn.example/x/..%2f..%2fdeep.png")
    by_url._data = _image().read()
    assert by_url.save(str(outdir) + os.sep).parent == outdir

    odd = mg.Audio(_artifact(".wav").read(), metadata={"filename": "notes.txt"})
    assert odd.save(outdir).name == "notes.txt.wav"  # a foreign suffix never picks the format
    unnamed = _mesh()
    assert unnamed.save(outdir).name == "mesh.glb"


def test_downloads_only_over_http(tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(_image().read())
    for url in (f"file://{secret}", "ftp://example.com/a.png", "gopher://x/a.png"):
        with pytest.raises(mg.DownloadError, match="only http"):
            mg.Image(url=url).read()


async def test_downloads_refuse_bodies_past_the_size_cap() -> None:
    import httpx

    from mediagen._download import adownload

    PNG_HEAD = b"\x89PNG\r\n\x1a\n"  # a body must be media; the cap is what is tested here

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/declared":
            return httpx.Response(200, headers={"content-length": "5000"}, content=PNG_HEAD + b"x" * 4992)

        async def body() -> Any:
            yield PNG_HEAD + b"x" * 992
            for _ in range(4):
                yield b"x" * 1000

        return httpx.Response(200, content=body())  # no length given: counted while streaming

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        for path in ("/declared", "/silent"):
            with pytest.raises(mg.DownloadError, match="size cap"):
                await adownload(f"https://127.0.0.1{path}", max_bytes=1000, client=http)
        assert len(await adownload("https://127.0.0.1/silent", max_bytes=5000, client=http)) == 5000


def test_log_lines_and_tracebacks_are_redacted(caplog: pytest.LogCaptureFixture, monkeypatch: Any) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", "plainsecretvalue123")
    child = logging.getLogger("mediagen.backends.example")
    mg.Client(providers={"example": {"api_token": "constructor-secret-42"}})  # installs the filter
    assert any(isinstance(f, RedactingFilter) for f in child.filters)
    with caplog.at_level(logging.DEBUG, logger="mediagen"):
        logging.getLogger("mediagen").warning("calling with token %s", "r8_abcdefghijklmnop")
        child.info("env token plainsecretvalue123 and bearer Bearer abcdefghijklmnopqrstuv")
        child.info("from the constructor: %s", "constructor-secret-42")
        try:
            raise RuntimeError("failed with hf_abcdefghijklmnop")
        except RuntimeError:
            child.exception("boom")
    text = caplog.text
    for secret in ("r8_abcdefghijklmnop", "plainsecretvalue123", "abcdefghijklmnopqrstuv", "constructor-secret-42"):
        assert secret not in text
    assert "hf_abcdefghijklmnop" not in caplog.records[-1].exc_text  # type: ignore[operator]
    install_log_redaction()  # idempotent
    assert sum(isinstance(f, RedactingFilter) for f in child.filters) == 1


def test_errors_redact_secrets() -> None:
    err = mg.ProviderError("auth failed for r8_abcdefghijklmnop", detail="Bearer abcdefghijklmnopqrstu")
    assert "abcdefghijklmnop" not in str(err) and "abcdefghijklmnopqrstu" not in (err.detail or "")


def test_sidecar_json_is_readable() -> None:
    data = prov.sidecar_json(PROVENANCE)
    assert json.load(io.BytesIO(data)) == {"mediagen": PROVENANCE}
