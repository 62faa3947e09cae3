"""Bounded outputs (issue 12, findings 3 and 4): every download and every decode has a limit.

Downloads run against real loopback HTTP servers (`mediagen_testkit.media_server`); the suite has
remote requests switched off (tests/conftest.py), which some cases rely on.
"""

from __future__ import annotations

import base64
import html
import io
import struct
import threading
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

import mediagen as mg
from mediagen._download import ByteBudget, _check_url, address_class, adownload, download, redirect_allowed
from mediagen._media import decode_data_url, parse_media_type
from mediagen._remote import remote_allowed
from mediagen_testkit.media_server import MediaServer


def png(w: int = 8, h: int = 6) -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(np.full((h, w, 3), 90, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def server() -> Iterator[MediaServer]:
    with MediaServer() as srv:
        srv.serve("/fox.png", png(), "image/png")
        yield srv


# -- finding 4: data: URLs, outputs and bytes -----------------------------------------------------


def test_data_url_respects_byte_cap() -> None:
    body = png() + b"\x00" * (2 * 1024 * 1024)  # a 2 MiB "PNG" under a 1 MiB cap
    url = "data:image/png;base64," + base64.b64encode(body).decode()
    with pytest.raises(mg.MediaTooLargeError, match="size cap of 1048576") as info:
        mg.Image(url=url, max_bytes=1 << 20)
    assert isinstance(info.value, mg.DownloadError) and not info.value.retryable
    with pytest.raises(mg.MediaTooLargeError):
        decode_data_url(url, max_bytes=1 << 20)
    with pytest.raises(mg.MediaTooLargeError):
        download(url, max_bytes=1 << 20)
    # Percent-encoded too, and under the cap the same URL is fine.
    with pytest.raises(mg.MediaTooLargeError):
        mg.Image(url="data:image/png," + "%00" * 5000, max_bytes=1000)
    assert mg.Image(url=url, max_bytes=4 << 20).read() == body


def test_result_byte_budget_bounds_all_outputs_together(server: MediaServer) -> None:
    url = server.serve("/a.png", png(64, 64), "image/png")
    budget = ByteBudget(len(png(64, 64)) * 2 + 10)
    images = [mg.Image(url=url, budget=budget) for _ in range(3)]
    images[0].read()
    images[1].read()
    with pytest.raises(mg.MediaTooLargeError, match="total download cap"):
        images[2].read()


def _gif_bomb(frames: int = 2000, width: int = 4000, height: int = 4000) -> bytes:
    """46 KB: 2000 frames of a 1x1 pixel on a 4000x4000 canvas, i.e. 96 GB of RGB frames."""
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", width, height, 0xF0, 0, 0) + b"\x00\x00\x00\xff\xff\xff")
    for _ in range(frames):
        out += b"\x21\xf9\x04\x04\x0a\x00\x00\x00"  # graphic control: 0.1 s, keep the canvas
        out += b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"  # one pixel
    return bytes(out + b"\x3b")


def test_gif_bomb_is_refused_before_decoding() -> None:
    bomb = _gif_bomb()
    assert len(bomb) < 47_000
    video = mg.Video(bomb, media_type="image/gif")
    with pytest.raises(mg.MediaTooLargeError, match="2000 frames of 4000x4000") as info:
        _ = video.frames
    assert info.value.limit == video.max_decoded_bytes
    # The same check guards an animated WebP, an APNG and an MP4: frames x width x height.
    frames = np.stack([np.full((64, 64, 3), 40 * i, dtype=np.uint8) for i in range(4)])  # distinct: none merged
    webp, apng = io.BytesIO(), io.BytesIO()
    pil = [PIL.Image.fromarray(f) for f in frames]
    pil[0].save(webp, format="WEBP", save_all=True, append_images=pil[1:], duration=100)
    pil[0].save(apng, format="PNG", save_all=True, append_images=pil[1:], duration=100)
    mp4 = mg.Video.from_frames(frames, fps=8).read()
    for data, media_type in ((webp.getvalue(), "image/webp"), (apng.getvalue(), "image/png"), (mp4, "video/mp4")):
        small = mg.Video(data, media_type=media_type)
        small.max_decoded_bytes = 3 * 64 * 64 * 3  # three frames' worth: the fourth is one too many
        with pytest.raises(mg.MediaTooLargeError):
            _ = small.frames
        assert mg.Video(data, media_type=media_type).frames.shape == (4, 64, 64, 3)


def test_wav_sample_count_is_checked_before_decoding() -> None:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 2 * 8000)
    audio = mg.Audio(buf.getvalue())
    audio.max_decoded_bytes = 8000 * 2 * 4 - 1  # float32 samples: one byte short
    with pytest.raises(mg.MediaTooLargeError, match="this sound"):
        _ = audio.samples
    assert mg.Audio(buf.getvalue()).samples.shape == (2, 8000)


def test_image_pixels_are_checked_before_decoding() -> None:
    img = mg.Image(png(100, 100))
    img.max_decoded_bytes = 100 * 100 * 4 - 1
    with pytest.raises(mg.MediaTooLargeError, match="this image"):
        img.to_pil()


# -- finding 4: time -----------------------------------------------------------------------------


def test_slow_drip_download_respects_its_deadline(server: MediaServer) -> None:
    body = png() + b"\x00" * 200
    url = server.drip("/slow.png", body, every_s=0.05)  # 10 s for the whole body, a byte at a time
    with pytest.raises(mg.DownloadError, match="deadline of 1 s") as info:
        download(url, timeout=1)
    assert not info.value.retryable
    # It gave up part-way: the server had sent a fraction of the body when the client hung up.
    assert server.dripped["/slow.png"] < len(body)
    with pytest.raises(mg.DownloadError, match="deadline"):
        mg.Image(url=url, download_timeout=0.5).read()


async def test_slow_drip_async_download_respects_its_deadline(server: MediaServer) -> None:
    body = png() + b"\x00" * 200
    url = server.drip("/slow.png", body, every_s=0.05)
    with pytest.raises(mg.DownloadError, match="deadline"):
        await adownload(url, timeout=0.5)
    assert server.dripped["/slow.png"] < len(body)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf")])
def test_download_timeout_must_be_finite_and_positive(server: MediaServer, timeout: float) -> None:
    with pytest.raises(mg.DownloadError, match="finite"):
        download(server.url + "/fox.png", timeout=timeout)


# -- finding 4: redirects and the remote switch ----------------------------------------------------


def test_redirects_between_loopback_hosts_still_work(server: MediaServer) -> None:
    server.redirect("/moved.png", "/fox.png")
    server.redirect("/twice.png", server.url + "/moved.png", status=301)
    assert mg.Image(url=server.url + "/twice.png").read() == png()
    assert server.hits == ["/twice.png", "/moved.png", "/fox.png"]


def test_redirect_to_loopback_admin_json_is_refused(server: MediaServer) -> None:
    # A loopback admin endpoint answering JSON: behind a redirect from a loopback host the move is
    # allowed, but the body is not media, so it is never kept as an image/png.
    server.serve("/admin/config", b'{"db_password": "hunter2"}', "application/json")
    url = server.redirect("/out-0.png", "/admin/config")
    with pytest.raises(mg.DownloadError, match="a JSON document") as info:
        mg.Image(url=url).read()
    assert "hunter2" not in str(info.value)


def test_redirect_from_public_host_to_loopback_is_refused(server: MediaServer) -> None:
    # Public → loopback / private / link-local never; inwards never; outwards and sideways yes.
    assert address_class("93.184.216.34") == "public"
    assert address_class("127.0.0.1") == address_class("::1") == address_class("::ffff:127.0.0.1") == "loopback"
    assert address_class("169.254.169.254") == address_class("fe80::1") == "link-local"
    for private in ("10.0.0.5", "192.168.1.1", "172.16.0.1", "100.64.0.1", "fd00::1", "0.0.0.0"):
        assert address_class(private) == "private", private
    assert not redirect_allowed("public", "loopback")
    assert not redirect_allowed("public", "private")
    assert not redirect_allowed("public", "link-local")
    assert not redirect_allowed("private", "loopback")
    assert not redirect_allowed("loopback", "link-local")
    assert redirect_allowed("loopback", "loopback") and redirect_allowed("private", "public")
    assert redirect_allowed("public", "public") and redirect_allowed("loopback", "private")
    # Over real HTTP: a loopback host redirecting to the cloud metadata address is refused before
    # anything is sent there (that address is not reachable from here: the refusal must come first).
    url = server.redirect("/meta.png", "http://169.254.169.254/latest/meta-data/iam")
    remote = remote_allowed()
    mg.allow_remote_requests(True)  # so that what refuses is the redirect rule, not the remote switch
    try:
        with pytest.raises(mg.DownloadError, match="from a loopback host to a link-local one"):
            download(url, timeout=5)
    finally:
        mg.allow_remote_requests(remote)


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/x.png", "gopher://127.0.0.1/"])
def test_redirects_stay_on_http(server: MediaServer, location: str) -> None:
    url = server.redirect("/r.png", location)
    with pytest.raises(mg.DownloadError, match="only http"):
        mg.Image(url=url).read()


def test_endless_redirects_stop(server: MediaServer) -> None:
    server.redirect("/loop.png", "/loop.png")
    with pytest.raises(mg.DownloadError, match="more than 10 redirects"):
        mg.Image(url=server.url + "/loop.png").read()


def test_remote_switch_holds_for_redirects_and_lazy_save(server: MediaServer, tmp_path: Path) -> None:
    assert not remote_allowed()  # tests/conftest.py switched remote requests off
    url = server.redirect("/away.png", "http://example.com/fox.png")
    with pytest.raises(mg.DownloadError, match="switched off"):
        mg.Image(url=url).read()
    assert server.hits == ["/away.png"]
    with pytest.raises(mg.DownloadError, match="switched off"):
        mg.Image(url="https://example.com/fox.png").save(tmp_path / "fox.png")
    assert not (tmp_path / "fox.png").exists()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("[::1]", True), ("[::ffff:127.0.0.1]", True), ("LOCALHOST", True),
     ("[::ffff:10.0.0.1]", False), ("localhost.example.com", False), ("10.0.0.1", False)],
)  # fmt: skip
def test_hosted_calls_downloads_and_serve_agree_on_what_loopback_is(host: str, loopback: bool) -> None:
    from mediagen.backend import check_remote_allowed
    from mediagen.serve.settings import is_loopback_host

    url = f"http://{host}:9/fox.png"
    hosted = download_ok = True
    try:
        check_remote_allowed(url)
    except RuntimeError:
        hosted = False
    try:
        _check_url(url)
    except mg.DownloadError:
        download_ok = False
    assert hosted is download_ok is is_loopback_host(host) is loopback


