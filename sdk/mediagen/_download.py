"""Fetching media URLs, bounded: bytes, time, redirects, and what the body must be.

Every artifact download goes through `adownload` (and its blocking twin `download`), which holds
these lines whatever the server does:

- **Bytes**: a body past `max_bytes` is refused, whether the server declares its length or not; a
  `data:` URL is held to the same cap before it is decoded; a `ByteBudget` shared by one result's
  outputs bounds their total.
- **Time**: `timeout` is a wall-clock deadline for the whole download, every redirect and retry
  included, so a server that drips a byte a second cannot hold the caller longer.
- **Redirects** are followed by hand, at most 10, each checked before it is fetched: only http(s);
  never to a host more internal than the one the download started on (public → private network or
  loopback, private → loopback), never to a link-local address (cloud metadata endpoints); and the
  `allow_remote_requests(False)` / `MEDIAGEN_ALLOW_REMOTE=0` switch holds for every hop. A
  link-local address is never fetched at all, redirect or not.
- **Content**: the body must sniff as a media type mediagen knows; an HTML page, a JSON document or
  anything else is an error, never an image.
- **Credentials**: `headers` (a provider's key for its own file service) are sent only while the
  download is still on the origin it started on (scheme, host and port); once a redirect leaves
  it, no later hop carries them, even one that comes back.

Errors are `DownloadError`s (`MediaTooLargeError` for the bounds), retryable only when the failure
may pass (a dropped connection, a 5xx, 408, 429).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import math
import socket
import threading
import urllib.parse
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union

from ._config import DEFAULT_DOWNLOAD_ATTEMPTS, DEFAULT_DOWNLOAD_TIMEOUT_S, DEFAULT_MAX_DOWNLOAD_BYTES
from ._remote import is_loopback_host, remote_allowed
from .errors import DownloadError, MediaTooLargeError

if TYPE_CHECKING:
    import httpx

__all__ = [
    "ByteBudget",
    "MAX_REDIRECTS",
    "STEP_TIMEOUT_S",
    "address_class",
    "adownload",
    "download",
    "redirect_allowed",
]

MAX_REDIRECTS = 10
"""Redirects followed before a download gives up."""

STEP_TIMEOUT_S = 60.0
"""Longest single network step (connect, one read) of a download, within its total deadline."""

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
AddressClass = Literal["loopback", "link-local", "private", "public"]
_DEPTH: dict[str, int] = {"loopback": 0, "link-local": 1, "private": 1, "public": 2}
_T = TypeVar("_T")

Headers = Union[Mapping[str, str], Callable[[str], Mapping[str, str]]]
"""Request headers of a download: a mapping, or a function of the URL about to be fetched."""


class ByteBudget:
    """Bytes a group of downloads (one result's outputs) may fetch in all; safe across threads.

    Args:
        max_bytes: The total.
        what: How errors name the group.
    """

    def __init__(self, max_bytes: int, *, what: str = "this result's outputs") -> None:
        self.max_bytes = max_bytes
        self.what = what
        self.used = 0
        self._lock = threading.Lock()

    def take(self, count: int, url: str = "") -> None:
        """Count `count` more bytes against the budget.

        Raises:
            MediaTooLargeError: The total would pass `max_bytes`.
        """
        with self._lock:
            if self.used + count > self.max_bytes:
                raise MediaTooLargeError(
                    f"{self.what} passed their total download cap of {self.max_bytes} bytes "
                    f"(max_result_bytes){': ' + url[:120] if url else ''}",
                    limit=self.max_bytes,
                )
            self.used += count

    def give_back(self, count: int) -> None:
        """Return bytes counted by a try that failed (its body was thrown away)."""
        with self._lock:
            self.used = max(0, self.used - count)

    def __repr__(self) -> str:
        return f"ByteBudget(used={self.used}, max_bytes={self.max_bytes})"


# -- addresses and redirects --------------------------------------------------------------------


def address_class(address: str) -> AddressClass:
    """How internal an IP address is: `loopback`, `link-local`, `private` or `public`.

    `private` covers everything that is not routable on the internet (RFC 1918, unique-local IPv6,
    carrier-grade NAT, reserved, multicast, unspecified); an IPv4-mapped IPv6 address counts as
    the IPv4 address it maps.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone (`fe80::1%eth0`) is not part of it
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified:
        return "private"
    return "public"


def redirect_allowed(origin: AddressClass, target: AddressClass) -> bool:
    """Whether a download that started on an `origin` host may be redirected to a `target` one.

    A redirect never moves inwards (public → private or loopback, private → loopback), and never to
    a link-local address (where cloud metadata services answer) unless the download started there.
    """
    if target == "link-local":
        return origin == "link-local"
    return _DEPTH[target] >= _DEPTH[origin]


async def _host_class(url: str) -> AddressClass:
    """The class of the most internal address `url`'s host resolves to (a literal is not resolved)."""
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").strip("[]")
    try:
        return address_class(host)
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise DownloadError(f"cannot resolve {host!r} ({exc}): {_short(url)}") from exc
    classes = {address_class(str(info[4][0])) for info in infos}
    return min(classes, key=lambda c: (_DEPTH[c], c != "link-local"), default="public")


def _check_url(url: str) -> None:
    """Refuse a URL (the first or a redirect's) that is not http(s) or is remote while remote is off."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DownloadError(f"cannot download {url[:80]!r}: only http(s) and data: URLs are fetched", retryable=False)
    if remote_allowed():
        return
    host = parts.hostname.strip("[]")
    if not is_loopback_host(host):
        raise DownloadError(
            "remote requests are switched off (allow_remote_requests(False) or MEDIAGEN_ALLOW_REMOTE=0); "
            f"refusing to download from {host!r}",
            retryable=False,
        )


# -- the download ---------------------------------------------------------------------------------


def _short(url: str) -> str:
    return url[:120]


def _check_timeout(timeout: float) -> float:
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not math.isfinite(timeout) or timeout <= 0:
        raise DownloadError(
            f"a download timeout must be a finite number of seconds > 0, got {timeout!r}", retryable=False
        )
    return float(timeout)


def _backoff_s(failures: int) -> float:
    # Short: a download is retried because a connection dropped or a CDN hiccuped, not to wait out
    # an outage (fallback chains handle those).
    return float(min(2.0, 0.25 * 2 ** (failures - 1)))


def _check_declared_size(declared: str | None, max_bytes: int, url: str) -> None:
    # Refuse before reading a byte when the server says the body is too big (the count while
    # streaming still catches a server that says nothing, or lies).
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise MediaTooLargeError(
            f"download of {declared} bytes passes the size cap of {max_bytes} bytes: {_short(url)}", limit=max_bytes
        )


def _check_media(body: bytes, content_type: str | None, url: str) -> None:
    """A body must be media: an HTML error page or a JSON document is not an image."""
    from ._media import sniff_media_type

    if sniff_media_type(body) is not None:
        return
    head = body[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head:
        what = "an HTML page"
    elif head.startswith((b"{", b"[")):
        what = "a JSON document"
    elif not body:
        what = "empty"
    else:
        what = "of no media type mediagen knows"
    declared = f" (Content-Type {content_type[:60]!r})" if content_type else ""
    raise DownloadError(f"the downloaded body is {what}{declared}, not media: {_short(url)}", retryable=False)


async def adownload(
    url: str,
    *,
    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
    timeout: float = DEFAULT_DOWNLOAD_TIMEOUT_S,
    client: object | None = None,
    attempts: int = DEFAULT_DOWNLOAD_ATTEMPTS,
    budget: ByteBudget | None = None,
    headers: Headers | None = None,
) -> bytes:
    """Fetch a media URL without blocking the event loop, within every bound in the module docs.

    Args:
        url: An http(s) or `data:` URL.
        max_bytes: The size cap of the body.
        timeout: Seconds the whole download may take (redirects and retries included).
        client: An `httpx.AsyncClient` whose connection pool to use; one is made otherwise. Its
            own redirect setting is ignored: redirects are always checked here.
        attempts: Tries in all for a dropped connection, a 5xx, 408 or 429.
        budget: A total shared with other downloads (one result's outputs).
        headers: Sent with each request while the download is still on `url`'s origin, never after
            a redirect has left it; a function is called with the URL of each such request.

    Returns:
        The body.

    Raises:
        DownloadError: The fetch failed, took too long, was redirected where it may not go, or
            its body is not media.
        MediaTooLargeError: The body passed `max_bytes` or the budget.
    """
    if url.startswith("data:"):
        from ._media import decode_data_url

        data, _declared = decode_data_url(url, max_bytes=max_bytes)
        if budget is not None:
            budget.take(len(data), "a data: URL")
        _check_media(data, _declared, "a data: URL")
        return data
    seconds = _check_timeout(timeout)
    _check_url(url)
    try:
        return await asyncio.wait_for(
            _with_retries(
                url,
                max_bytes=max_bytes,
                seconds=seconds,
                client=client,
                attempts=attempts,
                budget=budget,
                headers=headers,
            ),
            seconds,
        )
    except asyncio.TimeoutError:
        raise DownloadError(
            f"download did not finish within its deadline of {seconds:g} s: {_short(url)}", retryable=False
        ) from None


def download(
    url: str,
    *,
    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
    timeout: float = DEFAULT_DOWNLOAD_TIMEOUT_S,
    attempts: int = DEFAULT_DOWNLOAD_ATTEMPTS,
    budget: ByteBudget | None = None,
    headers: Headers | None = None,
) -> bytes:
    """Blocking twin of `adownload` (same bounds, same errors).

    It runs the download on a private event loop in a worker thread, so it works the same inside
    a running loop (a notebook, async code that calls `read()`) and outside one.
    """
    return _run_blocking(
        adownload(url, max_bytes=max_bytes, timeout=timeout, attempts=attempts, budget=budget, headers=headers)
    )


def _run_blocking(coro: Coroutine[Any, Any, _T]) -> _T:
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mediagen-download") as pool:
        return pool.submit(asyncio.run, coro).result()


async def _with_retries(
    url: str,
    *,
    max_bytes: int,
    seconds: float,
    client: object | None,
    attempts: int,
    budget: ByteBudget | None,
    headers: Headers | None,
) -> bytes:
    import httpx

    own = not isinstance(client, httpx.AsyncClient)
    http = client if isinstance(client, httpx.AsyncClient) else httpx.AsyncClient()
    step = httpx.Timeout(min(STEP_TIMEOUT_S, seconds))
    try:
        for failures in range(1, max(1, attempts) + 1):
            try:
                return await _fetch(http, url, max_bytes=max_bytes, step=step, budget=budget, headers=headers)
            except DownloadError as exc:
                if not exc.retryable or failures >= attempts:
                    raise
                await asyncio.sleep(_backoff_s(failures))
        raise AssertionError("unreachable")  # pragma: no cover
    finally:
        if own:
            await http.aclose()


def _headers_for(headers: Headers | None, url: str) -> dict[str, str]:
    if headers is None:
        return {}
    return dict(headers(url) if callable(headers) else headers)


async def _fetch(
    http: httpx.AsyncClient,
    url: str,
    *,
    max_bytes: int,
    step: httpx.Timeout,
    budget: ByteBudget | None,
    headers: Headers | None = None,
) -> bytes:
    """One try: follow checked redirects, then stream the body under the caps."""
    import httpx

    from .safety import origin_of

    current = url
    taken = 0
    home = origin_of(url)
    at_home = headers is not None  # the headers go out until a redirect leaves the first origin
    try:
        origin = await _host_class(url)
        if origin == "link-local":
            # Where cloud metadata services answer (169.254.169.254); never a place for media.
            raise DownloadError(f"refused to download from a link-local address: {_short(url)}", retryable=False)
        for _hop in range(MAX_REDIRECTS + 1):
            sent = _headers_for(headers, current) if at_home else {}
            request = http.build_request("GET", current, timeout=step, headers=sent)
            response = await http.send(request, stream=True, follow_redirects=False)
            try:
                location = response.headers.get("location")
                if response.status_code in _REDIRECTS and location:
                    target = urllib.parse.urljoin(current, location)
                    _check_url(target)
                    where = await _host_class(target)
                    if not redirect_allowed(origin, where):
                        raise DownloadError(
                            f"refused a redirect from a {origin} host to a {where} one "
                            f"({_short(current)} -> {_short(target)})",
                            retryable=False,
                        )
                    at_home = at_home and origin_of(target) == home
                    current = target
                    continue
                if response.status_code >= 400:
                    raise DownloadError(
                        f"download failed with HTTP {response.status_code}: {_short(current)}",
                        status=response.status_code,
                    )
                _check_declared_size(response.headers.get("content-length"), max_bytes, current)
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise MediaTooLargeError(
                            f"download passed the size cap of {max_bytes} bytes: {_short(current)}", limit=max_bytes
                        )
                    if budget is not None:
                        budget.take(len(chunk), current)
                        taken += len(chunk)
                    chunks.append(chunk)
                body = b"".join(chunks)
                _check_media(body, response.headers.get("content-type"), current)
                return body
            finally:
                await response.aclose()
    except BaseException as exc:
        if budget is not None and taken:
            budget.give_back(taken)  # a retry counts its own bytes
        if isinstance(exc, httpx.HTTPError):
            raise DownloadError(f"download failed ({type(exc).__name__}: {exc}): {_short(current)}") from exc
        raise
    raise DownloadError(f"more than {MAX_REDIRECTS} redirects: {_short(url)}", retryable=False)
