"""The Backend contract: what a provider implements to serve mediagen requests.

A backend is a class with a `provider` name and one required coroutine, `run`. Everything else
has a sensible default. The client does validation, capability checks, splitting `n` into calls,
deadlines, cancellation and events around it; the backend only turns one request into one result.

Examples:
    A complete backend, registered under `"echo"` and used as `model="echo:anything"`::

        import mediagen as mg

        class EchoBackend(mg.Backend):
            provider = "echo"
            tasks = frozenset({"text-to-image"})

            async def run(self, request, model, ctx):
                ctx.emit(mg.Progress(step=1, total=1))
                if request.negative_prompt:
                    ctx.warn("negative_prompt", "echo has no negative prompt")
                img = mg.Image.from_array(np.zeros((8, 8, 3), "uint8"))
                return mg.Result(artifacts=[img] * request.n, provider=self.provider, model=model)

        mg.register_backend("echo", EchoBackend)
"""

from __future__ import annotations

import ipaddress
import os
import threading
import time
import urllib.parse
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from .errors import DeadlineExceededError, UnsupportedRequestError
from .events import NULL_SINK, Event, EventSink, Log, Progress
from .requests import TASKS, Request, Task
from .results import GenerationWarning, Result

if TYPE_CHECKING:
    from .policies import Policy

__all__ = [
    "CONTRACT_VERSION",
    "Backend",
    "Capabilities",
    "RunContext",
    "allow_remote_requests",
    "check_remote_allowed",
]

CONTRACT_VERSION = 1
"""Bumped when the contract changes in a way that breaks backends; checked when one loads."""


class Capabilities(BaseModel):
    """What one model of a backend can do. The client checks requests against it before running."""

    model_config = ConfigDict(frozen=True)

    tasks: frozenset[Task] = frozenset(TASKS)
    """Tasks the model serves."""
    max_outputs_per_call: int | None = Field(None, ge=1)
    """Most outputs one `run` may return; the client splits larger `n` into several calls."""
    max_width: int | None = None
    """Largest width in pixels (images and video)."""
    max_height: int | None = None
    """Largest height in pixels (images and video)."""
    max_frames: int | None = None
    """Most video frames per output."""
    max_duration_s: float | None = None
    """Longest audio or video, in seconds."""


