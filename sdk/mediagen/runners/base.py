"""What every layer of the execution path is: a `Runner`, and the model it runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    from ..backend import Backend, RunContext
    from ..requests import Request
    from ..results import Result

__all__ = ["BackendSource", "ModelId", "Runner"]


class ModelId(NamedTuple):
    """One model of a chain: the provider and the model part of `"provider:model"`."""

    provider: str
    model: str

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}"


class Runner(Protocol):
    """Runs a request on a model: a backend call, or a layer wrapping another runner."""

    async def run(self, request: Request, model: ModelId, ctx: RunContext) -> Result:
        """Generate what `request` asks for with `model`, under `ctx` (which it must not change)."""
        ...


BackendSource = Callable[[str], Awaitable["Backend"]]
"""The backend of a provider, created on first use (`Client.backend`)."""
