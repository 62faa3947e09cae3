"""The switch that keeps test suites off the network: hosted calls and downloads reach loopback only.

Its own module, below everything that reads it (the Backend contract re-exports it, the download
layer asks it at call time), so the media layer does not depend on the Backend contract.
"""

from __future__ import annotations

import os
import urllib.parse

__all__ = ["allow_remote_requests", "check_remote_allowed", "is_loopback_host", "remote_allowed"]

_allow_remote = os.environ.get("MEDIAGEN_ALLOW_REMOTE", "1") not in ("0", "false", "no")


def allow_remote_requests(allow: bool) -> None:
    """Let hosted backends reach non-loopback hosts (True, the default) or refuse (False).

    Test suites turn it off so that no test can reach a paid API by mistake; loopback servers
    (`mediagen_testkit.replicate_server`) stay reachable. `MEDIAGEN_ALLOW_REMOTE=0` does the same.
    """
    global _allow_remote
    _allow_remote = allow


def check_remote_allowed(url: str) -> None:
    """Called by hosted backends before each request.

    Raises:
        RuntimeError: Remote requests are switched off and `url` is not on this machine.
    """
    if _allow_remote:
        return
    host = urllib.parse.urlsplit(url).hostname or ""
    if not is_loopback_host(host):
        raise RuntimeError(
            f"remote requests are switched off (allow_remote_requests(False) or MEDIAGEN_ALLOW_REMOTE=0); "
            f"refusing to contact {host!r}"
        )


def is_loopback_host(host: str) -> bool:
    """Whether `host` (a name or an IP literal, bracketed or not) is this machine's loopback.

    The one test used by the remote switch, the download layer and `serve`'s bind check, so they
    never disagree: `localhost`, 127.0.0.0/8, `::1`, and an IPv4-mapped `::ffff:127.x.y.z` (which
    `ipaddress` alone does not call loopback before Python 3.13). Any other name is not loopback:
    it would need resolving, and a resolver is exactly what a hostile config could point elsewhere.

    Examples:
        >>> [is_loopback_host(h) for h in ("localhost", "127.0.0.2", "[::1]", "::ffff:127.0.0.1")]
        [True, True, True, True]
        >>> [is_loopback_host(h) for h in ("10.0.0.1", "localhost.evil.example", "", "::ffff:10.0.0.1")]
        [False, False, False, False]
    """
    host = host.strip("[]").split("%", 1)[0]  # an IPv6 zone (`::1%lo`) is not part of the address
    if host.lower().rstrip(".") == "localhost":
        return True
    import ipaddress  # only when a host is checked: `import mediagen` stays light

    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def remote_allowed() -> bool:
    """Whether non-loopback hosts may be reached now (see `allow_remote_requests`)."""
    return _allow_remote
