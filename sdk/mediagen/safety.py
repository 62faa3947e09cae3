"""Safety nets: file names from providers, and secrets kept out of log lines.

- `safe_filename(name)` turns a name a provider chose (the last part of an output URL, a file
  name in a response) into one plain file name: no directories, no `..`, no control characters,
  no device names. Whatever it returns, `directory / safe_filename(name)` stays in `directory`.
- `RedactingFilter` hides credentials in every record of the `mediagen` loggers, using
  `mediagen.errors.redact`. The client installs it (`install_log_redaction()`) when it is created
  and when it loads a backend, so loggers that backend modules create are covered too.
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
import urllib.parse

from .errors import redact

__all__ = ["safe_filename", "RedactingFilter", "install_log_redaction", "register_secret"]

# Windows refuses these as file names whatever the suffix; a file may travel there.
_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"COM{i}" for i in range(1, 10)} | {f"LPT{i}" for i in range(1, 10)}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_LEN = 200


def safe_filename(name: str | None, default: str = "output") -> str:
    """A file name made safe to join onto a directory.

    Keeps the last path component of `name` (a URL's path, a POSIX or Windows path), replaces
    anything but letters, digits, `.`, `_` and `-`, drops leading dots (no hidden files, no `..`),
    avoids Windows device names and caps the length, keeping the suffix.

    Args:
        name: The name a provider gave (may be a URL, a path, or anything at all).
        default: Used when nothing usable is left.

    Returns:
        A non-empty name without separators.

    Examples:
        >>> safe_filename("https://cdn.example/x/../../out%200.png?sig=1")
        'out_0.png'
        >>> safe_filename("../../etc/passwd")
        'passwd'
        >>> safe_filename("..")
        'output'
    """
    text = name or ""
    if "://" in text:
        text = urllib.parse.urlsplit(text).path
    text = urllib.parse.unquote(text)
    text = text.replace("\\", "/").split("/")[-1]
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = _UNSAFE.sub("_", text).strip("._- ")
    if not text:
        text = safe_filename(default, "output") if default != name else "output"
    stem, dot, suffix = text.rpartition(".")
    if not dot:
        stem, suffix = text, ""
    if stem.split(".")[0].upper() in _RESERVED:
        text = "_" + text
    if len(text) > _MAX_LEN:
        keep = f".{suffix[:16]}" if dot else ""
        text = text[: _MAX_LEN - len(keep)] + keep
    return text


# Secrets known by value (a token passed to a constructor) are hidden wherever they appear.
_secrets: set[str] = set()
_ENV_SECRETS = ("REPLICATE_API_TOKEN", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def register_secret(value: str | None) -> None:
    """Hide `value` in every later log line (for a token given to a constructor, not the environment)."""
    if value and len(value) >= 4:
        _secrets.add(value)


class RedactingFilter(logging.Filter):
    """Rewrites each record so its message and traceback hold no credentials.

    The message is formatted here (`msg % args`) and redacted, so a token passed as an argument is
    caught too; a traceback is rendered and redacted into `exc_text`, which formatters print as is.
    """

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: D102
        secrets = [*_secrets, *(os.environ.get(name) for name in _ENV_SECRETS)]
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is logging's problem; leave it to report it
            return True
        record.msg = redact(message, *secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, *secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, *secrets)
        return True


_FILTER = RedactingFilter()


def install_log_redaction() -> None:
    """Put the redacting filter on the `mediagen` logger and each `mediagen.*` logger that exists.

    A logger's filters do not apply to its children's records, so each child gets it too; this
    is cheap and safe to call again (the client does, after loading a backend).
    """
    manager = logging.Logger.manager
    names = ["mediagen", *(n for n in list(manager.loggerDict) if n.startswith("mediagen."))]
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
