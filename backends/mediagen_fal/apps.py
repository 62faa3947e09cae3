"""fal app ids: `owner/alias[/path]`, and the queue URLs each part goes into.

A job is submitted to the whole id (`fal-ai/flux/schnell`), but its status, result and cancel
live under the owner/alias part only (`fal-ai/flux/requests/{id}/status`). Ids under a namespace
(`workflows/<owner>/<alias>/...`, `comfy/...`) keep the namespace in both, as the official client does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mediagen.errors import ModelNotFoundError

from .errors import PROVIDER

__all__ = ["AppId", "NAMESPACES"]

NAMESPACES = ("workflows", "comfy")
"""First segments that are a namespace, not an owner (as in `fal_client.client.APP_NAMESPACES`)."""

# Letters, digits, dots, dashes and underscores: no "..", no query, no percent-escapes can sneak in.
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,127}$")


@dataclass(frozen=True)
class AppId:
    """A parsed app id.

    Examples:
        >>> app = AppId.parse("fal-ai/flux/schnell")
        >>> app.submit_path, app.base_path
        ('fal-ai/flux/schnell', 'fal-ai/flux')
    """

    owner: str
    alias: str
    path: str | None = None
    namespace: str | None = None

    @classmethod
    def parse(cls, model: str) -> AppId:
        """Read an app id.

        Raises:
            ModelNotFoundError: Not of the form `owner/alias[/path]`, or a segment holds characters
                that have no place in a URL path.
        """
        parts = model.strip().strip("/").split("/")
        namespace = parts.pop(0) if parts and parts[0] in NAMESPACES else None
        if len(parts) < 2 or not all(_SEGMENT.match(p) and ".." not in p for p in parts):
            raise ModelNotFoundError(
                f"{model!r} is not a fal app id: use 'owner/alias' or 'owner/alias/path', "
                "e.g. 'fal:fal-ai/flux/schnell'",
                provider=PROVIDER,
                model=model,
            )
        return cls(parts[0], parts[1], "/".join(parts[2:]) or None, namespace)

    @property
    def base_path(self) -> str:
        """What status, result and cancel URLs are under: `[namespace/]owner/alias`."""
        prefix = f"{self.namespace}/" if self.namespace else ""
        return f"{prefix}{self.owner}/{self.alias}"

    @property
    def submit_path(self) -> str:
        """Where a job is submitted: the whole id."""
        return f"{self.base_path}/{self.path}" if self.path else self.base_path

    def request_path(self, request_id: str, what: str = "") -> str:
        """The path of one job's `status`, `cancel` or (with `what=""`) result.

        Raises:
            ValueError: `request_id` is not an id fal would hand out (it comes from the network,
                and must not steer the URL).
        """
        if not _REQUEST_ID.match(request_id):
            raise ValueError(f"not a fal request id: {request_id[:60]!r}")
        tail = f"/{what}" if what else ""
        return f"{self.base_path}/requests/{request_id}{tail}"

    def __str__(self) -> str:
        return self.submit_path
