"""Issue 10, item 5: the front door is typed.

`Client.image/video/audio/mesh` and their `SyncClient` twins declare every request field with its
type (`**fields: Unpack[ImageFields]` ...). One test keeps the TypedDicts in step with the pydantic
request models; another runs mypy on a misspelt field and expects it to fail.
"""

from __future__ import annotations

import collections.abc
import inspect
import subprocess
import sys
import types
from pathlib import Path
from typing import Annotated, Any, ForwardRef, Literal, Union, get_args, get_origin

import pytest

import mediagen as mg
from mediagen import _fields
from mediagen._types import ImageInput

ROOT = Path(__file__).resolve().parents[2]
PAIRS = [
    (mg.ImageRequest, _fields.ImageFields, "image"),
    (mg.VideoRequest, _fields.VideoFields, "video"),
    (mg.AudioRequest, _fields.AudioFields, "audio"),
    (mg.MeshRequest, _fields.MeshFields, "mesh"),
]
# What a caller may pass for what the model holds: the request models coerce these on validation.
WIDER = {mg.Image: ImageInput, mg.LoRA: _fields.LoRAInput}


def leaves(tp: Any, *, model_side: bool = False) -> frozenset[str]:
    """A type as a set of comparable names: unions flattened, containers by their abstract kind."""
    origin = get_origin(tp)
    if origin is Annotated:
        return leaves(get_args(tp)[0], model_side=model_side)
    if origin in (Union, types.UnionType):
        return frozenset().union(*(leaves(arg, model_side=model_side) for arg in get_args(tp)))
    if tp is type(None):
        return frozenset({"None"})
    if isinstance(tp, ForwardRef):
        return frozenset({tp.__forward_arg__})
    if isinstance(tp, str):
        return frozenset({tp})
    if origin is Literal:
        return frozenset({f"Literal{sorted(map(repr, get_args(tp)))}"})
    if origin in (list, collections.abc.Sequence):
        inner = sorted(leaves(get_args(tp)[0], model_side=model_side))
        return frozenset({f"Sequence[{'|'.join(inner)}]"})
    if origin in (dict, collections.abc.Mapping):
        return frozenset({f"Mapping[{', '.join(str(a) for a in get_args(tp))}]"})
    if origin is tuple:
        return frozenset({f"tuple[{', '.join(sorted('|'.join(sorted(leaves(a))) for a in get_args(tp)))}]"})
    if model_side and tp in WIDER:
        return leaves(WIDER[tp])
    return frozenset({getattr(tp, "__qualname__", str(tp))})


@pytest.mark.parametrize(("request_cls", "fields", "method"), PAIRS, ids=[m for _, _, m in PAIRS])
def test_typed_fields_match_the_request_model(request_cls: Any, fields: Any, method: str) -> None:
    declared = dict(fields.__annotations__)  # objects, not strings (no `from __future__ import annotations` there)
    model = {name: info.annotation for name, info in request_cls.model_fields.items() if name != "prompt"}
    assert set(declared) == set(model), f"{fields.__name__} is out of step with {request_cls.__name__}"
    for name, annotation in model.items():
        assert leaves(declared[name]) == leaves(annotation, model_side=True), name
    assert fields.__total__ is False  # every field optional, as in the models


@pytest.mark.parametrize("owner", [mg.Client, mg.SyncClient])
@pytest.mark.parametrize(("request_cls", "fields", "method"), PAIRS, ids=[m for _, _, m in PAIRS])
def test_entry_points_take_the_typed_fields(owner: Any, request_cls: Any, fields: Any, method: str) -> None:
    params = inspect.signature(getattr(owner, method)).parameters
    assert list(params)[:2] == ["self", "prompt"]
    var_kw = [p for p in params.values() if p.kind is inspect.Parameter.VAR_KEYWORD]
    assert [p.name for p in var_kw] == ["fields"] and f"Unpack[{fields.__name__}]" in str(var_kw[0].annotation)
    named = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert named == {"model", "timeout", "strict", "on_event", "cache", "provenance", "policy"}


async def test_typed_fields_reach_the_request() -> None:
    async with mg.Client() as client:
        res = await client.image("a fox", model="test:fake", width=16, height=16, n=2, seed=3, loras=["a/b"])
    assert res.seeds == [3, 4] and len(res.artifacts) == 2
    async with mg.Client() as client:
        with pytest.raises(mg.InvalidRequestError, match="widht"):
            await client.image("a fox", model="test:fake", widht=16)  # type: ignore[call-arg]


PROBE = """
import mediagen as mg


async def main(client: mg.Client, sync: mg.SyncClient) -> None:
    await client.image("x", model="test:fake", width=512)
    await client.image("x", widht=512)
    await client.video("x", fps="fast")
    sync.audio("x", kind="opera")
    sync.mesh("x", format="stl")
"""


@pytest.mark.slow
def test_mypy_rejects_a_misspelt_or_mistyped_field(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--follow-imports=silent", str(probe)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    errors = {int(line.split(":")[1]) for line in proc.stdout.splitlines() if line.startswith(str(probe))}
    # Line 6 is the correct call; each of lines 7-10 is one mistake.
    assert errors == {7, 8, 9, 10}, out
    assert '"widht"' in out
