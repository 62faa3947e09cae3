"""Fallback chains, cooldowns, attempt deadlines, retries and limits (sdk/routing.py, sdk/policies.py)."""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

import numpy as np
import pytest

import mediagen as mg
from mediagen.backend import RunContext
from mediagen.errors import (
    AllBackendsFailedError,
    DeadlineExceededError,
    GenerationFailedError,
    InvalidRequestError,
    ProviderError,
    RateLimitedError,
)
from mediagen.policies import ConcurrencyLimiter, Policy, RateLimiter, RetryPolicy
from mediagen.requests import Request
from mediagen.testing import FakeBackend, FunctionBackend


def _image(tag: str) -> mg.Image:
    return mg.Image.from_array(np.zeros((8, 8, 3), dtype=np.uint8), metadata={"tag": tag})


def _failing(provider: str, error: BaseException) -> FakeBackend:
    backend = FakeBackend(error=error)
    backend.provider = provider  # type: ignore[misc]
    return backend


def _fallback_notes(result: mg.Result) -> list[mg.GenerationWarning]:
    return [w for w in result.warnings if w.feature == "fallback"]


# -- fallback chains --------------------------------------------------------------------------------


async def test_chain_falls_back_to_the_working_backend_with_a_warning() -> None:
    bad = _failing("bad", ProviderError("service unavailable", status=503))
    good = FakeBackend()
    async with mg.Client(backends={"bad": bad, "test": good}) as client:
        res = await client.image("a fox", model=["bad:m", "test:fake"], seed=1, width=16, height=16)
    assert (res.provider, res.model) == ("test", "fake")
    assert bad.calls == 1 and good.calls == 1
    [note] = _fallback_notes(res)
    assert "bad:m failed" in note.message and "ProviderError" in note.message and note.provider == "bad"


async def test_alias_naming_a_list_is_a_chain() -> None:
    config = mg.Config(aliases={"robust": ["bad:m", "test:fake"]})
    bad = _failing("bad", RateLimitedError("slow down", retry_after=0.0))
    async with mg.Client(config=config, backends={"bad": bad, "test": FakeBackend()}) as client:
        res = await client.image("a fox", model="robust", width=16, height=16)
    assert res.provider == "test" and _fallback_notes(res)


@pytest.mark.parametrize(
    "error",
    [
        InvalidRequestError("prompt too long for this model"),
        GenerationFailedError("refused: unsafe content", refused=True),
        ProviderError("bad input", status=422),
    ],
    ids=["invalid", "refusal", "4xx"],
)
async def test_errors_another_backend_cannot_fix_do_not_fall_through(error: Exception) -> None:
    first = _failing("first", error)
    second = FakeBackend()
    async with mg.Client(backends={"first": first, "test": second}) as client:
        with pytest.raises(type(error)):
            await client.image("a fox", model=["first:m", "test:fake"], width=16, height=16)
    assert first.calls == 1 and second.calls == 0


async def test_an_invalid_request_never_reaches_any_backend() -> None:
    backend = FakeBackend()
    async with mg.Client(backends={"test": backend}) as client:
        with pytest.raises(InvalidRequestError):
            await client.image("a fox", model=["test:a", "test:b"], width=13)
    assert backend.calls == 0


async def test_every_member_failing_raises_one_error_holding_all() -> None:
    a = _failing("a", ProviderError("down", status=503))
    b = _failing("b", RateLimitedError("busy", retry_after=0.0))
    async with mg.Client(backends={"a": a, "b": b}) as client:
        with pytest.raises(AllBackendsFailedError) as info:
            await client.image("a fox", model=["a:x", "b:y"], width=16, height=16)
    assert [name for name, _ in info.value.errors] == ["a:x", "b:y"]
    assert info.value.retryable


async def test_cooldown_skips_a_failed_backend_then_tries_it_again() -> None:
    bad = _failing("bad", ProviderError("outage", status=503))
    good = FakeBackend()
    providers = {"bad": {"policy": {"cooldown_s": 0.3}}}
    async with mg.Client(backends={"bad": bad, "test": good}, providers=providers) as client:
        chain = ["bad:m", "test:fake"]
        await client.image("a fox", model=chain, width=16, height=16)
        assert bad.calls == 1

        res = await client.image("a fox", model=chain, width=16, height=16)
        assert bad.calls == 1, "skipped while cooling down"
        assert any("cooling down" in w.message for w in _fallback_notes(res))

        await asyncio.sleep(0.35)
        await client.image("a fox", model=chain, width=16, height=16)
        assert bad.calls == 2, "tried again once the cooldown is over"
    assert good.calls == 3


