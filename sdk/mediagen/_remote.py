"""The switch that keeps test suites off the network: hosted calls and downloads reach loopback only.

Its own module, below everything that reads it (the Backend contract re-exports it, the download
layer asks it at call time), so the media layer does not depend on the Backend contract.
"""

from __future__ import annotations

import os
import urllib.parse

__all__ = ["allow_remote_requests", "check_remote_allowed", "remote_allowed"]

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
    try:
        import ipaddress  # only when a URL is checked: `import mediagen` stays light

        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise RuntimeError(
            f"remote requests are switched off (allow_remote_requests(False) or MEDIAGEN_ALLOW_REMOTE=0); "
            f"refusing to contact {host!r}"
        )


def remote_allowed() -> bool:
    """Whether non-loopback hosts may be reached now (see `allow_remote_requests`)."""
    return _allow_remote
