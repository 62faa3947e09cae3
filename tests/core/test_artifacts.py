"""Artifacts: saving by suffix (checked with independent readers), sniffing, lazy URLs, conversions, display."""

from __future__ import annotations

import base64
import html
import http.server
import io
import json
import re
import threading
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import PIL.Image
import pytest
import soundfile as sf
import trimesh

import mediagen as mg
from mediagen._media import sniff_media_type
from mediagen.artifacts import artifact_for_url, artifact_from_bytes

# -- things to save --------------------------------------------------------------------------------


def gradient(h: int = 24, w: int = 40) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 128)], axis=-1).astype(np.uint8)


def clip_frames(t: int = 6, h: int = 32, w: int = 48) -> np.ndarray:
    # Flat colours per frame survive lossy codecs well enough to compare.
    levels = np.linspace(40, 220, t).astype(np.uint8)
    frames = np.zeros((t, h, w, 3), dtype=np.uint8)
    frames[..., 0] = levels[:, None, None]
    frames[..., 1] = 255 - levels[:, None, None]
    frames[..., 2] = 90
    return frames


def sine(freq: float = 440.0, rate: int = 16_000, seconds: float = 0.5, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds), dtype=np.float32) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


TETRA_V = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
TETRA_F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


def tetra(**kw: Any) -> mg.Mesh:
    return mg.Mesh.from_arrays(TETRA_V, TETRA_F, np.tile([200, 40, 40, 255], (4, 1)).astype(np.uint8), **kw)


def png(array: np.ndarray | None = None) -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(gradient() if array is None else array).save(buf, format="PNG")
    return buf.getvalue()


# -- save() to every suffix, read back independently ------------------------------------------------

IMAGE_SUFFIXES = [
    (".png", "PNG", 0),
    (".jpg", "JPEG", 12),
    (".jpeg", "JPEG", 12),
    (".webp", "WEBP", 20),
    (".gif", "GIF", 40),
    (".bmp", "BMP", 0),
]


@pytest.mark.parametrize(("suffix", "fmt", "tolerance"), IMAGE_SUFFIXES)
@pytest.mark.parametrize("source", ["array", "png-bytes", "pil-rgba"])
def test_image_save_decodes_with_pil(tmp_path: Path, suffix: str, fmt: str, tolerance: int, source: str) -> None:
    pixels = gradient()
    if source == "array":
        img = mg.Image.from_array(pixels)
    elif source == "png-bytes":
        img = mg.Image(png(pixels))
    else:
        rgba = np.concatenate([pixels, np.full((*pixels.shape[:2], 1), 255, np.uint8)], axis=-1)
        img = mg.Image.from_pil(PIL.Image.fromarray(rgba, "RGBA"))
    path = img.save(tmp_path / f"sub/dir/out{suffix}")
    assert path == tmp_path / f"sub/dir/out{suffix}"
    with PIL.Image.open(path) as decoded:
        assert decoded.format == fmt
        assert decoded.size == (40, 24)
        back = np.asarray(decoded.convert("RGB"), dtype=np.int16)
    assert np.abs(back - pixels).max() <= max(tolerance, 0) + (0 if tolerance == 0 else 10)
    assert not list(tmp_path.glob("sub/dir/.*.tmp"))  # written atomically, no leftovers


def test_image_bytes_saved_to_their_own_format_are_copied(tmp_path: Path) -> None:
    data = png()
    assert mg.Image(data).save(tmp_path / "same.png").read_bytes() == data
    jpeg = mg.Image.from_array(gradient())._encode_as("image/jpeg")
    assert mg.Image(jpeg).save(tmp_path / "same.jpeg").read_bytes() == jpeg


