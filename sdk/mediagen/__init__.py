"""mediagen: one typed, async client for images, video, audio and 3D meshes, local or hosted.

Examples:
    >>> import mediagen as mg
    >>> async with mg.Client() as client:  # doctest: +SKIP
    ...     res = await client.image("a red fox in snow", model="test:fake", seed=7)
    ...     res.artifacts[0].save("fox.png")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._registry import available_providers, get_backend_class, parse_model, register_backend, registry
from ._remote import allow_remote_requests
from .errors import (
    AllBackendsFailedError,
    AuthenticationError,
    BudgetExceededError,
    ConfigError,
    DeadlineExceededError,
    DownloadError,
    EndpointUnreachableError,
    GenerationFailedError,
    InvalidRequestError,
    MediagenError,
    MediaTooLargeError,
    ModelNotFoundError,
    OutputExistsError,
    ProviderError,
    RateLimitedError,
    UnsupportedRequestError,
)

if TYPE_CHECKING:  # the lazy names below, spelled out for type checkers and IDEs
    from ._config import Config, load_config
    from ._mux import concat, mux
    from ._types import AudioInput, ImageInput, VideoInput
    from .artifacts import Artifact, Audio, Image, Mesh, Video
    from .backend import CONTRACT_VERSION, Backend, Capabilities, RunContext
    from .cache import ResultCache
    from .client import Client
    from .events import Cancelled, Completed, Event, Failed, Log, Preview, Progress, Queued, Started
    from .jobs import Job, JobStatus
    from .ledger import Ledger
    from .policies import ConcurrencyLimiter, Policy, RateLimiter, RetryPolicy
    from .provenance import read_provenance
    from .requests import AudioRequest, ImageRequest, LoRA, MeshRequest, Request, VideoRequest
    from .results import GenerationWarning, Result, Timings, Usage
    from .safety import safe_filename
    from .sync import SyncClient, SyncJob

from ._version import __version__

__all__ = [
    "__version__",
    # client
    "Client",
    "SyncClient",
    "Job",
    "JobStatus",
    "SyncJob",
    # requests
    "ImageRequest",
    "VideoRequest",
    "AudioRequest",
    "MeshRequest",
    "LoRA",
    "Request",
    "ImageInput",
    "VideoInput",
    "AudioInput",
    # results and artifacts
    "Result",
    "Timings",
    "Usage",
    "GenerationWarning",
    "Artifact",
    "Image",
    "Video",
    "Audio",
    "Mesh",
    "mux",
    "concat",
    # events
    "Event",
    "Queued",
    "Started",
    "Progress",
    "Preview",
    "Log",
    "Completed",
    "Failed",
    "Cancelled",
    # backends and registry
    "Backend",
    "Capabilities",
    "RunContext",
    "CONTRACT_VERSION",
    "allow_remote_requests",
    "registry",
    "register_backend",
    "get_backend_class",
    "parse_model",
    "available_providers",
    # config
    "Config",
    "load_config",
    # errors
    "MediagenError",
    "InvalidRequestError",
    "UnsupportedRequestError",
    "AuthenticationError",
    "RateLimitedError",
    "ProviderError",
    "EndpointUnreachableError",
    "GenerationFailedError",
    "DeadlineExceededError",
    "ModelNotFoundError",
    "DownloadError",
    "BudgetExceededError",
    "AllBackendsFailedError",
    "MediaTooLargeError",
    "OutputExistsError",
    "ConfigError",
    # reliability: policies, cache, ledger, provenance, safety
    "Policy",
    "RetryPolicy",
    "RateLimiter",
    "ConcurrencyLimiter",
    "ResultCache",
    "Ledger",
    "read_provenance",
    "safe_filename",
]

_LAZY = {
    "Config": "._config",
    "load_config": "._config",
    "AudioInput": "._types",
    "ImageInput": "._types",
    "VideoInput": "._types",
    "Artifact": ".artifacts",
    "Audio": ".artifacts",
    "Image": ".artifacts",
    "Mesh": ".artifacts",
    "Video": ".artifacts",
    "CONTRACT_VERSION": ".backend",
    "Backend": ".backend",
    "Capabilities": ".backend",
    "RunContext": ".backend",
    "Cancelled": ".events",
    "Completed": ".events",
    "Event": ".events",
    "Failed": ".events",
    "Log": ".events",
    "Preview": ".events",
    "Progress": ".events",
    "Queued": ".events",
    "Started": ".events",
    "AudioRequest": ".requests",
    "ImageRequest": ".requests",
    "LoRA": ".requests",
    "MeshRequest": ".requests",
    "Request": ".requests",
    "VideoRequest": ".requests",
    "GenerationWarning": ".results",
    "Result": ".results",
    "Timings": ".results",
    "Usage": ".results",
    "Client": ".client",
    "Job": ".jobs",
    "JobStatus": ".jobs",
    "SyncClient": ".sync",
    "SyncJob": ".sync",
    "Policy": ".policies",
    "RetryPolicy": ".policies",
    "RateLimiter": ".policies",
    "ConcurrencyLimiter": ".policies",
    "ResultCache": ".cache",
    "Ledger": ".ledger",
    "read_provenance": ".provenance",
    "safe_filename": ".safety",
    "mux": "._mux",
    "concat": "._mux",
}


def __getattr__(name: str) -> Any:
    # Everything built on pydantic or asyncio loads on first use: `import mediagen` stays light
    # (a module's public names are all renamed to `mediagen.X` when it first loads).
    if name in _LAZY:
        import importlib

        module = importlib.import_module(_LAZY[name], __name__)
        for other, where in _LAZY.items():
            if where == _LAZY[name]:
                value = getattr(module, other)
                if isinstance(value, type) or (callable(value) and hasattr(value, "__code__")):
                    try:
                        value.__module__ = "mediagen"
                    except (AttributeError, TypeError):
                        pass
                globals()[other] = value
        return globals()[name]
    raise AttributeError(f"module 'mediagen' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def _set_module() -> None:
    # Reprs, docs and tracebacks say `mediagen.Image`, not `mediagen.artifacts.Image`.
    for name in __all__:
        obj = globals().get(name)
        if obj is not None and hasattr(obj, "__module__") and isinstance(obj, type):
            try:
                obj.__module__ = "mediagen"
            except (AttributeError, TypeError):
                pass


_set_module()
