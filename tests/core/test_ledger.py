"""The usage ledger (sdk/ledger.py): normalised usage, prices, totals and the budget cap."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import mediagen as mg
from mediagen.backend import RunContext
from mediagen.ledger import Ledger, PriceTable
from mediagen.requests import Request
from mediagen.testing import FakeBackend, FunctionBackend


async def test_results_carry_usage_in_normalised_units() -> None:
    async with mg.Client() as client:
        img = await client.image("a fox", model="test:fake", n=3, width=64, height=32, seed=1)
        vid = await client.video("waves", model="test:fake", frames=16, fps=8, width=16, height=16)
        snd = await client.audio("a beep", model="test:fake", duration_s=0.5)
        obj = await client.mesh("a chair", model="test:fake")
    assert img.usage.images == 3 and img.usage.megapixels == pytest.approx(3 * 64 * 32 / 1e6)
    assert vid.usage.video_s == pytest.approx(2.0) and vid.usage.megapixels == pytest.approx(16 * 16 * 16 / 1e6)
    assert snd.usage.audio_s == pytest.approx(0.5)
    assert obj.usage.meshes == 1
    assert img.usage.device_s == 0.0 and img.usage.device == "cpu"  # the fake backend reports its (zero) device time


def test_price_lookup_prefers_the_most_specific_entry() -> None:
    table = PriceTable(
        {
            "replicate": {"predict_s": 0.001},
            "replicate:owner/flux": {"images": 0.003},
            "replicate:owner/flux:v2": {"images": 0.004},
        }
    )
    usage = mg.Usage(images=2, predict_s=10.0)
    assert table.cost("replicate", "owner/flux:v2", usage) == pytest.approx(0.008)
    assert table.cost("replicate", "owner/flux:v1", usage) == pytest.approx(0.006)  # falls back to the unversioned
    assert table.cost("replicate", "owner/other", usage) == pytest.approx(0.01)
    assert table.cost("diffusers", "x", usage) is None
    with pytest.raises(ValueError, match="unit 'pixels'"):
        PriceTable({"replicate": {"pixels": 1.0}})
    with pytest.raises(ValueError, match="negative"):
        PriceTable({"replicate": {"images": -1.0}})


async def test_client_usage_totals_per_provider_and_model() -> None:
    prices = {"test": {"images": 0.01}, "test:hd": {"images": 0.05, "megapixels": 1.0}}

    def run(request: Request, model: str, ctx: RunContext) -> mg.Result:
        return mg.Result(
            artifacts=[mg.Image.from_array([[[0, 0, 0]]])],
            provider="fn",
            model=model,
            usage=mg.Usage(predict_s=2.0),
        )

    config = mg.Config(prices={**prices, "fn": {"predict_s": 0.5}})
    backends = {"fn": FunctionBackend(run, provider="fn")}
    async with mg.Client(config=config, backends=backends) as client:
        a = await client.image("a fox", model="test:fake", n=2, width=16, height=16)
        b = await client.image("a fox", model="test:hd", width=1000, height=1000)
        c = await client.image("a fox", model="fn:m")
        usage = client.usage
    assert a.usage.cost == pytest.approx(0.02)
    assert b.usage.cost == pytest.approx(0.05 + 1.0)
    assert c.usage.cost == pytest.approx(1.0) and c.usage.images == 1
    assert usage.total.images == 4 and usage.jobs == 3
    assert usage.spent == pytest.approx(2.07)
    assert set(usage.by_model) == {"test:fake", "test:hd", "fn:m"}
    assert usage.by_provider["test"].images == 3 and usage.by_provider["test"].cost == pytest.approx(1.07)
    summary = usage.summary()
    assert summary["jobs"] == 3 and summary["by_model"]["fn:m"]["predict_s"] == 2.0


async def test_unpriced_usage_has_no_cost_and_never_trips_a_budget() -> None:
    async with mg.Client() as client:
        res = await client.image("a fox", model="test:fake", width=16, height=16)
        assert res.usage.cost is None and client.usage.spent == 0.0


async def test_the_budget_refuses_new_jobs_once_spent(tmp_path: Path) -> None:
    backend = FakeBackend()
    config = mg.Config(prices={"test": {"images": 0.4}})
    async with mg.Client(config=config, backends={"test": backend}, budget=1.0) as client:
        await client.image("a fox", model="test:fake", width=16, height=16)
        await client.image("a fox", model="test:fake", width=16, height=16)
        assert client.usage.spent == pytest.approx(0.8)
        with pytest.raises(mg.BudgetExceededError) as info:
            client.submit(mg.ImageRequest(prompt="one more"), model="test:fake")  # refused at submit
        message = str(info.value)
        assert "spent 0.8" in message and "1 cap" in message and "0.4" in message
        assert backend.calls == 2
        client.usage.reset()
        await client.image("a fox", model="test:fake", width=16, height=16)
    assert backend.calls == 3


async def test_running_jobs_hold_their_estimate_against_the_budget() -> None:
    backend = FakeBackend(step_delay_s=0.05)
    config = mg.Config(prices={"test": {"images": 0.3}})
    async with mg.Client(config=config, backends={"test": backend}, budget=1.0) as client:
        jobs = [client.submit(mg.ImageRequest(prompt=f"fox {i}"), model="test:fake") for i in range(3)]
        assert client.usage.reserved == pytest.approx(0.9)
        with pytest.raises(mg.BudgetExceededError, match="held for running jobs"):
            client.submit(mg.ImageRequest(prompt="fox 4"), model="test:fake")
        await jobs[0].cancel()
        await asyncio.gather(*(job.result() for job in jobs[1:]))
        assert client.usage.reserved == 0.0
        assert client.usage.spent == pytest.approx(0.6)


async def test_budget_and_prices_from_mediagen_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "priced.toml"
    toml.write_text('budget = 0.5\n\n[prices."test:fake"]\nimages = 0.5\n')
    monkeypatch.setenv("MEDIAGEN_CONFIG", str(toml))
    async with mg.Client() as client:
        assert client.usage.budget == 0.5
        await client.image("a fox", model="test:fake", width=16, height=16)
        with pytest.raises(mg.BudgetExceededError):
            await client.image("a fox", model="test:fake", width=16, height=16)
    async with mg.Client(budget=None) as client:  # the constructor overrides the file
        await client.image("a fox", model="test:fake", width=16, height=16)
        await client.image("a fox", model="test:fake", width=16, height=16)


def test_bad_prices_fail_at_client_construction() -> None:
    with pytest.raises(ValueError, match="unit"):
        mg.Client(config=mg.Config(prices={"test": {"credits": 1.0}}))


async def test_cache_hits_cost_nothing(tmp_path: Path) -> None:
    config = mg.Config(prices={"test": {"images": 0.25}})
    async with mg.Client(config=config, cache=tmp_path / "c") as client:
        await client.image("a fox", model="test:fake", seed=1, width=16, height=16)
        hit = await client.image("a fox", model="test:fake", seed=1, width=16, height=16)
    assert hit.cached and hit.usage.cost is None and hit.usage.images == 0
    assert client.usage.spent == pytest.approx(0.25) and client.usage.cache_hits == 1


def test_estimates_count_what_a_request_names() -> None:
    table = PriceTable({"p": {"images": 1.0, "megapixels": 10.0, "video_s": 2.0, "audio_s": 3.0, "meshes": 4.0}})
    assert table.estimate(mg.ImageRequest(prompt="x", n=2, width=1000, height=1000), "p", "m") == pytest.approx(22.0)
    assert table.estimate(mg.VideoRequest(prompt="x", duration_s=2.0), "p", "m") == pytest.approx(4.0)
    assert table.estimate(mg.AudioRequest(prompt="x", duration_s=5.0), "p", "m") == pytest.approx(15.0)
    assert table.estimate(mg.MeshRequest(prompt="x"), "p", "m") == pytest.approx(4.0)
    assert table.estimate(mg.MeshRequest(prompt="x"), "other", "m") == 0.0
    ledger = Ledger(table, budget=None)
    ledger.reserve(1e9).release()  # no cap: anything goes
