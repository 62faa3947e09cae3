"""What every command shares: exit codes, where messages go, and how log lines are shown.

Nothing here imports the client or rich at import time: `--help` must stay fast.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import redact

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "cli_logging",
    "console",
    "echo",
    "echo_json",
    "fail",
    "say",
    "use_console",
]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

_console: Any = None
"""The rich console messages go through while a progress display is live (None: plain stderr)."""


def echo(text: str, *, err: bool = False) -> None:
    """Print one line to stdout (or stderr), wherever they point right now."""
    print(text, file=sys.stderr if err else sys.stdout, flush=True)


def console() -> Any:
    """A rich console on stderr: the live one of a progress display, or a new one."""
    if _console is not None:
        return _console
    from rich.console import Console

    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


@contextmanager
def use_console(live: Any) -> Iterator[None]:
    """Send messages (and log lines) through `live` while a progress display owns the terminal."""
    global _console
    before, _console = _console, live
    try:
        yield
    finally:
        _console = before


def say(markup: str) -> None:
    """Print one line of rich markup on stderr, never wrapped (one message, one line)."""
    console().print(markup, soft_wrap=True, highlight=False)


def echo_json(obj: Any) -> None:
    """Print one JSON object, with every known secret hidden in every string of it."""
    from ..safety import redact_secrets

    echo(json.dumps(redact_secrets(obj)))


def fail(exc: BaseException, code: int, as_json: bool) -> int:
    """Report an error (as JSON on stdout, or one line on stderr) and return its exit code.

    A server may echo a token back in an error body: the text is redacted wherever it came from.
    """
    if as_json:
        echo_json({"error": type(exc).__name__, "message": str(exc)})
    else:
        from rich.markup import escape

        say(f"[red]error[/] ({type(exc).__name__}): {escape(redact(str(exc)))}")
    return code


class _Handler(logging.Handler):
    """Shows mediagen's log records as one line each: `warning: ...`, or dimmed info."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not take the command down
            message = str(record.msg)
        try:
            from rich.markup import escape

            if record.levelno >= logging.ERROR:
                say(f"[red]error[/]: {escape(message)}")
            elif record.levelno >= logging.WARNING:
                say(f"[yellow]warning[/]: {escape(message)}")
            else:
                say(f"[dim]{escape(message)}[/]")
        except Exception:
            self.handleError(record)


@contextmanager
def cli_logging(verbosity: int) -> Iterator[None]:
    """Show mediagen's log lines while a command runs: warnings, or more with `-v` / `-vv`.

    The client logs each warning of a result once (on the `mediagen` logger); the commands do not
    print them again, so each warning is one line. With `-vv` the `mediagen` logger is at DEBUG,
    which also turns off the local backends' filters of third-party noise.
    """
    logger = logging.getLogger("mediagen")
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = _Handler(level)
    before = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    # The CLI's handler is the place these lines appear; Python's last-resort handler must not print them again.
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before[0])
        logger.propagate = before[1]
