"""What `print(result)` shows: who made it, what it made, how long; never the raw payload."""

from __future__ import annotations

import numpy as np

import mediagen as mg


def test_repr_is_short_and_says_provider_model_artifacts_timings() -> None:
    with mg.SyncClient() as client:
        res = client.image("a fox", model="test:fake", n=2, seed=1, width=32, height=16)
    res.raw = {"payload": "x" * 10_000}  # whatever the provider returned stays out of the repr
    text = repr(res)
    assert text == str(res)
    assert text.startswith("<mediagen.Result test:fake [")
    assert text.count("<mediagen.Image image/png 32x16>") == 2
    assert "total " in text and " s" in text
    assert "payload" not in text and len(text) < 200


def test_repr_counts_many_artifacts_and_warnings() -> None:
    images = [mg.Image.from_array(np.zeros((2, 2, 3), "uint8")) for _ in range(6)]
    res = mg.Result(artifacts=images, provider="p", model="m", warnings=[mg.GenerationWarning.other("note")])
    text = repr(res)
    assert "(6 in all)" in text and "1 warning(s)" in text and "untimed" in text


def test_device_time_says_which_device() -> None:
    usage = mg.Usage(device_s=1.5, device="cpu") + mg.Usage(device_s=0.5, device="cpu")
    assert usage.device_s == 2.0 and usage.device == "cpu"
    assert (usage + mg.Usage(device_s=1.0, device="cuda:0")).device == "mixed"
    assert (mg.Usage() + usage).device == "cpu"
    assert not hasattr(mg.Usage(), "gpu_s")