async def test_a_success_ends_the_cooldown_and_the_last_member_is_always_tried() -> None:
    flaky_fail = {"on": True}

    def run(request: Request, model: str, ctx: RunContext) -> mg.Image:
        if flaky_fail["on"]:
            raise ProviderError("outage", status=503)
        return _image("ok")

    only = FunctionBackend(run, provider="only")
    async with mg.Client(backends={"only": only, "test": FakeBackend()}) as client:
        await client.image("a fox", model=["only:m", "test:fake"], width=16, height=16)
        assert client.cooldowns.cooling("only:m") > 0
        flaky_fail["on"] = False
        # Cooling, but the last member of its chain: it is tried rather than failing untried.
        res = await client.image("a fox", model=["test:fake", "only:m"], width=16, height=16)
        assert res.provider == "test"
        res = await client.image("a fox", model="only:m", width=16, height=16)
        assert res.provider == "only"


# -- attempt deadlines ------------------------------------------------------------------------------


class _Hung:
    """A backend run that never ends on its own; counts starts and cancellations."""

    def __init__(self) -> None:
        self.started = 0
        self.cancelled = 0

    async def __call__(self, request: Request, model: str, ctx: RunContext) -> mg.Image:
        self.started += 1
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.cancelled += 1
            assert ctx.cancelled.is_set(), "worker threads are told before the coroutine is cancelled"
            raise
        return _image("never")


async def test_a_hung_first_member_gets_only_its_attempt_timeout() -> None:
    hung = _Hung()
    providers = {"hung": {"policy": {"attempt_timeout": 0.2}}}
    async with mg.Client(backends={"hung": FunctionBackend(hung, provider="hung")}, providers=providers) as client:
        begun = time.monotonic()
        res = await client.image("a fox", model=["hung:m", "test:fake"], width=16, height=16, timeout=10)
        took = time.monotonic() - begun
    assert res.provider == "test"
    # At least the attempt timeout, and the job (10 s) still succeeded: only the attempt was cut.
    assert took >= 0.15
    assert (hung.started, hung.cancelled) == (1, 1)
    assert "attempt deadline" in _fallback_notes(res)[0].message


async def test_attempt_share_slices_the_job_deadline() -> None:
    hung = _Hung()
    async with mg.Client(backends={"hung": FunctionBackend(hung, provider="hung")}) as client:
        begun = time.monotonic()
        res = await client.image(
            "a fox",
            model=["hung:m", "test:fake"],
            width=16,
            height=16,
            timeout=1.0,
            policy={"attempt_share": 0.3},
        )
        took = time.monotonic() - begun
    assert res.provider == "test" and hung.cancelled == 1
    # Waited its 30 % share (0.3 s) before moving on; finishing at all shows the rest was left.
    assert took >= 0.25, took


async def test_the_backend_sees_the_attempt_deadline() -> None:
    seen: list[float | None] = []

    def run(request: Request, model: str, ctx: RunContext) -> mg.Image:
        seen.append(ctx.time_left())
        return _image("ok")

    async with mg.Client(backends={"fn": FunctionBackend(run, provider="fn")}) as client:
        await client.image("a fox", model="fn:m", timeout=30, policy={"attempt_timeout": 2})
    assert seen[0] is not None and seen[0] <= 2.0


async def test_a_lone_model_past_its_attempt_timeout_fails_with_a_deadline_error() -> None:
    hung = _Hung()
    async with mg.Client(backends={"hung": FunctionBackend(hung, provider="hung")}) as client:
        with pytest.raises(DeadlineExceededError, match="attempt deadline"):
            await client.image("a fox", model="hung:m", policy={"attempt_timeout": 0.1})
    assert hung.cancelled == 1


async def test_an_attempt_that_finishes_as_it_is_cut_off_is_used_not_rerun() -> None:
    calls = collections.Counter[str]()

    async def stubborn(request: Request, model: str, ctx: RunContext) -> mg.Image:
        calls["stubborn"] += 1
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            pass  # a backend that finishes its work anyway and returns it
        return _image("stubborn")

    backends = {"s": FunctionBackend(stubborn, provider="s"), "test": FakeBackend()}
    async with mg.Client(backends=backends) as client:
        res = await client.image("a fox", model=["s:m", "test:fake"], policy={"attempt_timeout": 0.1})
    assert res.provider == "s" and res.artifacts[0].metadata["tag"] == "stubborn"
    assert calls["stubborn"] == 1 and backends["test"].calls == 0  # type: ignore[attr-defined]