def test_png_carries_provenance(tmp_path: Path) -> None:
    prov = {"model": "test:fake", "seed": 7}
    path = mg.Image.from_array(gradient(), metadata={"provenance": prov}).save(tmp_path / "p.png")
    with PIL.Image.open(path) as decoded:
        assert json.loads(decoded.text["mediagen"]) == prov


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".gif"])
def test_video_save_decodes_with_imageio(tmp_path: Path, suffix: str) -> None:
    frames = clip_frames()
    video = mg.Video.from_frames(frames, fps=12)
    path = video.save(tmp_path / f"clip{suffix}")
    decoded = iio.imread(path, index=None)
    assert decoded.shape[:3] == (6, 32, 48)
    tol = 40 if suffix == ".gif" else 30
    assert np.abs(decoded[..., :3].astype(int) - frames.astype(int)).mean() < tol / 3
    meta = iio.immeta(path)
    if suffix == ".gif":
        assert abs(1000.0 / meta["duration"] - 12) < 1.5  # GIF stores centiseconds
    else:
        assert meta["fps"] == pytest.approx(12.0)
    assert (
        sniff_media_type(path.read_bytes()) == {".mp4": "video/mp4", ".webm": "video/webm", ".gif": "image/gif"}[suffix]
    )


def test_video_with_odd_size_is_padded_not_resized(tmp_path: Path) -> None:
    frames = clip_frames(t=3, h=15, w=21)
    path = mg.Video.from_frames(frames, fps=8).save(tmp_path / "odd.mp4")
    decoded = iio.imread(path, index=None)
    assert decoded.shape[:3] == (3, 16, 22)
    assert np.abs(decoded[:, :15, :21].astype(int) - frames.astype(int)).mean() < 10


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", ".mp3"])
@pytest.mark.parametrize("channels", [1, 2])
def test_audio_save_decodes_with_soundfile(tmp_path: Path, suffix: str, channels: int) -> None:
    mono = sine()
    samples = np.stack([mono, mono * 0.5]) if channels == 2 else mono
    path = mg.Audio.from_samples(samples, 16_000).save(tmp_path / f"sound{suffix}")
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    assert rate == 16_000
    assert data.shape[1] == channels
    assert abs(data.shape[0] - 8000) <= (2000 if suffix == ".mp3" else 0)  # mp3 frames pad the ends
    if suffix in (".wav", ".flac"):
        assert np.abs(data[:, 0] - mono).max() < 1e-3  # 16-bit PCM, lossless
    else:
        rms = float(np.sqrt(np.mean(data[:, 0] ** 2)))
        assert 0.25 < rms < 0.45  # a 0.5-amplitude sine has RMS 0.354


def test_wav_decodes_with_the_wave_module(tmp_path: Path) -> None:
    path = mg.Audio.from_samples(np.stack([sine(), -sine()]), 16_000).save(tmp_path / "s.wav")
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (2, 2, 16_000, 8000)
        pcm = np.frombuffer(w.readframes(8000), dtype="<i2").reshape(-1, 2)
    assert np.abs(pcm[:, 0] / 32767 - sine()).max() < 1e-3
    assert np.array_equal(pcm[:, 0], -pcm[:, 1])


@pytest.mark.parametrize("suffix", [".glb", ".obj", ".ply"])
def test_mesh_save_decodes_with_trimesh(tmp_path: Path, suffix: str) -> None:
    path = tetra().save(tmp_path / f"m{suffix}")
    loaded = trimesh.load(path, force="mesh", process=False)
    assert len(loaded.vertices) == 4
    assert len(loaded.faces) == 4
    assert np.allclose(sorted(map(tuple, loaded.vertices)), sorted(map(tuple, TETRA_V)), atol=1e-6)
    assert loaded.volume == pytest.approx(1 / 6, rel=1e-6)


def test_mesh_converts_between_formats(tmp_path: Path) -> None:
    glb = tetra()._encode_as("model/gltf-binary")
    mesh = mg.Mesh(glb)
    assert mesh.media_type == "model/gltf-binary"
    path = mesh.save(tmp_path / "m.ply")
    assert sniff_media_type(path.read_bytes()) == "model/ply"
    assert len(trimesh.load(path, force="mesh").faces) == 4


