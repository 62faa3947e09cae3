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

import enum
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._remote import allow_remote_requests, check_remote_allowed
from .errors import DeadlineExceededError, InvalidRequestError, UnsupportedRequestError
from .events import NULL_SINK, Event, EventSink, Log, Progress
from .requests import TASKS, Request, Task
from .results import GenerationWarning, Result

if TYPE_CHECKING:
    from .policies import Policy

__all__ = [
    "CONTRACT_VERSION",
    "Backend",
    "Cancellation",
    "Capabilities",
    "RunContext",
    "allow_remote_requests",
    "check_remote_allowed",
    "parse_options",
]

CONTRACT_VERSION = 1
"""Bumped when the contract changes in a way that breaks backends; checked when one loads."""


class _Keep(enum.Enum):
    token = 0


_KEEP = _Keep.token


class Capabilities(BaseModel):
    """What one model of a backend can do. The client checks requests against it before running."""

    model_config = ConfigDict(frozen=True)

    tasks: frozenset[Task] = frozenset(TASKS)
    """Tasks the model serves."""
    max_outputs_per_call: int | None = Field(None, ge=1)
    """Most outputs one `run` may return; the client splits larger `n` into several calls."""
    max_seeded_outputs_per_call: int | None = Field(None, ge=1)
    """Most outputs one `run` may return for a request with a seed (None: `max_outputs_per_call`).
    A model that takes one seed for a whole batch says 1: output `i` must come from `seed + i`, so
    the client then sends a seeded request as one call per output."""
    max_width: int | None = None
    """Largest width in pixels (images and video)."""
    max_height: int | None = None
    """Largest height in pixels (images and video)."""
    max_frames: int | None = None
    """Most video frames per output."""
    max_duration_s: float | None = None
    """Longest audio or video, in seconds."""


class Cancellation(threading.Event):
    """A cancel flag that worker threads poll; setting it also sets every flag derived from it.

    Each attempt of a job runs under its own flag (`RunContext.derive`), so cutting one attempt
    off at its deadline leaves the job's flag and the next attempt's alone, while cancelling the
    job reaches every attempt at once, before any coroutine sees its `CancelledError`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._children: weakref.WeakSet[Cancellation] = weakref.WeakSet()
        self._children_lock = threading.Lock()

    def child(self) -> Cancellation:
        """A new flag that is set whenever this one is (at once, if it already is)."""
        child = Cancellation()
        with self._children_lock:
            self._children.add(child)
            if self.is_set():
                child.set()
        return child

    def set(self) -> None:
        """Set this flag and every flag derived from it."""
        super().set()
        with self._children_lock:
            children = list(self._children)
        for child in children:
            child.set()


class RunContext:
    """What a backend's `run` gets besides the request: deadline, cancellation and an event sink.

    A context is never changed by the layers that run a job: each chain member and each attempt
    gets its own copy from `derive`, with its own deadline, cancel flag and warnings.

    Args:
        deadline: `time.monotonic()` value by which the job must end; None for no deadline.
        emit: Where events go; never None (the default drops them).
        strict: When True, `warn` raises `UnsupportedRequestError` instead of recording a warning.
        provider: The provider running the job (put on warnings and errors).
        model: The model running the job.
        job_id: The job's id, stamped on events.
        policy: The provider's policy for this call; None for the defaults.
        cancelled: The cancel flag; a new one by default.
        fallbacks_left: How many members of a fallback chain wait behind this one (0: the last or only).
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
        policy: Policy | None = None,
        cancelled: Cancellation | None = None,
        fallbacks_left: int = 0,
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
        self.fallbacks_left = fallbacks_left
        """How many members of a fallback chain wait behind this one (0: the last or only one)."""
        self.warnings: list[GenerationWarning] = []
        """Settings this attempt could not honour (see `warn`)."""
        self.cancelled: Cancellation = cancelled if cancelled is not None else Cancellation()
        """Set when the job is cancelled or its deadline passes: worker threads poll it."""
        self._policy = policy
        self._notes: list[GenerationWarning] = []

    def derive(
        self,
        *,
        deadline: float | _Keep | None = _KEEP,
        provider: str | None = None,
        model: str | None = None,
        policy: Policy | None = None,
        fallbacks_left: int | None = None,
    ) -> RunContext:
        """A copy for one chain member or one attempt: its own warnings and cancel flag.

        The copy shares the event sink and the job's notes; its cancel flag is set whenever this
        context's is. Nothing of this context changes.

        Args:
            deadline: A new deadline (None: none); by default this context's.
            provider: The provider of the copy; by default this context's.
            model: The model of the copy; by default this context's.
            policy: The policy of the copy; by default this context's.
            fallbacks_left: Chain members waiting behind the copy; by default this context's.
        """
        copy = RunContext(
            deadline=self.deadline if isinstance(deadline, _Keep) else deadline,
            emit=self._emit,
            strict=self.strict,
            provider=self.provider if provider is None else provider,
            model=self.model if model is None else model,
            job_id=self.job_id,
            policy=self._policy if policy is None else policy,
            cancelled=self.cancelled.child(),
            fallbacks_left=self.fallbacks_left if fallbacks_left is None else fallbacks_left,
            previews=self.previews,
        )
        copy._notes = self._notes  # one journal per job: what each layer did on the way
        return copy

    def note(self, warning: GenerationWarning) -> None:
        """Record why the job took the path it took (a retry, a fallback); the result carries it."""
        self._notes.append(warning)

    @property
    def notes(self) -> list[GenerationWarning]:
        """The job's notes so far, oldest first (retries, fallbacks, skipped members)."""
        return list(self._notes)

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


OptionsT = TypeVar("OptionsT", bound=BaseModel)


def parse_options(
    cls: type[OptionsT], options: Mapping[str, Any], *, label: str, provider: str, model: str | None = None
) -> OptionsT:
    """Validate a request's `options` with a backend's own pydantic model, before anything is sent.

    Args:
        cls: The backend's options model (one attribute docstring per setting).
        options: `request.options`.
        label: The provider as people write it, for the message ("Replicate", "fal" ...).
        provider: The provider name, put on the error.
        model: The model, put on the error.

    Raises:
        InvalidRequestError: One line per bad setting (`options.<name>: why`); an unknown key lists
            the known ones when the model forbids extras.
    """
    try:
        return cls.model_validate(dict(options))
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown option; known: {', '.join(cls.model_fields)}"
            lines.append(f"  options.{where}: {msg}")
        raise InvalidRequestError(
            f"invalid {label} options:\n" + "\n".join(lines),
            errors=[{"loc": ("options", *err["loc"]), "msg": err["msg"], "type": err["type"]} for err in exc.errors()],
            provider=provider,
            model=model,
        ) from None
