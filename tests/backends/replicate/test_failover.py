"""Fast failover: an unreachable Replicate endpoint in a chain gives way at once (issue 12, item 2)."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

import mediagen as mg
from mediagen.backend import RunContext
from mediagen.errors import EndpointUnreachableError
from mediagen.policies import FAST_FAILOVER_TRIES, RetryPolicy, fast_failover
from mediagen.requests import Request
from mediagen.testing import FunctionBackend

pytest.importorskip("replicate")

FLUX = "black-forest-labs/flux-schnell"


def unreachable_url() -> str:
    """A loopback port nobody listens on: connections to it are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def replicate_settings(url: str) -> dict[str, object]:
    # The backend's own retry budget is left at its default (10 tries, backoff up to 20 s): the
    # budget that took 47 s before the chain moved on.
    return {"api_token": "r8_" + "t" * 20, "base_url": url}


class Recorder:
    """The chain's second member: records when it started."""

    def __init__(self) -> None:
        self.started: list[float] = []

    def __call__(self, request: Request, model: str, ctx: RunContext) -> mg.Image:
        self.started.append(time.monotonic())
        return mg.Image.from_array(np.zeros((8, 8, 3), dtype=np.uint8))


async def test_unreachable_member_gives_way_within_two_seconds_and_cools_down() -> None:
    """Issue 12 item 2: chain [replicate (connection refused), second] - the second starts < 2 s after the first began."""
    second = Recorder()
    backends = {"local": FunctionBackend(second, provider="local")}
    providers = {"replicate": replicate_settings(unreachable_url())}
    chain = [f"replicate:{FLUX}", "local:m"]
    name = f"replicate:{FLUX}"
    async with mg.Client(backends=backends, providers=providers) as client:
        # A first run pays the one-time costs (the provider's package, its HTTP clients and TLS
        # contexts), then its cooldown is lifted: the measured run is the failover alone.
        await client.image("a fox", model=chain, seed=1)
        assert client.cooldowns.cooling(name) > 0
        client.cooldowns.clear(name)
        replicate = await client.backend("replicate")
        before = dict(replicate.describe()["requests"])

        first_attempt_began = time.monotonic()
        res = await client.image("a fox", model=chain, seed=2)
        gap = second.started[-1] - first_attempt_began
        sent = dict(replicate.describe()["requests"])

        assert res.provider == "local"
        # The one wall-clock bound the issue demands (measured: 0.2-0.35 s on a 2-core VM at load 10).
        assert gap < 2.0, f"the second member started {gap:.2f} s after the first attempt began"
        # At most one quick retry of the refused connection, not the backend's 10 tries.
        assert sent.get("retries", 0) - before.get("retries", 0) <= FAST_FAILOVER_TRIES - 1
        [note] = [w for w in res.warnings if w.feature == "fallback"]
        assert "EndpointUnreachableError" in note.message

        # Cooled down: the next request skips it without a connection attempt.
        res = await client.image("a fox", model=chain, seed=3)
        assert res.provider == "local" and len(second.started) == 3
        assert dict(replicate.describe()["requests"]) == sent
        assert any("cooling down" in w.message for w in res.warnings)


async def test_a_standalone_call_keeps_the_full_retry_budget() -> None:
    """Outside a chain nothing waits behind the call: the refused connection is retried as the policy says."""
    providers = {"replicate": {**replicate_settings(unreachable_url()), "max_retries": 4, "retry_base_delay": 0.01}}
    async with mg.Client(providers=providers) as client:
        with pytest.raises(EndpointUnreachableError):
            await client.image("a fox", model=f"replicate:{FLUX}")
        replicate = await client.backend("replicate")
        assert replicate.describe()["requests"]["retries"] == 3  # 4 tries in all


async def test_the_last_member_of_a_chain_keeps_the_full_budget() -> None:
    """Only members with a fallback behind them give way fast; the last one has nothing to give way to."""
    providers = {"replicate": {**replicate_settings(unreachable_url()), "max_retries": 3, "retry_base_delay": 0.01}}
    failing = FunctionBackend(lambda r, m, c: (_ for _ in ()).throw(mg.ProviderError("down", status=503)), provider="x")
    async with mg.Client(backends={"x": failing}, providers=providers) as client:
        with pytest.raises(mg.AllBackendsFailedError):
            await client.image("a fox", model=["x:m", f"replicate:{FLUX}"])
        replicate = await client.backend("replicate")
        assert replicate.describe()["requests"]["retries"] == 2


def test_fast_failover_rule_unit() -> None:
    policy = RetryPolicy(attempts=10, backoff_base_s=5.0, jitter=0)
    down = EndpointUnreachableError("refused")
    assert policy.next_delay(1, down) == 5.0 and policy.next_delay(5, down) is not None
    with fast_failover():
        assert policy.next_delay(1, down) is not None and policy.next_delay(1, down) <= 0.25
        assert policy.next_delay(FAST_FAILOVER_TRIES, down) is None
        # Other failures keep the policy's own budget even inside a chain.
        assert policy.next_delay(5, mg.ProviderError("busy", status=503)) == policy.delay(5)
    with fast_failover(False):
        assert policy.next_delay(1, down) == 5.0