@pytest.mark.parametrize(
    ("artifact", "bad", "lists"),
    [
        (lambda: mg.Image.from_array(gradient()), "x.wav", ".png, .jpg, .webp"),
        (lambda: mg.Image(png()), "x.mp4", ".png"),
        (lambda: mg.Video.from_frames(clip_frames()), "x.png", ".mp4, .webm, .gif"),
        (lambda: mg.Audio.from_samples(sine(), 16_000), "x.glb", ".wav, .flac"),
        (lambda: tetra(), "x.jpg", ".glb, .obj, .ply"),
        (lambda: tetra(), "x.txt", ".glb, .obj, .ply"),
    ],
)
def test_wrong_suffix_is_a_helpful_value_error(tmp_path: Path, artifact: Any, bad: str, lists: str) -> None:
    with pytest.raises(ValueError) as info:
        artifact().save(tmp_path / bad)
    assert "cannot be saved as" in str(info.value)
    assert lists in str(info.value)
    assert not (tmp_path / bad).exists()


@pytest.mark.parametrize("name", ["noext", "x.unknownsuffix"])
def test_missing_suffix_asks_for_one(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match=r"add a suffix such as \.png"):
        mg.Image.from_array(gradient()).save(tmp_path / name)


# -- sniffing --------------------------------------------------------------------------------------


