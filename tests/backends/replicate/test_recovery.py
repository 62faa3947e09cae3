"""Lost creates are found by a fingerprint that survives what the server does to the input, never sent twice.

Issue 12, "Creates that ran twice": against a server that echoes each prediction's input with the
model's defaults filled in (and numbers stored as floats), matching the echo to the body exactly
found nothing and sent the create again: 109-111 predictions for 100 requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import mediagen as mg
from mediagen.backend import RunContext
from mediagen_testkit import media_fixtures as media
from mediagen_testkit.replicate_server import FaultPlan, ReplicateServer, i2v_model, image_model

pytest.importorskip("replicate")
from mediagen_replicate import ReplicateBackend
from mediagen_replicate.matching import input_matches, inputs_collide, normalise

FLUX = "black-forest-labs/flux-schnell"


@pytest.fixture
def server() -> Iterator[ReplicateServer]:
    # A server that stores inputs: defaults filled in, numbers written back as floats, inline files as URLs.
    with ReplicateServer(time_scale=0.001, models=[image_model()], echo_effective_input=True) as srv:
        yield srv


@pytest.fixture
async def backend(server: ReplicateServer) -> AsyncIterator[ReplicateBackend]:
    b = ReplicateBackend(
        api_token=server.token,
        base_url=server.url,
        reconcile_delay_s=0,
        retry_base_delay=0.01,
        poll_interval=0.01,
        max_poll_interval=0.05,
    )
    yield b
    await b.aclose()


async def test_creates_that_ran_twice_300_under_faults_with_a_defaults_filling_server(
    backend: ReplicateBackend, server: ReplicateServer
) -> None:
    count = 300
    server.faults = FaultPlan(create_429_every=5, get_503_every=7, drop_every=11, drop_after_create=True)

    async def one(seed: int) -> mg.Result:
        # Tiny outputs, polled (not held open in sync mode): fast, and every GET meets the faults.
        request = mg.ImageRequest(prompt="a fox", seed=seed, output_format="png", options={"wait": False})
        return await backend.run(request, FLUX, RunContext())

    results = await asyncio.gather(*(one(seed) for seed in range(count)))

    stats = server.stats.snapshot()
    # The faults did happen, and lost answers were found rather than sent again.
    assert stats["dropped"] > 0 and stats["faults_injected"] > stats["dropped"]
    assert backend.describe()["requests"]["creates_recovered"] > 0
    # The echo really differs from what was sent (defaults, floats), so exact matching would fail here.
    echoed = next(iter(server.predictions.values()))["input"]
    assert "go_fast" in echoed and isinstance(echoed["seed"], float)
    # Exactly one prediction per request, each delivered to its own caller.
    assert stats["predictions_created"] == count
    assert len({r.raw["id"] for r in results}) == count
    assert sorted(int(r.raw["input"]["seed"]) for r in results) == list(range(count))
    # Delivered: each output is the file the server made for that seed (spot-checked, not all 300).
    for seed in (0, 149, 299):
        assert results[seed].artifacts[0].read() == media.image_bytes(64, 64, seed=seed, fmt="png", quality=80)


async def test_creates_that_ran_twice_a_list_that_shifts_while_read_is_no_ambiguity() -> None:
    # Offset pages shift when predictions arrive while the list is read: one prediction can show on
    # two pages. Here the first page's `next` serves it again; it is still one match, and adopted.
    class Shifting(ReplicateServer):
        def lose_create_answer(self, number: int) -> bool:
            return number == 1  # answer lost

        def rewrite_list(self, page: dict[str, Any], number: int) -> dict[str, Any]:
            if number == 1:
                page["next"] = f"{self.url}/predictions"  # the first page again
            return page

    with Shifting(time_scale=0.001, models=[image_model()], echo_effective_input=True) as server:
        backend = ReplicateBackend(api_token=server.token, base_url=server.url, reconcile_delay_s=0)
        try:
            res = await backend.run(mg.ImageRequest(prompt="p", seed=3, options={"wait": False}), FLUX, RunContext())
            recovered = backend.describe()["requests"]["creates_recovered"]
        finally:
            await backend.aclose()
    assert server.lists == 2 and recovered == 1
    assert server.stats.predictions_created == 1 and int(res.raw["input"]["seed"]) == 3


async def test_creates_that_ran_twice_two_matching_predictions_adopt_neither(server: ReplicateServer) -> None:
    # Another client made the same prediction (same model, same input) just before ours.
    other = ReplicateBackend(api_token=server.token, base_url=server.url)
    mine = ReplicateBackend(api_token=server.token, base_url=server.url, reconcile_delay_s=0)
    request = mg.ImageRequest(prompt="twin", seed=5, options={"wait": False})
    try:
        await other.run(request, FLUX, RunContext())
        await mine.capabilities(FLUX)  # the model is known: the next request of ours is the create
        server.faults = FaultPlan(drop_every=1, drop_after_create=True)  # our create lands, its answer is lost

        async def lists_again() -> None:
            # Let the search through: only the create's answer is dropped.
            while server.stats.predictions_created < 2:  # noqa: ASYNC110 - set by the server's threads
                await asyncio.sleep(0.005)
            server.faults = FaultPlan()

        with pytest.raises(mg.ProviderError, match="2 predictions match it") as info:
            await asyncio.gather(mine.run(request, FLUX, RunContext()), lists_again())
    finally:
        await other.aclose()
        await mine.aclose()
    assert not info.value.retryable
    # Failed without sending the create a second time.
    assert server.stats.predictions_created == 2
    assert server.stats.count("POST", "/v1/models/{owner}/{name}/predictions") == 2


async def test_creates_that_ran_twice_identical_requests_never_share_or_duplicate(
    backend: ReplicateBackend, server: ReplicateServer
) -> None:
    # No seed: twelve creates with one body. A lost create must not adopt a twin's prediction; when
    # two lost ones cannot be told apart, they fail (clearly) instead of being sent again.
    server.faults = FaultPlan(drop_every=3, drop_after_create=True)
    outcomes = await asyncio.gather(
        *(backend.run(mg.ImageRequest(prompt="same", options={"wait": False}), FLUX, RunContext()) for _ in range(12)),
        return_exceptions=True,
    )
    ids = [o.raw["id"] for o in outcomes if isinstance(o, mg.Result)]
    failures = [o for o in outcomes if not isinstance(o, mg.Result)]
    assert len(set(ids)) == len(ids)
    assert all(isinstance(f, mg.ProviderError) and "match" in str(f) for f in failures), failures
    assert server.stats.predictions_created == 12  # never sent twice


async def test_creates_that_ran_twice_an_inline_file_echoed_as_a_stored_url_still_matches() -> None:
    class LosesFirstAnswer(ReplicateServer):
        def lose_create_answer(self, number: int) -> bool:
            return number == 1

    with LosesFirstAnswer(time_scale=0.001, models=[i2v_model()], echo_effective_input=True) as server:
        backend = ReplicateBackend(api_token=server.token, base_url=server.url, reconcile_delay_s=0)
        first = media.image_bytes(32, 32, seed=9)
        try:
            res = await backend.run(
                mg.VideoRequest(prompt="it moves", image=first, options={"wait": False}),
                "wavespeedai/wan-2.1-i2v-480p",
                RunContext(),
            )
            assert backend.describe()["requests"]["creates_recovered"] == 1
        finally:
            await backend.aclose()
        # The server stored the inline image and echoed its own URL; the prediction was still found.
        assert res.raw["input"]["image"].startswith(server.origin + "/uploads/")
        assert server.stats.predictions_created == 1


def test_creates_that_ran_twice_fingerprint_tolerates_types_and_defaults() -> None:
    sent = {"prompt": "fox", "seed": 7, "guidance": 3.5, "image": "data:image/png;base64,AAAA", "tags": [1, 2]}
    echoed = {
        "prompt": "fox",
        "seed": 7.0,
        "guidance": "3.5",
        "image": "https://replicate.delivery/abc/input.png",
        "tags": [1.0, 2.0],
        "width": 1024,  # a default the server filled in
    }
    assert input_matches(sent, echoed)
    assert not input_matches(sent, {**echoed, "seed": 8})
    assert not input_matches(sent, {k: v for k, v in echoed.items() if k != "seed"})
    assert not input_matches({"go_fast": True}, {"go_fast": 1})  # a boolean is not a number
    assert not input_matches({"image": "data:image/png;base64,AAAA"}, {"image": 3})
    assert not input_matches(sent, None)
    assert normalise(7) == normalise(7.0) == normalise("7")
    assert inputs_collide({"prompt": "a"}, {"prompt": "a", "seed": 1})
    assert not inputs_collide({"prompt": "a", "seed": 2}, {"prompt": "a", "seed": 1})
