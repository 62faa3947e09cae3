"""Safety nets: file names from providers, secrets kept out of text, credentials kept on their origin.

- `safe_filename(name)` turns a name a provider chose (the last part of an output URL, a file
  name in a response) into one plain file name: no directories, no `..`, no control characters,
  no device names. Whatever it returns, `directory / safe_filename(name)` stays in `directory`.
- `RedactingFilter` hides credentials in every record of the `mediagen` loggers, using
  `mediagen.errors.redact`. The client installs it (`install_log_redaction()`) when it is created
  and when it loads a backend, so loggers that backend modules create are covered too.
- `register_secret(value)` / `redact_secrets(obj)`: providers register the credentials they hold;
  every error message, `detail`, log line and the CLI's `--json` output is then cleaned of them,
  whatever text they arrived in.
- `same_origin(url, base)` / `check_credentialed_url(url, base)`: a provider sends its token only to
  the origin the user configured; a URL the server hands back (a pagination `next` link, a
  `Location`) on another origin is refused before anything is sent.
"""

from __future__ import annotations

import logging
import re
import unicodedata
import urllib.parse
from typing import Any

from .errors import SECRET_ENV_VARS, ProviderError, known_secrets, redact, register_secret

__all__ = [
    "safe_filename",
    "RedactingFilter",
    "install_log_redaction",
    "register_secret",
    "known_secrets",
    "SECRET_ENV_VARS",
    "redact_secrets",
    "origin_of",
    "same_origin",
    "check_credentialed_url",
]

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


def redact_secrets(value: Any, *secrets: str | None) -> Any:
    """A copy of `value` (JSON-like: dicts, lists, strings) with every string redacted (`errors.redact`).

    For output built from several sources (the CLI's `--json`): each string is cleaned of the given
    secrets, the registered ones and the environment's, before it is serialised.

    Examples:
        >>> redact_secrets({"message": "bad token abcd1234efgh"}, "abcd1234efgh")
        {'message': 'bad token ***'}
    """
    if isinstance(value, str):
        return redact(value, *secrets)
    if isinstance(value, dict):
        return {redact_secrets(k, *secrets): redact_secrets(v, *secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_secrets(item, *secrets) for item in value]
    return value


_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> tuple[str, str, int] | None:
    """`(scheme, host, port)` of an absolute http(s) URL; None for anything else.

    Examples:
        >>> origin_of("https://API.replicate.com/v1/predictions")
        ('https', 'api.replicate.com', 443)
        >>> origin_of("/v1/predictions") is None
        True
    """
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower().rstrip("."), port or _DEFAULT_PORTS[scheme]


def same_origin(url: str, base: str) -> bool:
    """Whether `url` may carry the credentials configured for `base`.

    A path (`/v1/...`, resolved against `base`) may; an absolute URL only on `base`'s scheme, host
    and port; anything else (`//host/x`, other schemes, unparsable text) may not.
    """
    if url.startswith("/") and not url.startswith("//"):
        return True
    found, wanted = origin_of(url), origin_of(base)
    return found is not None and found == wanted


def check_credentialed_url(url: str, base: str, *, provider: str | None = None, model: str | None = None) -> None:
    """Refuse, before anything is sent, a request with credentials to any origin but `base`'s.

    Args:
        url: Where the request would go (often a URL the server handed back).
        base: The endpoint the user configured (environment, constructor or their own config).
        provider: For the error.
        model: For the error.

    Raises:
        ProviderError: `url` is on another origin (not retryable: the same answer will come back).
    """
    if not same_origin(url, base):
        shown = urllib.parse.urlsplit(url)._replace(query="", fragment="").geturl() if "://" in url else url[:80]
        raise ProviderError(
            f"the server pointed to {shown!r}, outside the configured endpoint {base!r}; the API token is "
            "only sent to the endpoint you configured, so this request was not sent",
            provider=provider,
            model=model,
            retryable=False,
        )


class RedactingFilter(logging.Filter):
    """Rewrites each record so its message and traceback hold no credentials.

    The message is formatted here (`msg % args`) and redacted, so a token passed as an argument is
    caught too; a traceback is rendered and redacted into `exc_text`, which formatters print as is.
    """

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: D102
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is logging's problem; leave it to report it
            return True
        # `redact` hides the registered secrets and the environment's token variables itself.
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
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