class RunContext:
    """What a backend's `run` gets besides the request: deadline, cancellation and an event sink.

    Args:
        deadline: `time.monotonic()` value by which the job must end; None for no deadline.
        emit: Where events go; never None (the default drops them).
        strict: When True, `warn` raises `UnsupportedRequestError` instead of recording a warning.
        provider: The provider running the job (put on warnings and errors).
        model: The model running the job.
        job_id: The job's id, stamped on events.
        previews: Emit a `Preview` every this many steps, where the backend can; None for none.
    """

    def __init__(
        self,
        *,
        deadline: float | None = None,
        emit: EventSink = NULL_SINK,
        strict: bool = False,
        provider: str = "",
        model: str = "",
        job_id: str = "",
        previews: int | None = None,
    ) -> None:
        self.deadline = deadline
        self.previews = previews
        """Steps between `Preview` events the job asked for (None: none)."""
        self._emit = emit
        self.strict = strict
        self.provider = provider
        self.model = model
        self.job_id = job_id
        self.warnings: list[GenerationWarning] = []
        self.cancelled = threading.Event()
        """Set when the job is cancelled or its deadline passes: worker threads poll it."""
        self._policy: Policy | None = None

    @property
    def policy(self) -> Policy:
        """The provider's policy for this call (retry, limits, attempt deadlines); never None.

        A backend with `handles_retries = True` wraps its own transport calls in
        `ctx.policy.retry.run(...)` when `ctx.policy.retry` is set.
        """
        if self._policy is None:
            from .policies import Policy

            self._policy = Policy()
        return self._policy

    @policy.setter
    def policy(self, value: Policy) -> None:
        self._policy = value

    def emit(self, event: Event) -> None:
        """Send an event to the job's listeners (thread-safe when the sink is)."""
        self._emit(event)

    def progress(self, step: int, total: int) -> None:
        """Shorthand for `emit(Progress(step, total))`."""
        self._emit(Progress(step=step, total=total))

    def log(self, message: str) -> None:
        """Shorthand for `emit(Log(message))`."""
        self._emit(Log(message=message))

    def warn(self, feature: str | GenerationWarning, details: str = "") -> None:
        """Record that a setting was not honoured; raise instead when the caller asked for strict.

        Args:
            feature: The request field (or a ready `GenerationWarning`).
            details: What happened and what to do instead.

        Raises:
            UnsupportedRequestError: The job runs with `strict=True`.
        """
        warning = feature if isinstance(feature, GenerationWarning) else GenerationWarning.unsupported(feature, details)
        if self.strict and warning.type in ("unsupported", "compatibility"):
            raise UnsupportedRequestError(
                f"{self.provider}:{self.model} cannot honour {warning.feature}: {warning.message} "
                "(strict=True turns this warning into an error)",
                feature=warning.feature,
                provider=self.provider or None,
                model=self.model or None,
            )
        if warning not in self.warnings:
            self.warnings.append(warning)

    def time_left(self) -> float | None:
        """Seconds until the deadline (None without one; never negative)."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def check_deadline(self) -> None:
        """Raise if the deadline has passed (for loops that cannot be cancelled from outside).

        Raises:
            DeadlineExceededError: The deadline passed.
        """
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise DeadlineExceededError(
                "the job's deadline passed; raise timeout= or make the request smaller",
                provider=self.provider or None,
                model=self.model or None,
            )


class Backend(ABC):
    """A provider of generations. Subclass it, set `provider`, implement `run`.

    Obligations of `run`:

    - Return a `Result` with `request.n` artifacts (or fewer when the model made fewer, with a
      warning), output `i` made with seed `request.seed + i` when a seed is given.
    - Report every request field the model cannot honour with `ctx.warn(field, why)`; never drop
      one silently. Take provider-specific settings from `request.options`.
    - Emit `Progress` (and `Log`) events through `ctx.emit` when the model reports progress.
    - Be cancellable: on `asyncio.CancelledError` stop the work (cancel a remote prediction,
      interrupt a local pipeline), then re-raise.
    - Raise only `MediagenError`s (translate vendor exceptions at the boundary).

    Apart from `__init__`, all methods are private or part of the contract.
    """

    contract_version: ClassVar[int] = CONTRACT_VERSION
    """The contract version this backend was written for."""
    provider: ClassVar[str]
    """The provider name, the part of a model string before the colon."""
    tasks: ClassVar[frozenset[Task]] = frozenset(TASKS)
    """Every task some model of this provider can serve (used to suggest backends)."""
    remote: ClassVar[bool] = False
    """True for hosted backends: they send requests over the network."""
    handles_retries: ClassVar[bool] = False
    """True when `run` retries its own transport calls under `ctx.policy.retry` (hosted backends,
    which alone know which calls can be repeated without a second billable prediction); the client
    then never retries a whole run of this backend."""

    def __init__(self, **settings: Any) -> None:
        """Create the backend from its `[providers.<name>]` settings in `mediagen.toml`."""
        self.settings = settings

    async def capabilities(self, model: str) -> Capabilities:
        """What `model` can do. The default claims the provider's `tasks` with no limits."""
        return Capabilities(tasks=self.tasks)

    async def revision(self, model: str) -> str | None:
        """The exact revision `model` resolves to now (a commit hash, a version id), if known.

        The result cache keys on it, so an output made by an older revision is not served after
        the model changed. The default, None, means "unknown": the model string alone is the key.
        Backends should remember the answer rather than ask a server every time.
        """
        return None

    @abstractmethod
    async def run(self, request: Request, model: str, ctx: RunContext) -> Result:
        """Generate what `request` asks for with `model`.

        Args:
            request: A validated request; `request.n` may already be capped by
                `Capabilities.max_outputs_per_call`.
            model: The model part of the model string (after the first colon).
            ctx: Deadline, cancellation, warnings and the event sink.

        Returns:
            The result, with `provider` and `model` set.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook, not abstract on purpose
        """Release what the backend holds (connections, pipelines). Safe to call twice."""

    @classmethod
    def availability(cls) -> str | None:
        """Why this backend cannot run here (a missing package, no token), or None when it can."""
        return None

    def describe(self) -> dict[str, Any]:
        """State worth showing in `mediagen backends` (loaded models, devices, limits)."""
        return {}


# -- the switch that keeps test suites off the network ---------------------------------------

_allow_remote = os.environ.get("MEDIAGEN_ALLOW_REMOTE", "1") not in ("0", "false", "no")


def allow_remote_requests(allow: bool) -> None:
    """Let hosted backends reach non-loopback hosts (True, the default) or refuse (False).

    Test suites turn it off so that no test can reach a paid API by mistake; loopback servers
    (`mediagen_testkit.replicate_server`) stay reachable. `MEDIAGEN_ALLOW_REMOTE=0` does the same.
    """
    global _allow_remote
    _allow_remote = allow


def check_remote_allowed(url: str) -> None:
    """Called by hosted backends before each request.

    Raises:
        RuntimeError: Remote requests are switched off and `url` is not on this machine.
    """
    if _allow_remote:
        return
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise RuntimeError(
            f"remote requests are switched off (allow_remote_requests(False) or MEDIAGEN_ALLOW_REMOTE=0); "
            f"refusing to contact {host!r}"
        )