def _sniff_cases() -> list[tuple[str, Any, str | None]]:
    def pil(fmt: str) -> Any:
        def make() -> bytes:
            buf = io.BytesIO()
            PIL.Image.fromarray(gradient()).save(buf, format=fmt)
            return buf.getvalue()

        return make

    def audio(fmt: str, rate: int = 16_000) -> Any:
        def make() -> bytes:
            buf = io.BytesIO()
            sf.write(buf, sine(rate=rate), rate, format=fmt)
            return buf.getvalue()

        return make

    def video(ext: str) -> Any:
        return lambda: mg.Video.from_frames(clip_frames(t=2))._encode_as(
            {".mp4": "video/mp4", ".webm": "video/webm"}[ext]
        )

    def mesh(file_type: str) -> Any:
        return lambda: trimesh.Trimesh(TETRA_V, TETRA_F, process=False).export(file_type=file_type)

    return [
        ("png", pil("PNG"), "image/png"),
        ("jpeg", pil("JPEG"), "image/jpeg"),
        ("gif", pil("GIF"), "image/gif"),
        ("webp", pil("WEBP"), "image/webp"),
        ("bmp", pil("BMP"), "image/bmp"),
        ("wav", audio("WAV"), "audio/wav"),
        ("flac", audio("FLAC"), "audio/flac"),
        ("ogg", audio("OGG"), "audio/ogg"),
        ("mp3-16k", audio("MP3"), "audio/mpeg"),
        ("mp3-44k", audio("MP3", 44_100), "audio/mpeg"),
        ("mp3-8k-mpeg2.5", audio("MP3", 8000), "audio/mpeg"),
        ("mp3-id3", lambda: b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\x00" * 40, "audio/mpeg"),
        ("mp4", video(".mp4"), "video/mp4"),
        ("webm", video(".webm"), "video/webm"),
        ("m4a", lambda: b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00" + b"\x00" * 40, "audio/mp4"),
        ("mov", lambda: b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00" + b"\x00" * 40, "video/quicktime"),
        ("glb", mesh("glb"), "model/gltf-binary"),
        ("ply-binary", mesh("ply"), "model/ply"),
        ("ply-ascii", lambda: trimesh.Trimesh(TETRA_V, TETRA_F).export(file_type="ply", encoding="ascii"), "model/ply"),
        ("obj-trimesh", lambda: trimesh.Trimesh(TETRA_V, TETRA_F).export(file_type="obj").encode(), "model/obj"),
        ("obj-bare", lambda: b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "model/obj"),
        ("text", lambda: b"hello, this is plain text", None),
        ("empty", lambda: b"", None),
        ("zeros", lambda: b"\x00" * 64, None),
    ]


@pytest.mark.parametrize(("name", "make", "expected"), _sniff_cases(), ids=[c[0] for c in _sniff_cases()])
def test_sniffing(name: str, make: Any, expected: str | None) -> None:
    data = make()
    assert sniff_media_type(data) == expected
    if expected is not None:
        artifact = artifact_from_bytes(data)
        assert artifact.media_type == expected
        assert artifact.kind == mg.artifacts.kind_of_media_type(expected)


def test_artifact_from_bytes_refuses_unknown_bytes() -> None:
    with pytest.raises(ValueError, match="cannot tell what kind of media"):
        artifact_from_bytes(b"plain text")


# -- lazy URL artifacts, from a real loopback server -----------------------------------------------


class _Server:
    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes, str]] = {}
        self.failures_first: dict[str, list[int]] = {}  # statuses a route answers before its real one
        self.hits: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits.append(self.path)
                status, body, ctype = server.routes.get(self.path, (404, b"not found", "text/plain"))
                if server.failures_first.get(self.path):
                    status, body, ctype = server.failures_first[self.path].pop(0), b"try again", "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    srv.routes["/fox.png"] = (200, png(), "image/png")
    srv.routes["/noext"] = (200, png(), "application/octet-stream")
    srv.routes["/big.png"] = (200, png() + b"\x00" * 200_000, "image/png")
    srv.routes["/boom.png"] = (500, b"internal error", "text/plain")
    srv.routes["/tone.wav"] = (200, mg.Audio.from_samples(sine(), 16_000).read(), "audio/wav")
    srv.routes["/clip.mp4"] = (200, mg.Video.from_frames(clip_frames(t=3)).read(), "video/mp4")
    try:
        yield srv
    finally:
        srv.close()


def test_url_artifact_is_lazy_until_read(server: _Server) -> None:
    img = mg.Image(url=server.url + "/fox.png")
    assert not img.is_loaded
    assert img.media_type == "image/png"  # from the name
    assert "fox.png" in repr(img)
    assert server.hits == []  # none of that fetched anything
    assert img.read() == png()
    assert img.is_loaded
    assert img.to_pil().size == (40, 24)
    img.read()
    assert server.hits == ["/fox.png"]  # fetched once


def test_url_without_suffix_is_sniffed_after_fetch(server: _Server) -> None:
    art = artifact_for_url(server.url + "/noext")
    assert isinstance(art, mg.Image)
    art.read()
    assert art.media_type == "image/png"


def test_url_kind_from_suffix(server: _Server) -> None:
    assert isinstance(artifact_for_url(server.url + "/tone.wav"), mg.Audio)
    assert isinstance(artifact_for_url(server.url + "/clip.mp4"), mg.Video)
    assert isinstance(artifact_for_url(server.url + "/x.glb"), mg.Mesh)
    assert server.hits == []


def test_url_conversions_fetch_on_demand(server: _Server) -> None:
    audio = mg.Audio(url=server.url + "/tone.wav")
    assert audio.sample_rate == 16_000
    assert audio.samples.shape == (1, 8000)
    video = mg.Video(url=server.url + "/clip.mp4")
    assert video.frames.shape[:3] == (3, 32, 48)
    assert server.hits == ["/tone.wav", "/clip.mp4"]


def test_url_size_cap(server: _Server) -> None:
    with pytest.raises(mg.DownloadError, match="size cap of 10000 bytes") as info:
        mg.Image(url=server.url + "/big.png", max_bytes=10_000).read()
    assert isinstance(info.value, mg.MediagenError)
    assert not info.value.retryable
    # Under the cap, the same URL is fine.
    assert len(mg.Image(url=server.url + "/big.png", max_bytes=300_000).read()) > 200_000


@pytest.mark.parametrize(("route", "status"), [("/missing.png", 404), ("/boom.png", 500)])
def test_url_http_errors(server: _Server, route: str, status: int) -> None:
    with pytest.raises(mg.DownloadError, match=f"HTTP {status}") as info:
        mg.Image(url=server.url + route).read()
    assert info.value.status == status
    # A missing file stays missing; a server error may pass.
    assert info.value.retryable is (status >= 500)
    assert not mg.Image(url=server.url + route).is_loaded


def test_url_download_retries_what_may_pass_and_not_what_will_not(server: _Server) -> None:
    server.failures_first["/fox.png"] = [503, 502]
    assert mg.Image(url=server.url + "/fox.png").read() == png()
    assert server.hits.count("/fox.png") == 3
    # A missing file is asked for once: it will not appear by asking again.
    with pytest.raises(mg.DownloadError, match="HTTP 404"):
        mg.Image(url=server.url + "/nope.png").read()
    assert server.hits.count("/nope.png") == 1
    # Past the attempts, the last error is raised.
    server.failures_first["/fox.png"] = [503, 503, 503]
    with pytest.raises(mg.DownloadError, match="HTTP 503"):
        mg.Image(url=server.url + "/fox.png").read()


async def test_url_async_download_retries(server: _Server) -> None:
    server.failures_first["/tone.wav"] = [500]
    audio = mg.Audio(url=server.url + "/tone.wav")
    await audio.aread()
    assert audio.sample_rate == 16_000 and server.hits.count("/tone.wav") == 2


def test_url_connection_refused(server: _Server) -> None:
    url = server.url + "/fox.png"
    server.close()
    with pytest.raises(mg.DownloadError, match="download failed"):
        mg.Image(url=url).read()


def test_unsupported_scheme() -> None:
    with pytest.raises(mg.DownloadError, match="only http"):
        mg.Image(url="ftp://example.invalid/x.png").read()


async def test_aread(server: _Server) -> None:
    img = mg.Image(url=server.url + "/fox.png")
    assert await img.aread() == png()
    assert await img.aread() == png()
    assert server.hits == ["/fox.png"]
    with pytest.raises(mg.DownloadError, match="size cap"):
        await mg.Image(url=server.url + "/big.png", max_bytes=1000).aread()
    with pytest.raises(mg.DownloadError) as info:
        await mg.Image(url=server.url + "/nope.png").aread()
    assert info.value.status == 404
    # aread on an in-memory artifact encodes it.
    assert sniff_media_type(await mg.Image.from_array(gradient()).aread()) == "image/png"


async def test_aread_reuses_a_client(server: _Server) -> None:
    import httpx

    async with httpx.AsyncClient() as client:
        data = await mg.Image(url=server.url + "/fox.png").aread(client=client)
        assert not client.is_closed  # not ours to close
    assert data == png()


async def test_asave(server: _Server, tmp_path: Path) -> None:
    path = await mg.Image(url=server.url + "/fox.png").asave(tmp_path / "fox.jpg")
    with PIL.Image.open(path) as decoded:
        assert decoded.format == "JPEG"


# -- data: URLs ------------------------------------------------------------------------------------


def test_data_urls() -> None:
    data = png()
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    img = mg.Image(url=url)
    assert img.is_loaded and img.read() == data and img.media_type == "image/png"
    assert img.to_data_url() == url
    assert mg.Image(data).to_data_url() == url
    # Percent-encoded (not base64) data URLs and an undeclared type.
    obj = b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"
    mesh = mg.Mesh(url="data:," + "".join(f"%{b:02x}" for b in obj))
    assert mesh.read() == obj
    assert mesh.media_type == "model/obj"
    assert len(mesh.to_trimesh().faces) == 1
    with pytest.raises(ValueError, match="data"):
        mg.Image(url="data:image/png;base64")
    with pytest.raises(ValueError, match="invalid base64"):
        mg.Image(url="data:image/png;base64,abc")


# -- conversions -----------------------------------------------------------------------------------


def test_image_conversions() -> None:
    img = mg.Image(png())
    assert img.to_pil().size == (40, 24)
    assert img.size == (40, 24) and img.width == 40 and img.height == 24
    assert np.array_equal(img.to_numpy(), gradient())
    assert len(img.sha256()) == 64
    assert "40x24" in repr(img)


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.full((2, 2, 3), 100, dtype=np.uint8), 100),
        (np.full((2, 2, 3), 0.5, dtype=np.float32), 128),
        (np.full((2, 2, 3), 100, dtype=np.int64), 100),  # integer arrays are 0..255, not 0..1
        (np.full((2, 2, 3), 300, dtype=np.int32), 255),
        (np.full((2, 2, 3), 2.0, dtype=np.float64), 255),
    ],
)
def test_image_from_array_dtypes(array: np.ndarray, expected: int) -> None:
    assert mg.Image.from_array(array).to_numpy()[0, 0, 0] == expected


