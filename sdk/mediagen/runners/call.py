"""The innermost layer: hand the request to the provider's backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import BackendSource, ModelId

if TYPE_CHECKING:
    from ..backend import RunContext
    from ..requests import Request
    from ..results import Result

__all__ = ["CallBackend"]


class CallBackend:
    """`backend.run(request, model, ctx)` on the backend of `model.provider`.

    Args:
        backends: The backend of a provider (created on first use).
    """

    def __init__(self, backends: BackendSource) -> None:
        self._backends = backends

    async def run(self, request: Request, model: ModelId, ctx: RunContext) -> Result:
        """One backend call."""
        backend = await self._backends(model.provider)
        return await backend.run(request, model.model, ctx)
