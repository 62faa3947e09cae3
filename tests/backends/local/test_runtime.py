"""The shared local runtime: device choice, the device worker, micro-batching and the pipeline cache.

These tests use plain Python callables as the "pipeline", so they are fast and exact about timing-free
properties (what ran together, in which order, what was cancelled); the diffusers tests exercise the
same machinery with real pipelines.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

import mediagen as mg
from mediagen_local import (
    Batch,
    DeviceWorker,
    MicroBatcher,
    PipelineCache,
    Placement,
    get_worker,
    is_out_of_memory,
    memory_info,
    module_bytes,
    pick_device,
    pick_dtype,
)

# -- devices ---------------------------------------------------------------------------------------


def test_pick_device_and_dtype_on_this_machine() -> None:
    import torch

    device = pick_device("auto")
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert device == expected or device == "mps"
    assert pick_device("cpu") == "cpu"
    assert pick_dtype("cpu") == torch.float32
    assert pick_dtype("cpu", "bf16") == torch.bfloat16
    assert pick_dtype("cuda:0", "fp16") == torch.float16


def test_unknown_or_missing_devices_are_clear_errors() -> None:
    import torch

    with pytest.raises(mg.UnsupportedRequestError, match="unknown device"):
        pick_device("tpu")
    with pytest.raises(mg.UnsupportedRequestError, match="unknown dtype"):
        pick_dtype("cpu", "int3")
    if not torch.cuda.is_available():
        with pytest.raises(mg.UnsupportedRequestError, match="CUDA"):
            pick_device("cuda")


def test_memory_info_and_out_of_memory_detection() -> None:
    info = memory_info("cpu")
    assert info.total_bytes > info.free_bytes > 0
    try:
        try:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        except RuntimeError as exc:
            raise mg.GenerationFailedError("ran out") from exc
    except mg.GenerationFailedError as wrapped:
        assert is_out_of_memory(wrapped)
    assert not is_out_of_memory(ValueError("height must be divisible by 8"))


# -- the device worker -----------------------------------------------------------------------------


async def test_worker_runs_calls_one_at_a_time_without_blocking_the_loop() -> None:
    worker = DeviceWorker("test-serial")
    running = 0
    overlap = False

    def slow(value: int) -> int:
        nonlocal running, overlap
        running += 1
        overlap = overlap or running > 1
        time.sleep(0.05)
        running -= 1
        return value * 2

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    tick_task = asyncio.create_task(ticker())
    results = await asyncio.gather(*(worker.call(slow, i) for i in range(4)))
    tick_task.cancel()
    assert results == [0, 2, 4, 6]
    assert not overlap
    assert ticks >= 10  # the loop kept running while the worker slept for 0.2 s
    worker.stop()


async def test_worker_delivers_errors_and_skips_cancelled_queued_calls() -> None:
    worker = DeviceWorker("test-errors")
    ran: list[str] = []
    gate = threading.Event()

    def block() -> None:
        gate.wait(2)

    def record(name: str) -> str:
        ran.append(name)
        return name

    def fail() -> None:
        raise ValueError("boom")

    first = asyncio.ensure_future(worker.call(block))
    queued = asyncio.ensure_future(worker.call(record, "cancelled"))
    await asyncio.sleep(0.01)
    queued.cancel()
    await asyncio.sleep(0.01)  # let the cancellation reach the call's future
    gate.set()
    await first
    with pytest.raises(ValueError, match="boom"):
        await worker.call(fail)
    assert await worker.call(record, "after") == "after"
    assert ran == ["after"]
    worker.stop()


def test_get_worker_gives_one_worker_per_device() -> None:
    assert get_worker("test-shared") is get_worker("test-shared")
    assert get_worker("test-shared") is not get_worker("test-other")


# -- micro-batching --------------------------------------------------------------------------------


class Recorder:
    """A `run` for the batcher that doubles payloads and records each batch."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[Any]] = []
        self.delay = delay

    def __call__(self, batch: Batch[Any]) -> list[Any]:
        self.batches.append(batch.payloads)
        if self.delay:
            time.sleep(self.delay)
        return [payload * 2 for payload in batch.payloads]