def test_video_conversions() -> None:
    frames = clip_frames()
    video = mg.Video.from_frames(frames, fps=12)
    assert video.num_frames == 6 and video.fps == 12 and video.duration_s == pytest.approx(0.5)
    assert video.to_pil(2).size == (48, 32)
    assert "6 frames @ 12 fps" in repr(video)
    decoded = mg.Video(video.read())
    assert decoded.media_type == "video/mp4"
    assert decoded.frames.shape == (6, 32, 48, 3)
    assert decoded.fps == pytest.approx(12)
    assert np.abs(decoded.frames.astype(int) - frames.astype(int)).mean() < 10
    from_images = mg.Video.from_frames([mg.Image.from_array(f) for f in frames[:3]], fps=4)
    assert from_images.frames.shape == (3, 32, 48, 3)
    floats = mg.Video.from_frames(np.ones((2, 4, 4, 3), dtype=np.float32))
    assert floats.frames.dtype == np.uint8 and floats.frames.max() == 255
    with pytest.raises(ValueError, match="T x H x W x 3"):
        mg.Video.from_frames(np.zeros((4, 4, 3), dtype=np.uint8))


def test_gif_video_round_trip() -> None:
    gif = mg.Video.from_frames(clip_frames(), fps=10)._encode_as("image/gif")
    video = mg.Video(gif)
    assert video.media_type == "image/gif"
    assert video.frames.shape == (6, 32, 48, 3)
    assert video.fps == pytest.approx(10, rel=0.1)