# -- finding 4: bodies must be media ---------------------------------------------------------------


def test_html_body_is_not_an_image(server: MediaServer, tmp_path: Path) -> None:
    url = server.serve("/out.png", b"<!DOCTYPE html><html><body>Sign in</body></html>", "image/png")
    with pytest.raises(mg.DownloadError, match="an HTML page") as info:
        mg.Image(url=url).save(tmp_path / "out.png")
    assert not info.value.retryable
    assert not (tmp_path / "out.png").exists()
    server.serve("/empty.png", b"", "image/png")
    with pytest.raises(mg.DownloadError, match="empty"):
        mg.Image(url=server.url + "/empty.png").read()


# -- finding 3: HTML injection through a declared media type ---------------------------------------


def test_data_url_media_type_cannot_inject_html() -> None:
    payload = base64.b64encode(mg.Video.from_frames(np.zeros((2, 8, 8, 3), dtype=np.uint8)).read()).decode()
    evil = 'video/mp4"><script>alert(1)</script><x a="'
    with pytest.raises(mg.InvalidRequestError, match="malformed media type"):
        mg.Video(url=f"data:{evil};base64,{payload}")
    with pytest.raises(mg.InvalidRequestError, match="not a media type"):
        mg.Audio(b"RIFF", media_type="audio/wav<script>")
    assert parse_media_type(evil) is None
    assert parse_media_type(" Video/MP4 ; codecs=avc1") == "video/mp4"
    # Whatever got in by the back door, the HTML is escaped and the type re-checked.
    video = mg.Video(base64.b64decode(payload))
    video._media_type = evil
    shown = video._repr_html_()
    assert "<script>" not in shown and shown.count('"') == 2
    audio = mg.Audio(url='https://cdn.example/a.wav"><script>alert(1)</script>')
    assert "<script>" not in audio._repr_html_()
    assert "javascript" not in mg.Audio(url="javascript:alert(1)//a.wav")._repr_html_()
    result = mg.Result(artifacts=[], provider="x", model="<img src=x onerror=alert(1)>")
    assert "<img" not in result._repr_html_() and html.escape("<img") in result._repr_html_()


