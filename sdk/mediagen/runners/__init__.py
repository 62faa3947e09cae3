"""The client's execution path, in layers that all have one shape: `run(request, model, ctx)`.

Each layer is a `Runner` wrapping the next, the way pydantic-ai's `FallbackModel` and
`ConcurrencyLimitedModel` wrap a model; each file reads alone::

    Cached             serve a stored result; store a fresh one            cache.py
    JobDeadline        one deadline for the whole job                      deadline.py
    Fallback           try the chain's members in order, cool down outages fallback.py
    Retrying           retry what may pass, under the member's policy      retry.py
    AttemptDeadline    cut one attempt off at its policy's deadline        deadline.py
    SplitOutputs       capabilities, `n` split into calls, results merged  split.py
    Limited            the provider's shared concurrency and rate limits   limits.py
    CallBackend        `backend.run(request, model, ctx)`                  call.py

A layer never changes the context it is given: a chain member and each attempt run under a copy
(`RunContext.derive`) with their own deadline, cancel flag and warnings. `mediagen.Client` builds
the stack per job (`Client.runner`).
"""

from __future__ import annotations

from .base import BackendSource, ModelId, Runner
from .cache import Cached
from .call import CallBackend
from .deadline import AttemptDeadline, JobDeadline
from .fallback import Fallback
from .limits import Limited
from .retry import Retrying
from .split import SplitOutputs, check_capabilities, split_n

__all__ = [
    "AttemptDeadline",
    "BackendSource",
    "Cached",
    "CallBackend",
    "Fallback",
    "JobDeadline",
    "Limited",
    "ModelId",
    "Retrying",
    "Runner",
    "SplitOutputs",
    "check_capabilities",
    "split_n",
]