def test_audio_conversions() -> None:
    audio = mg.Audio.from_samples(sine(), 16_000)
    assert audio.samples.shape == (1, 8000) and audio.samples.dtype == np.float32
    assert audio.sample_rate == 16_000 and audio.channels == 1 and audio.duration_s == pytest.approx(0.5)
    decoded = mg.Audio(audio.read())
    assert decoded.sample_rate == 16_000
    assert np.abs(decoded.samples - audio.samples).max() < 1e-3
    pcm = (sine() * 32767).astype(np.int16)
    assert np.abs(mg.Audio.from_samples(pcm, 16_000).samples[0] - sine()).max() < 1e-3
    stereo = mg.Audio.from_samples(np.stack([sine(), sine()], axis=1), 16_000)  # n x channels
    assert stereo.channels == 2 and stereo.samples.shape == (2, 8000)
    with pytest.raises(ValueError, match="channels x n"):
        mg.Audio.from_samples(np.zeros((2, 2, 2)), 16_000)


def test_float_wav_is_read_through_soundfile() -> None:
    buf = io.BytesIO()
    sf.write(buf, sine(), 16_000, format="WAV", subtype="FLOAT")
    audio = mg.Audio(buf.getvalue())
    assert audio.sample_rate == 16_000
    assert np.abs(audio.samples[0] - sine()).max() < 1e-6


def _peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def test_resample() -> None:
    audio = mg.Audio.from_samples(sine(440, 16_000, 1.0), 16_000)
    down = audio.resample(8000)
    assert down.sample_rate == 8000 and down.samples.shape == (1, 8000)
    assert _peak_hz(down.samples[0], 8000) == pytest.approx(440, abs=2)
    up = audio.resample(44_100)
    assert up.samples.shape == (1, 44_100)
    assert _peak_hz(up.samples[0], 44_100) == pytest.approx(440, abs=2)
    assert audio.resample(16_000) is audio


