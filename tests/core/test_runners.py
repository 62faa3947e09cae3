"""The layers of the execution path (`mediagen.runners`), each on its own (issue 10, item 4)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import mediagen as mg
from mediagen.backend import Cancellation, RunContext
from mediagen.policies import Policy
from mediagen.requests import Request
from mediagen.routing import Cooldowns
from mediagen.runners import CallBackend, Fallback, ModelId, Runner, split_n
from mediagen.testing import FakeBackend


class Recording:
    """A runner that records the contexts it was given and answers from a FakeBackend."""

    def __init__(self, fail: dict[str, BaseException] | None = None) -> None:
        self.contexts: list[RunContext] = []
        self.fail = fail or {}
        self.backend = FakeBackend()

    async def run(self, request: Request, model: ModelId, ctx: RunContext) -> mg.Result:
        self.contexts.append(ctx)
        if str(model) in self.fail:
            raise self.fail[str(model)]
        return await self.backend.run(request, model.model, ctx)


def test_derive_copies_and_never_changes_the_parent() -> None:
    parent = RunContext(deadline=100.0, provider="a", model="m", job_id="j1")
    child = parent.derive(deadline=50.0, provider="b", policy=Policy(cooldown_s=1), fallbacks_left=2)
    assert (parent.deadline, parent.provider, parent.fallbacks_left) == (100.0, "a", 0)
    assert (child.deadline, child.provider, child.model, child.job_id) == (50.0, "b", "m", "j1")
    assert child.policy.cooldown_s == 1 and parent.policy.cooldown_s == 30
    child.warn("steps", "ignored")
    assert parent.warnings == [] and len(child.warnings) == 1
    assert parent.derive(deadline=None).deadline is None
    child.note(mg.GenerationWarning.other("went this way"))
    assert [n.message for n in parent.notes] == ["went this way"]  # one journal per job


def test_cancelling_the_parent_reaches_every_copy_but_not_the_reverse() -> None:
    parent = RunContext()
    first, second = parent.derive(), parent.derive()
    grandchild = first.derive()
    first.cancelled.set()
    assert grandchild.cancelled.is_set() and not parent.cancelled.is_set() and not second.cancelled.is_set()
    parent.cancelled.set()
    assert second.cancelled.is_set()
    assert parent.derive().cancelled.is_set()  # a copy made after cancelling starts cancelled
    assert isinstance(Cancellation(), type(parent.cancelled))


@pytest.mark.parametrize(
    ("n", "seed", "per_call", "seeded_per_call", "expected"),
    [
        (5, 7, 2, None, [(2, 7), (2, 9), (1, 11)]),
        (3, None, 2, None, [(2, None), (1, None)]),
        (3, 1, None, 1, [(1, 1), (1, 2), (1, 3)]),
        (3, None, None, 1, [(3, None)]),  # the seeded limit only applies to seeded requests
        (4, 2**32 - 1, 2, None, [(2, 2**32 - 1), (2, 1)]),  # seeds wrap as request.seeds() does
    ],
)
def test_split_n_is_ceil_n_over_the_limit(
    n: int, seed: int | None, per_call: int | None, seeded_per_call: int | None, expected: list[Any]
) -> None:
    caps = mg.Capabilities(max_outputs_per_call=per_call, max_seeded_outputs_per_call=seeded_per_call)
    parts = split_n(mg.ImageRequest(prompt="x", n=n, seed=seed), caps)
    assert [(p.n, p.seed) for p in parts] == expected


async def test_fallback_gives_each_member_its_own_context() -> None:
    inner = Recording(fail={"a:m": mg.ProviderError("down", status=503)})
    fallback: Runner = Fallback(inner, [ModelId("b", "m")], cooldowns=Cooldowns(), policy_for=lambda p: Policy())
    ctx = RunContext(deadline=None)
    res = await fallback.run(mg.ImageRequest(prompt="x"), ModelId("a", "m"), ctx)
    first, second = inner.contexts
    assert (first.provider, first.fallbacks_left, second.provider, second.fallbacks_left) == ("a", 1, "b", 0)
    assert first is not second and ctx.provider == "" and res.provider == "test"
    assert [n.feature for n in ctx.notes] == ["fallback"]


async def test_call_backend_is_the_backend_call() -> None:
    backend = FakeBackend()

    async def backends(provider: str) -> mg.Backend:
        return backend

    res = await CallBackend(backends).run(mg.ImageRequest(prompt="x", n=2), ModelId("test", "m"), RunContext())
    assert len(res.artifacts) == 2 and backend.calls == 1


async def test_the_cache_look_up_counts_against_the_job_deadline(tmp_path: Any) -> None:
    class SlowRevision(FakeBackend):
        async def revision(self, model: str) -> str | None:
            await asyncio.sleep(30)  # a hosted backend whose schema fetch hangs
            return None

    backend = SlowRevision()
    async with mg.Client(backends={"test": backend}, cache=tmp_path / "cache") as client:
        with pytest.raises(mg.DeadlineExceededError, match="result cache"):
            await client.image("a fox", model="test:fake", seed=1, timeout=0.2)
    assert backend.calls == 0