# -- retries ------------------------------------------------------------------------------------------


def _scripted(errors: list[BaseException], provider: str = "fn") -> FunctionBackend:
    script = list(errors)

    def run(request: Request, model: str, ctx: RunContext) -> mg.Image:
        if script:
            raise script.pop(0)
        return _image("ok")

    return FunctionBackend(run, provider=provider)


FAST_RETRY = {"retry": {"attempts": 3, "backoff_base_s": 0.01, "jitter": 0}}


async def test_retryable_failures_are_retried_with_warnings() -> None:
    backend = _scripted([RateLimitedError("busy", retry_after=0.02), ProviderError("oops", status=502)])
    async with mg.Client(backends={"fn": backend}, providers={"fn": {"policy": FAST_RETRY}}) as client:
        res = await client.image("a fox", model="fn:m")
    assert backend.calls == 3
    notes = [w for w in res.warnings if w.feature == "retry"]
    assert len(notes) == 2 and "try 2 of 3" in notes[0].message


async def test_no_retries_unless_a_policy_asks_for_them() -> None:
    backend = _scripted([ProviderError("oops", status=503)])
    async with mg.Client(backends={"fn": backend}) as client:
        with pytest.raises(ProviderError):
            await client.image("a fox", model="fn:m")
    assert backend.calls == 1


async def test_non_retryable_errors_and_exhausted_attempts_raise() -> None:
    invalid = _scripted([InvalidRequestError("no")])
    async with mg.Client(backends={"fn": invalid}) as client:
        with pytest.raises(InvalidRequestError):
            await client.image("a fox", model="fn:m", policy=FAST_RETRY)
    assert invalid.calls == 1

    down = _scripted([ProviderError("down", status=503)] * 5)
    async with mg.Client(backends={"fn": down}) as client:
        with pytest.raises(ProviderError):
            await client.image("a fox", model="fn:m", policy=FAST_RETRY)
    assert down.calls == 3


async def test_a_backend_that_handles_retries_is_not_retried_by_the_client() -> None:
    seen: list[Any] = []

    class SelfRetrying(FunctionBackend):
        handles_retries = True

    def run(request: Request, model: str, ctx: RunContext) -> mg.Image:
        seen.append(ctx.policy.retry)
        raise ProviderError("down", status=503)

    backend = SelfRetrying(run, provider="sr")
    async with mg.Client(backends={"sr": backend}) as client:
        with pytest.raises(ProviderError):
            await client.image("a fox", model="sr:m", policy=FAST_RETRY)
    assert backend.calls == 1
    assert seen == [RetryPolicy(attempts=3, backoff_base_s=0.01, jitter=0)]


async def test_retry_policy_unit() -> None:
    policy = RetryPolicy(attempts=4, backoff_base_s=0.1, backoff_max_s=0.3, jitter=0, max_retry_after_s=5)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.3, 0.3]
    assert policy.delay(1, RateLimitedError("x", retry_after=2.0)) == 2.0
    assert policy.delay(1, RateLimitedError("x", retry_after=9.0)) is None
    jittery = RetryPolicy(backoff_base_s=1.0, jitter=0.5)
    assert all(0.5 <= jittery.delay(1) <= 1.0 for _ in range(50))
    # next_delay is the whole decision (what a backend's own retry loop asks): tries, Retry-After, deadline.
    assert policy.next_delay(3) == 0.3 and policy.next_delay(4) is None
    assert policy.next_delay(1, RateLimitedError("x", retry_after=9.0)) is None
    assert policy.next_delay(2, time_left=0.2) is None and policy.next_delay(2, time_left=0.21) == 0.2

    tries = 0

    async def flaky() -> str:
        nonlocal tries
        tries += 1
        if tries < 3:
            raise ProviderError("down", status=503)
        return "ok"

    fast = RetryPolicy(attempts=3, backoff_base_s=0.0, jitter=0)
    assert await fast.run(flaky) == "ok" and tries == 3

    # A wait that would pass the deadline is not started: the error comes at once.
    slow = RetryPolicy(attempts=3, backoff_base_s=10.0, jitter=0)
    tries = 0
    with pytest.raises(ProviderError):
        await slow.run(flaky, deadline=time.monotonic() + 1.0)
    assert tries == 1