async def test_concurrent_compatible_requests_share_one_call() -> None:
    run = Recorder()
    batcher: MicroBatcher[int, int] = MicroBatcher(DeviceWorker("test-batch"), run, max_batch=8, window_s=0.01)
    done = await asyncio.gather(*(batcher.submit("k", i) for i in range(5)))
    assert [d.value for d in done] == [0, 2, 4, 6, 8]
    assert run.batches == [[0, 1, 2, 3, 4]]
    assert all(d.batch_requests == 5 and d.batch_outputs == 5 for d in done)


async def test_keys_keep_incompatible_requests_apart() -> None:
    run = Recorder()
    batcher: MicroBatcher[int, int] = MicroBatcher(DeviceWorker("test-keys"), run, window_s=0.01)
    await asyncio.gather(*(batcher.submit(i % 2, i) for i in range(6)))
    assert sorted(run.batches) == [[0, 2, 4], [1, 3, 5]]


async def test_n_counts_toward_max_batch_and_the_rest_waits_its_turn() -> None:
    run = Recorder()
    batcher: MicroBatcher[int, int] = MicroBatcher(DeviceWorker("test-sizes"), run, max_batch=4, window_s=0.01)
    sizes = [2, 2, 3, 1]
    await asyncio.gather(*(batcher.submit("k", i, size=s) for i, s in enumerate(sizes)))
    # 2+2 fill the first call; 3 does not fit beside them, and the 1 joins the 3.
    assert run.batches == [[0, 1], [2, 3]]


async def test_a_busy_worker_batches_what_arrives_meanwhile() -> None:
    run = Recorder(delay=0.1)
    batcher: MicroBatcher[int, int] = MicroBatcher(DeviceWorker("test-busy"), run, window_s=0.0)
    first = asyncio.ensure_future(batcher.submit("k", 0))
    await asyncio.sleep(0.03)  # the first call is running now
    rest = [asyncio.ensure_future(batcher.submit("k", i)) for i in range(1, 4)]
    await asyncio.gather(first, *rest)
    assert run.batches == [[0], [1, 2, 3]]


async def test_progress_reaches_every_request_of_a_batch() -> None:
    def run(batch: Batch[int]) -> list[int]:
        for step in range(1, 4):
            batch.progress(step, 3)
        return batch.payloads

    batcher: MicroBatcher[int, int] = MicroBatcher(DeviceWorker("test-progress"), run, window_s=0.01)
    seen: dict[int, list[tuple[int, int]]] = {0: [], 1: []}
    await asyncio.gather(*(batcher.submit("k", i, progress=lambda s, t, i=i: seen[i].append((s, t))) for i in range(2)))
    assert seen[0] == seen[1] == [(1, 3), (2, 3), (3, 3)]


async def test_cancelling_a_waiting_request_removes_it_from_its_batch() -> None:
    run = Recorder(delay=0.1)
    batcher: MicroBatcher[int, int] = MicroBatcher(DeviceWorker("test-cancel-wait"), run, window_s=0.0)
    busy = asyncio.ensure_future(batcher.submit("busy", 0))
    await asyncio.sleep(0.02)
    keep = asyncio.ensure_future(batcher.submit("k", 1))
    drop = asyncio.ensure_future(batcher.submit("k", 2))
    await asyncio.sleep(0.01)
    drop.cancel()
    await asyncio.gather(busy, keep)
    with pytest.raises(asyncio.CancelledError):
        await drop
    assert run.batches == [[0], [1]]


async def test_a_batch_whose_requests_are_all_cancelled_is_told_to_stop() -> None:
    steps_run = 0
    started = threading.Event()

    def run(batch: Batch[int]) -> list[int]:
        nonlocal steps_run
        steps = 200 if batch.payloads[0] < 10 else 1  # a 2-second "denoising loop", then a short one
        for _ in range(steps):
            if batch.all_cancelled():
                break
            started.set()
            steps_run += 1
            time.sleep(0.01)
        return batch.payloads

    worker = DeviceWorker("test-interrupt")
    batcher: MicroBatcher[int, int] = MicroBatcher(worker, run, window_s=0.0)
    tasks = [asyncio.ensure_future(batcher.submit("k", i)) for i in range(2)]
    assert await asyncio.to_thread(started.wait, 5)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with pytest.raises(asyncio.CancelledError):
            await task
    assert steps_run < 100
    # The worker serves the next request as usual.
    assert (await batcher.submit("k", 21)).value == 21