def test_normalize_and_loudness() -> None:
    audio = mg.Audio.from_samples(sine(amp=0.25), 16_000)
    assert audio.loudness_dbfs() == pytest.approx(20 * np.log10(0.25 / np.sqrt(2)), abs=0.05)
    loud = audio.normalize()
    assert float(np.abs(loud.samples).max()) == pytest.approx(0.99, abs=1e-4)
    assert loud.loudness_dbfs() == pytest.approx(20 * np.log10(0.99 / np.sqrt(2)), abs=0.05)
    assert float(np.abs(audio.normalize(0.5).samples).max()) == pytest.approx(0.5, abs=1e-4)
    silence = mg.Audio.from_samples(np.zeros(100, dtype=np.float32), 8000)
    assert silence.loudness_dbfs() == float("-inf")
    assert silence.normalize() is silence


def test_mesh_conversions() -> None:
    mesh = tetra()
    assert mesh.to_trimesh().vertices.shape == (4, 3)
    glb = mg.Mesh(mesh.read())
    assert glb.media_type == "model/gltf-binary"
    tm = glb.to_trimesh()
    assert isinstance(tm, trimesh.Trimesh)  # a glTF scene is merged into one mesh
    assert glb.vertices.shape == (4, 3) and glb.faces.shape == (4, 3)
    assert "4 vertices 4 faces" in repr(mesh)


def test_mesh_preview() -> None:
    preview = tetra().preview(size=64)
    assert isinstance(preview, mg.Image)
    pixels = preview.to_numpy()
    assert pixels.shape == (64, 64, 3)
    assert (pixels != 255).any() and (pixels == 255).any()  # the object, on a white background


# -- display ---------------------------------------------------------------------------------------


def _data_src(markup: str) -> tuple[str, bytes]:
    match = re.search(r'src="data:([^;"]+);base64,([^"]+)"', markup)
    assert match, markup[:200]
    return match.group(1), base64.b64decode(match.group(2))


def test_repr_png() -> None:
    data = mg.Image(png())._repr_png_()
    assert sniff_media_type(data) == "image/png"
    with PIL.Image.open(io.BytesIO(data)) as decoded:
        assert decoded.size == (40, 24)
    jpeg_img = mg.Image(mg.Image.from_array(gradient())._encode_as("image/jpeg"))
    assert sniff_media_type(jpeg_img._repr_png_()) == "image/png"


def test_repr_html_video() -> None:
    markup = mg.Video.from_frames(clip_frames(t=2), fps=4)._repr_html_()
    assert markup.startswith("<video controls")
    media_type, data = _data_src(markup)
    assert media_type == "video/mp4"
    assert iio.imread(data, extension=".mp4", index=None).shape[0] == 2
    gif = mg.Video(mg.Video.from_frames(clip_frames(t=2))._encode_as("image/gif"))
    assert gif._repr_html_().startswith("<img")


def test_repr_html_audio() -> None:
    markup = mg.Audio.from_samples(sine(), 16_000)._repr_html_()
    assert markup.startswith("<audio controls")
    media_type, data = _data_src(markup)
    assert media_type == "audio/wav"
    assert sf.read(io.BytesIO(data))[0].shape[0] == 8000


def test_repr_html_mesh() -> None:
    markup = tetra()._repr_html_()
    media_type, data = _data_src(markup)
    assert media_type == "image/png"
    assert PIL.Image.open(io.BytesIO(data)).size == (256, 256)
    assert html.escape("<mediagen.Mesh") in markup


def test_repr_html_of_a_url_does_not_fetch(server: _Server) -> None:
    video = mg.Video(url=server.url + "/clip.mp4")
    assert f'src="{server.url}/clip.mp4"' in video._repr_html_()
    audio = mg.Audio(url=server.url + "/tone.wav")
    assert f'src="{server.url}/tone.wav"' in audio._repr_html_()
    assert server.hits == []


def test_result_repr_html() -> None:
    result = mg.Result(
        artifacts=[mg.Image.from_array(gradient()), mg.Audio.from_samples(sine(), 16_000)],
        provider="test",
        model="fake",
    )
    markup = result._repr_html_()
    assert markup.count("<img") == 1 and markup.count("<audio") == 1 and "test:fake" in markup
    assert len(result.images) == 1 and len(result.audios) == 1 and not result.videos and not result.meshes
