"""Models with their own shapes: an output layout fills in URLs; a short Cancel-After is refused by the setting."""

from __future__ import annotations

import pytest

from mediagen.serve import ServeSettings
from mediagen.serve.predictions import InputError, parse_cancel_after
from mediagen.serve.store import PredictionRecord


def record(**extra: object) -> PredictionRecord:
    rec = PredictionRecord(id="a" * 26, owner="acme", name="m", version="v", token="", input={})
    rec.output = ["out-0.glb", "out-1.mp4"]
    rec.extra = dict(extra)
    rec.status = "succeeded"
    return rec


def test_without_a_layout_the_output_is_the_list_of_urls() -> None:
    rec = record()
    base = "http://127.0.0.1:1"
    assert rec.to_json(base)["output"] == [
        f"{base}/outputs/{rec.id}/{rec.file_key}/out-0.glb",
        f"{base}/outputs/{rec.id}/{rec.file_key}/out-1.mp4",
    ]


def test_a_layout_places_each_url_and_keeps_literals() -> None:
    layout = {
        "model_file": {"$output": 0},
        "combined_video": {"$output": 1},
        "color_video": None,
        "frames": [{"$output": 1}, "data:image/png;base64,AAAA"],
        "not_a_slot": {"$output": 2, "x": 1},  # not a lone `$output`: left as it is
    }
    rec = record(output_layout=layout)
    out = rec.to_json("http://h")["output"]
    url = f"http://h/outputs/{rec.id}/{rec.file_key}"
    assert out == {
        "model_file": f"{url}/out-0.glb",
        "combined_video": f"{url}/out-1.mp4",
        "color_video": None,
        "frames": [f"{url}/out-1.mp4", "data:image/png;base64,AAAA"],
        "not_a_slot": {"$output": 2, "x": 1},
    }
    # An index past the outputs is no URL: it stays a placeholder rather than pointing anywhere.
    assert record(output_layout={"$output": 5}).to_json("http://h")["output"] == {"$output": 5}


def test_cancel_after_minimum_is_a_setting() -> None:
    assert ServeSettings().min_cancel_after_s == 5.0 and ServeSettings().page_size == 100
    with pytest.raises(InputError, match="at least 5s"):
        parse_cancel_after("2s")
    assert parse_cancel_after("0.05", minimum_s=0.05) == 0.05
    with pytest.raises(InputError, match=r"at least 0\.05s"):
        parse_cancel_after("0.01", minimum_s=0.05)