def test_concurrent_budget_counts_are_exact() -> None:
    budget = ByteBudget(1000)

    def take() -> None:
        for _ in range(100):
            budget.take(1)

    threads = [threading.Thread(target=take) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert budget.used == 1000
    with pytest.raises(mg.MediaTooLargeError):
        budget.take(1)


@pytest.mark.parametrize("host", ["169.254.169.254", "[fe80::1]"])
def test_link_local_address_is_never_fetched(host: str) -> None:
    remote = remote_allowed()
    mg.allow_remote_requests(True)  # the address rule refuses, before anything is sent
    try:
        with pytest.raises(mg.DownloadError, match="link-local"):
            mg.Image(url=f"http://{host}/latest/meta-data/out.png").read()
    finally:
        mg.allow_remote_requests(remote)


# -- credentials on the first origin only ---------------------------------------------------------


class _HeaderRecorder:
    """Loopback server: `/start` redirects to `/same` (same origin), which redirects to `/media`
    on the other loopback name (another origin), which redirects back to `/final` on the first;
    every request's `x-key` header is recorded."""

    def __init__(self) -> None:
        import http.server

        self.seen: list[tuple[str, str, str | None]] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                host = self.headers.get("host", "")
                recorder.seen.append((host.split(":")[0], self.path, self.headers.get("x-key")))
                hops = {
                    "/start": f"http://127.0.0.1:{recorder.port}/same",
                    "/same": f"http://localhost:{recorder.port}/media",
                    "/media": f"http://127.0.0.1:{recorder.port}/final",
                }
                if self.path in hops:
                    self.send_response(302)
                    self.send_header("Location", hops[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = png()
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("as_function", [False, True])
async def test_headers_are_not_forwarded_across_an_origin_change(as_function: bool) -> None:
    recorder = _HeaderRecorder()
    asked: list[str] = []

    def headers(url: str) -> dict[str, str]:
        asked.append(url)
        return {"x-key": "s3cret"}

    try:
        given = headers if as_function else {"x-key": "s3cret"}
        body = await adownload(f"http://127.0.0.1:{recorder.port}/start", headers=given, timeout=10)
    finally:
        recorder.close()
    assert body == png()
    assert recorder.seen == [
        ("127.0.0.1", "/start", "s3cret"),  # the first origin gets the header...
        ("127.0.0.1", "/same", "s3cret"),  # ...on every hop that stays there,
        ("localhost", "/media", None),  # never after a redirect to another origin,
        ("127.0.0.1", "/final", None),  # nor when a later redirect comes back.
    ]
    if as_function:
        assert asked == [f"http://127.0.0.1:{recorder.port}/start", f"http://127.0.0.1:{recorder.port}/same"]


def test_blocking_download_sends_headers_on_the_first_origin_only() -> None:
    recorder = _HeaderRecorder()
    try:
        assert download(f"http://127.0.0.1:{recorder.port}/same", headers={"x-key": "k"}, timeout=10) == png()
    finally:
        recorder.close()
    assert [key for _host, _path, key in recorder.seen] == ["k", None, None]