async def test_one_cancelled_request_does_not_stop_its_batch_mates() -> None:
    started = threading.Event()

    def run(batch: Batch[int]) -> list[int]:
        started.set()
        for _ in range(20):
            if batch.all_cancelled():
                break
            time.sleep(0.01)
        return [p * 10 for p in batch.payloads]

    batcher: MicroBatcher[int, int] = MicroBatcher(DeviceWorker("test-partial"), run, window_s=0.01)
    keep = asyncio.ensure_future(batcher.submit("k", 1))
    drop = asyncio.ensure_future(batcher.submit("k", 2))
    assert await asyncio.to_thread(started.wait, 5)
    drop.cancel()
    assert (await keep).value == 10
    with pytest.raises(asyncio.CancelledError):
        await drop


async def test_the_run_contexts_cancel_event_cancels_too() -> None:
    event = threading.Event()
    event.set()
    batcher: MicroBatcher[int, int] = MicroBatcher(DeviceWorker("test-ctx-cancel"), Recorder(), window_s=0.0)
    with pytest.raises(asyncio.CancelledError):
        await batcher.submit("k", 1, cancelled=event)


async def test_errors_reach_every_request_of_the_batch() -> None:
    def run(batch: Batch[int]) -> list[int]:
        raise mg.GenerationFailedError("the pipeline broke")

    batcher: MicroBatcher[int, int] = MicroBatcher(DeviceWorker("test-error"), run, window_s=0.01)
    results = await asyncio.gather(*(batcher.submit("k", i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, mg.GenerationFailedError) for r in results)


async def test_out_of_memory_splits_the_batch_and_lowers_max_batch() -> None:
    calls: list[list[int]] = []

    def run(batch: Batch[int]) -> list[int]:
        calls.append(batch.payloads)
        if batch.size > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return batch.payloads

    batcher: MicroBatcher[int, int] = MicroBatcher(DeviceWorker("test-oom"), run, max_batch=8, window_s=0.01)
    done = await asyncio.gather(*(batcher.submit("k", i) for i in range(4)))
    assert [d.value for d in done] == [0, 1, 2, 3]
    assert calls == [[0, 1, 2, 3], [0, 1], [2, 3]]
    assert batcher.max_batch == 2


# -- the pipeline cache ----------------------------------------------------------------------------


def test_cache_evicts_least_recently_used_and_views_go_with_their_parent() -> None:
    cache = PipelineCache("cpu", budget_bytes=100)
    cache.put("a", "A", size_bytes=40, label="model a")
    cache.put("a-view", "A'", parents=["a"], placement=Placement.VIEW)
    cache.put("b", "B", size_bytes=40)
    assert cache.get("a-view") == "A'"  # using the view keeps its parent warm
    cache.make_room(40)
    assert "b" not in cache
    assert cache.get("a") == "A"
    cache.make_room(70)
    assert "a" not in cache and "a-view" not in cache
    assert cache.used_bytes == 0
    assert cache.evictions == 2


def test_cache_keeps_what_is_asked_for_and_describes_itself() -> None:
    cache = PipelineCache("cpu", budget_bytes=100)
    cache.put("old", 1, size_bytes=50, label="old model")
    cache.put("new", 2, size_bytes=50)
    cache.get("old")
    cache.make_room(50, keep=["old"])
    assert "old" in cache and "new" not in cache
    (entry,) = cache.describe()
    assert entry["name"] == "old model" and entry["placement"] == "device" and entry["uses"] == 2


def test_cache_plans_device_offload_or_a_clear_error() -> None:
    cpu = PipelineCache("cpu", budget_bytes=1000)
    assert cpu.plan(800, 400, what="m") is Placement.DEVICE
    with pytest.raises(mg.GenerationFailedError, match=r"does not fit on cpu.*memory_budget_gb"):
        cpu.plan(2000, 400, what="m")  # offloading needs an accelerator
    gpu = PipelineCache("cuda:0", budget_bytes=1000)
    assert gpu.plan(2000, 400, what="m") is Placement.OFFLOAD
    with pytest.raises(mg.GenerationFailedError, match="even with CPU offload"):
        gpu.plan(2000, 1500, what="m")
    with pytest.raises(mg.GenerationFailedError):
        gpu.plan(2000, 400, what="m", can_offload=False)


def test_module_bytes_counts_parameters_and_buffers() -> None:
    import torch

    layer = torch.nn.BatchNorm1d(4)  # 8 parameters, 8 running stats + 1 counter
    total, largest = module_bytes(layer)
    assert total == largest == 8 * 4 + 8 * 4 + 8
