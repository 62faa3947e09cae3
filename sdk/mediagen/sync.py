"""The blocking twin of `Client`, for scripts and notebooks.

`SyncClient` is not a copy of the async client: it runs a real `Client` on one private event
loop in a daemon thread and waits for each call. It never touches the caller's loop, so it works
inside Jupyter (where a loop is already running) as well as in plain scripts. After `fork()` the
child gets a fresh loop thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import Any, TypeVar

from ._fields import AudioFields, ImageFields, MeshFields, Unpack, VideoFields
from .client import USE_CLIENT_DEFAULT, CacheArg, Client, ModelArg, Timeout
from .events import Event
from .jobs import Job, JobStatus
from .policies import Policy
from .requests import Request
from .results import Result

__all__ = ["SyncClient", "SyncJob"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def _get_loop() -> asyncio.AbstractEventLoop:
    """The private loop shared by every SyncClient of this process, started on first use."""
    global _loop, _thread
    with _lock:
        if _loop is None or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="mediagen-sync-loop", daemon=True)
            thread.start()
            _loop, _thread = loop, thread
        return _loop


def _reset_after_fork() -> None:
    # The loop thread does not survive fork(); a child must start its own.
    global _loop, _thread, _lock
    _loop, _thread, _lock = None, None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _run(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    loop = _get_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()  # never started: close it so Python does not warn that it was never awaited
        raise RuntimeError("a SyncClient cannot be used from inside its own event loop; use mediagen.Client")
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result(timeout)
    except concurrent.futures.CancelledError as exc:
        # The same type as the async client raises: cancellation is asyncio's own CancelledError.
        raise asyncio.CancelledError(*exc.args) from None
    except KeyboardInterrupt:
        # Ctrl-C in a script or notebook cancels the work, remote predictions included.
        future.cancel()
        raise


class SyncJob:
    """A job of a `SyncClient`: the same surface as `Job`, blocking."""

    def __init__(self, job: Job) -> None:
        self._job = job

    @property
    def id(self) -> str:
        """The job's id."""
        return self._job.id

    @property
    def status(self) -> JobStatus:
        """The job's status now."""
        return self._job.status

    def done(self) -> bool:
        """True once the job has ended."""
        return self._job.done()

    def events(self) -> Iterator[Event]:
        """Every event of the job from the start, as a plain generator."""
        agen = self._job.events()

        async def step() -> Event | None:
            try:
                return await agen.__anext__()
            except StopAsyncIteration:
                return None

        while (event := _run(step())) is not None:
            yield event

    def result(self, timeout: float | None = None) -> Result:
        """Wait for the job and return its result (see `Job.result`)."""
        return _run(self._job.result(), timeout)

    def cancel(self) -> None:
        """Cancel the job and wait until its backend has stopped."""
        _run(self._job.cancel())

    def __repr__(self) -> str:
        return repr(self._job).replace("mediagen.Job", "mediagen.SyncJob")