def test_policies_validate_in_config_and_per_call() -> None:
    with pytest.raises(ValueError, match=r"providers\.test\.policy"):
        mg.Client(providers={"test": {"policy": {"retries": 3}}})


async def test_limits_cannot_be_set_per_call() -> None:
    async with mg.Client() as client:
        with pytest.raises(InvalidRequestError, match="max_concurrency"):
            await client.image("a fox", model="test:fake", policy={"max_concurrency": 2})


# -- limits -----------------------------------------------------------------------------------------


async def test_the_provider_concurrency_limit_holds_across_jobs() -> None:
    active = 0
    peak = 0

    async def run(request: Request, model: str, ctx: RunContext) -> mg.Image:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.02)
        active -= 1
        return _image("ok")

    providers = {"fn": {"policy": {"max_concurrency": 2}}}
    async with mg.Client(backends={"fn": FunctionBackend(run, provider="fn")}, providers=providers) as client:
        await asyncio.gather(*(client.image(f"fox {i}", model="fn:m", n=2) for i in range(5)))
    assert peak == 2


async def test_the_provider_rate_limit_spaces_calls() -> None:
    providers = {"test": {"policy": {"requests_per_minute": 1200, "burst": 1}}}  # one call every 50 ms
    async with mg.Client(providers=providers) as client:
        begun = time.monotonic()
        await asyncio.gather(*(client.image(f"fox {i}", model="test:fake", width=8, height=8) for i in range(5)))
        took = time.monotonic() - begun
    assert took >= 0.19


async def test_rate_limiter_unit() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=2, clock=lambda: now[0])
    assert limiter.try_acquire() and limiter.try_acquire() and not limiter.try_acquire()
    assert limiter.wait_time() == pytest.approx(1.0)
    now[0] += 1.0
    assert limiter.try_acquire()
    limiter.pause(5.0)
    now[0] += 4.0
    assert not limiter.try_acquire()
    now[0] += 2.0  # 1 s past the pause: one token back
    assert limiter.try_acquire() and not limiter.try_acquire()
    with pytest.raises(ValueError):
        RateLimiter(per_minute=0)

    real = RateLimiter(per_minute=600, burst=1)  # one every 100 ms
    begun = time.monotonic()
    for _ in range(3):
        async with real:
            pass
    assert time.monotonic() - begun >= 0.19
    with pytest.raises(TimeoutError, match="past the timeout"):
        await real.acquire(timeout=0.01)  # known at once to be ~100 ms away: no sleeping it out
    assert real.waiting == 0
    assert await real.acquire(timeout=1.0) >= 0.05


async def test_rate_limiter_sliding_window_and_pause() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(3, sliding=True, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        assert await limiter.acquire() == 0.0  # a burst of the whole allowance goes through at once
    assert await limiter.acquire() == 60.0  # the fourth waits for the first to leave the window
    limiter.pause(5.0)
    with pytest.raises(TimeoutError):
        await limiter.acquire(timeout=1.0)  # known to be too long: refused without sleeping it
    assert slept == [60.0]
    assert await limiter.acquire() == pytest.approx(5.0)
    now[0] += 59.0  # the one taken at 60 s has left the window, the one at 65 s not yet
    assert limiter.try_acquire() and limiter.try_acquire() and not limiter.try_acquire()
    assert limiter.wait_time() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="burst"):
        RateLimiter(600, burst=10, sliding=True)

    unlimited = RateLimiter(None, clock=lambda: now[0], sleep=sleep)  # no limit, but a 429 still pauses it
    assert all(unlimited.try_acquire() for _ in range(1000))
    unlimited.pause(2.0)
    assert not unlimited.try_acquire() and await unlimited.acquire() == pytest.approx(2.0)


async def test_concurrency_limiter_unit() -> None:
    limiter = ConcurrencyLimiter(1)
    order: list[str] = []

    async def hold(name: str) -> None:
        async with limiter:
            order.append(f"{name}+")
            await asyncio.sleep(0.01)
            order.append(f"{name}-")

    await asyncio.gather(hold("a"), hold("b"))
    assert order == ["a+", "a-", "b+", "b-"]
    unlimited = ConcurrencyLimiter(None)
    async with unlimited, unlimited:
        assert unlimited.in_use == 2
    async with limiter:
        with pytest.raises(TimeoutError):
            await limiter.acquire(timeout=0.02)
        assert limiter.waiting == 0 and limiter.in_use == 1
    await limiter.acquire(timeout=0.02)  # the slot came back; the timed-out wait took none
    limiter.release()
    await limiter.acquire(timeout=0)  # a free slot is taken even with no time to wait for one
    assert limiter.in_use == 1


