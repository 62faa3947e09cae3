"""Replicate model references: `owner/name`, optionally pinned to a version (`owner/name:<64 hex>`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mediagen.errors import ModelNotFoundError

from .errors import PROVIDER

__all__ = ["ModelRef"]

_REF = re.compile(r"^(?P<owner>[A-Za-z0-9][\w.-]*)/(?P<name>[A-Za-z0-9][\w.-]*)(?::(?P<version>[0-9a-f]{64}))?$")


@dataclass(frozen=True)
class ModelRef:
    """`owner/name`, with a version when the model string pins one (`owner/name:<64 hex>`)."""

    owner: str
    name: str
    version: str | None = None

    @classmethod
    def parse(cls, model: str) -> ModelRef:
        """Read a model reference.

        Raises:
            ModelNotFoundError: `model` is not of the form `owner/name` or `owner/name:<version>`.

        Examples:
            >>> ModelRef.parse("stability-ai/sdxl:" + "3" * 64).version == "3" * 64
            True
        """
        match = _REF.match(model.strip())
        if match is None:
            raise ModelNotFoundError(
                f"{model!r} is not a Replicate model reference: use 'owner/name' or "
                "'owner/name:<64-hex version id>', e.g. 'replicate:black-forest-labs/flux-schnell'",
                provider=PROVIDER,
                model=model,
            )
        return cls(match["owner"], match["name"], match["version"])

    @property
    def name_ref(self) -> str:
        """`owner/name`, without the version."""
        return f"{self.owner}/{self.name}"

    def __str__(self) -> str:
        return f"{self.name_ref}:{self.version}" if self.version else self.name_ref