class SyncClient:
    """The blocking client: `Client`'s surface without `await`.

    Takes the same arguments as `Client`.

    Examples:
        >>> with mg.SyncClient() as client:  # doctest: +SKIP
        ...     client.image("a red fox", model="test:fake").artifacts[0].save("fox.png")
    """

    def __init__(self, **kwargs: Any) -> None:
        async def make() -> Client:
            return Client(**kwargs)

        self._client = _run(make())

    @property
    def client(self) -> Client:
        """The async client underneath (its methods must run on the SyncClient's loop)."""
        return self._client

    @property
    def config(self) -> Any:
        """The configuration in force."""
        return self._client.config

    @property
    def usage(self) -> Any:
        """The client's usage ledger (see `Client.usage`)."""
        return self._client.usage

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Cancel unfinished jobs and close every backend."""
        _run(self._client.aclose())

    def submit(
        self,
        request: Request,
        *,
        model: ModelArg = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        strict: bool | None = None,
        cache: CacheArg = USE_CLIENT_DEFAULT,
        provenance: bool | None = None,
        policy: Policy | Mapping[str, Any] | None = None,
        previews: int | None = None,
    ) -> SyncJob:
        """Start a generation and return its job at once (see `Client.submit`)."""

        async def submit() -> Job:
            return self._client.submit(
                request,
                model=model,
                timeout=timeout,
                strict=strict,
                cache=cache,
                provenance=provenance,
                policy=policy,
                previews=previews,
            )

        return SyncJob(_run(submit()))

    def generate(
        self,
        request: Request,
        *,
        model: ModelArg = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        strict: bool | None = None,
        on_event: Callable[[Event], Any] | None = None,
        cache: CacheArg = USE_CLIENT_DEFAULT,
        provenance: bool | None = None,
        policy: Policy | Mapping[str, Any] | None = None,
        previews: int | None = None,
    ) -> Result:
        """Generate and wait (see `Client.generate`); `on_event` runs on the client's loop thread."""
        return _run(
            self._client.generate(
                request,
                model=model,
                timeout=timeout,
                strict=strict,
                on_event=on_event,
                cache=cache,
                provenance=provenance,
                policy=policy,
                previews=previews,
            )
        )

    def image(
        self,
        prompt: str,
        *,
        model: ModelArg = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        strict: bool | None = None,
        on_event: Callable[[Event], Any] | None = None,
        cache: CacheArg = USE_CLIENT_DEFAULT,
        provenance: bool | None = None,
        policy: Policy | Mapping[str, Any] | None = None,
        **fields: Unpack[ImageFields],
    ) -> Result:
        """Generate images (see `Client.image`)."""
        return _run(
            self._client.image(
                prompt,
                model=model,
                timeout=timeout,
                strict=strict,
                on_event=on_event,
                cache=cache,
                provenance=provenance,
                policy=policy,
                **fields,
            )
        )

    def video(
        self,
        prompt: str | None = None,
        *,
        model: ModelArg = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        strict: bool | None = None,
        on_event: Callable[[Event], Any] | None = None,
        cache: CacheArg = USE_CLIENT_DEFAULT,
        provenance: bool | None = None,
        policy: Policy | Mapping[str, Any] | None = None,
        **fields: Unpack[VideoFields],
    ) -> Result:
        """Generate a video (see `Client.video`)."""
        return _run(
            self._client.video(
                prompt,
                model=model,
                timeout=timeout,
                strict=strict,
                on_event=on_event,
                cache=cache,
                provenance=provenance,
                policy=policy,
                **fields,
            )
        )

    def audio(
        self,
        prompt: str,
        *,
        model: ModelArg = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        strict: bool | None = None,
        on_event: Callable[[Event], Any] | None = None,
        cache: CacheArg = USE_CLIENT_DEFAULT,
        provenance: bool | None = None,
        policy: Policy | Mapping[str, Any] | None = None,
        **fields: Unpack[AudioFields],
    ) -> Result:
        """Generate sound (see `Client.audio`)."""
        return _run(
            self._client.audio(
                prompt,
                model=model,
                timeout=timeout,
                strict=strict,
                on_event=on_event,
                cache=cache,
                provenance=provenance,
                policy=policy,
                **fields,
            )
        )

    def mesh(
        self,
        prompt: str | None = None,
        *,
        model: ModelArg = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        strict: bool | None = None,
        on_event: Callable[[Event], Any] | None = None,
        cache: CacheArg = USE_CLIENT_DEFAULT,
        provenance: bool | None = None,
        policy: Policy | Mapping[str, Any] | None = None,
        **fields: Unpack[MeshFields],
    ) -> Result:
        """Generate a 3D mesh (see `Client.mesh`)."""
        return _run(
            self._client.mesh(
                prompt,
                model=model,
                timeout=timeout,
                strict=strict,
                on_event=on_event,
                cache=cache,
                provenance=provenance,
                policy=policy,
                **fields,
            )
        )
