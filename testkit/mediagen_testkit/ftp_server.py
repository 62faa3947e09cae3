"""A loopback FTP server: a real remote filesystem for fsspec output tests (`ftp://` URLs).

FTP is the fsspec protocol a test can serve on loopback with one pure-Python package
(`pyftpdlib`): writes, renames, listings and deletes cross a real socket, from this process or
from Ray workers. It binds 127.0.0.1 only and serves one user whose password is in the URL.

Examples:
    >>> with FtpServer(tmp_path, password="pw-0123456789") as srv:  # doctest: +SKIP
    ...     run_batch(jsonl, srv.url + "/out", ...)
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["FtpServer"]

# Full rights: e=cwd l=list r=read a=append d=delete f=rename m=mkdir w=write M=chmod T=mtime.
FULL = "elradfmwMT"


class FtpServer:
    """Serve `root` over FTP on 127.0.0.1 until closed.

    Args:
        root: The directory the user sees as `/`.
        user: The login.
        password: Its password (part of `url`).
        perm: pyftpdlib permission letters (drop `f` to refuse renames, `w` to refuse writes).
    """

    def __init__(self, root: Path, *, user: str = "mediagen", password: str, perm: str = FULL) -> None:
        from pyftpdlib.authorizers import DummyAuthorizer
        from pyftpdlib.handlers import FTPHandler
        from pyftpdlib.servers import ThreadedFTPServer

        # One INFO line per command otherwise: a handler of ours stops pyftpdlib from adding its own.
        quiet = logging.getLogger("pyftpdlib")
        quiet.setLevel(logging.WARNING)
        if not quiet.handlers:
            quiet.addHandler(logging.NullHandler())
        authorizer = DummyAuthorizer()
        authorizer.add_user(user, password, str(root), perm=perm)
        # A refused login answers at once (pyftpdlib waits 3 s by default, to slow down guessing).
        handler: Any = type("Handler", (FTPHandler,), {"authorizer": authorizer, "auth_failed_timeout": 0.05})
        self._server: Any = ThreadedFTPServer(("127.0.0.1", 0), handler)
        self.port = int(self._server.socket.getsockname()[1])
        self.url = f"ftp://{user}:{password}@127.0.0.1:{self.port}"
        """The server's root as a URL, credentials included."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"timeout": 0.2, "handle_exit": False}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving and drop every connection."""
        self._server.close_all()
        self._thread.join(timeout=10)

    def __enter__(self) -> FtpServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