def test_policy_attempt_deadline() -> None:
    policy = Policy(attempt_timeout=5, attempt_share=0.5)
    assert policy.attempt_deadline(now=0, job_deadline=None, last=False) == 5
    assert policy.attempt_deadline(now=0, job_deadline=4, last=False) == 2
    assert policy.attempt_deadline(now=0, job_deadline=4, last=True) == 4
    assert Policy().attempt_deadline(now=0, job_deadline=None, last=False) is None


# -- fault injection through the whole client --------------------------------------------------------


async def test_fault_injection_loses_no_request_and_never_runs_one_twice() -> None:
    """24 jobs at once over [flaky, steady]: outages, throttling, hangs; every job done exactly once."""
    completions = collections.Counter[str]()
    starts = collections.Counter[tuple[str, str]]()
    throttled_once: set[str] = set()
    hung_cancelled = collections.Counter[str]()

    async def flaky(request: Request, model: str, ctx: RunContext) -> mg.Image:
        key = request.prompt or ""
        starts[("flaky", key)] += 1
        kind = int(key.split()[-1]) % 4
        if kind == 0:
            raise ProviderError("503 service unavailable", status=503)  # an outage: fall back
        if kind == 1 and key not in throttled_once:
            throttled_once.add(key)
            raise RateLimitedError("429", retry_after=0.01)  # throttled once: retried here
        if kind == 2:
            try:
                await asyncio.sleep(60)  # hangs: the attempt deadline moves it on
            except asyncio.CancelledError:
                hung_cancelled[key] += 1
                raise
        await asyncio.sleep(0.005)
        completions[key] += 1
        return _image(f"flaky {key}")

    async def steady(request: Request, model: str, ctx: RunContext) -> mg.Image:
        key = request.prompt or ""
        starts[("steady", key)] += 1
        await asyncio.sleep(0.005)
        completions[key] += 1
        return _image(f"steady {key}")

    backends = {"flaky": FunctionBackend(flaky, provider="flaky"), "steady": FunctionBackend(steady, provider="steady")}
    providers = {
        "flaky": {
            "policy": {
                "retry": {"attempts": 3, "backoff_base_s": 0.01, "jitter": 0},
                # Generous against a loaded CI machine: only the hanging calls may reach it.
                # Only the hanging calls may reach it; a 5 ms call cannot take 5 s even on a busy machine.
                "attempt_timeout": 5.0,
                "cooldown_s": 0,  # keep every job's path scripted (no skipping after an outage)
                # No queueing for a slot: time spent waiting would count against the attempt deadline
                # and make the scripted paths depend on the machine's speed.
                "max_concurrency": 24,
            }
        }
    }
    async with mg.Client(backends=backends, providers=providers) as client:
        jobs = [
            client.submit(mg.ImageRequest(prompt=f"job {i}"), model=["flaky:m", "steady:m"], timeout=60)
            for i in range(24)
        ]
        results = await asyncio.gather(*(job.result() for job in jobs))

    keys = [f"job {i}" for i in range(24)]
    assert [r.artifacts[0].metadata["tag"].split(" ", 1)[1] for r in results] == keys  # nothing lost or mixed up
    assert all(completions[k] == 1 for k in keys), completions  # nothing ran to completion twice
    for i, (key, res) in enumerate(zip(keys, results, strict=True)):
        kind = i % 4
        assert res.provider == ("steady" if kind in (0, 2) else "flaky"), (key, res.provider)
        if kind == 0:
            assert starts[("flaky", key)] == 3, "retried under its policy, then the chain moves on"
            assert [w.feature for w in res.warnings] == ["retry", "retry", "fallback"]
        if kind == 1:
            assert starts[("flaky", key)] == 2 and starts[("steady", key)] == 0
            assert any(w.feature == "retry" for w in res.warnings)
        if kind == 2:
            assert hung_cancelled[key] == 1 and starts[("flaky", key)] == 1
            assert "attempt deadline" in _fallback_notes(res)[0].message
        if kind == 3:
            assert starts[("steady", key)] == 0 and not res.warnings
