"""Requests into model inputs: the curated table, the schema, validation before any create, options."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import mediagen as mg
from mediagen.backend import RunContext
from mediagen_testkit import media_fixtures as media
from mediagen_testkit.replicate_server import SDXL_VERSION, FakeModel, ReplicateServer

pytest.importorskip("replicate")
from mediagen_replicate import ReplicateBackend
from mediagen_replicate.catalog import ModelInfo
from mediagen_replicate.mapping import build_inputs
from mediagen_replicate.refs import ModelRef
from mediagen_replicate.schema import InputSchema


@pytest.fixture
def server() -> Iterator[ReplicateServer]:
    with ReplicateServer(time_scale=0.01) as srv:
        yield srv


@pytest.fixture
async def backend(server: ReplicateServer) -> AsyncIterator[ReplicateBackend]:
    b = ReplicateBackend(api_token=server.token, base_url=server.url)
    yield b
    await b.aclose()


def creates(server: ReplicateServer) -> int:
    snap = server.stats.snapshot()["by_route"]
    return sum(n for route, n in snap.items() if route.startswith("POST") and route.endswith("/predictions"))


def odd_model(**extra: Any) -> FakeModel:
    """A model no table knows, with unconventional names and a `$ref` enum."""
    schema = {
        "type": "object",
        "required": ["text"],
        "properties": {
            "text": {"type": "string", "x-order": 0},
            "cfg_scale": {"type": "integer", "minimum": 1, "maximum": 20, "default": 7, "x-order": 1},
            "num_steps": {"type": "integer", "minimum": 1, "maximum": 50, "default": 25, "x-order": 2},
            "aspect_ratio": {"allOf": [{"$ref": "#/components/schemas/ratio"}], "default": "1:1", "x-order": 3},
            "num_images": {"type": "integer", "minimum": 1, "maximum": 3, "default": 1, "x-order": 4},
            "style": {"type": "string", "enum": ["photo", "anime"], "default": "photo", "x-order": 5},
            "seed": {"type": "integer", "x-order": 6},
        },
    }

    def output(inp: dict[str, Any], srv: ReplicateServer) -> list[str]:
        return [
            srv.serve_bytes(media.image_bytes(8, 8, seed=int(inp["seed"]) + i), f"o{i}.png")
            for i in range(int(inp["num_images"]))
        ]

    return FakeModel(
        "acme",
        "odd",
        output=output,
        official=True,
        input_schema=schema,
        extra_schemas={"ratio": {"type": "string", "enum": ["1:1", "16:9", "9:16"]}},
        **extra,
    )


# -- validation before sending -------------------------------------------------------------------


async def test_schema_violation_fails_before_any_create(backend: ReplicateBackend, server: ReplicateServer) -> None:
    with pytest.raises(mg.InvalidRequestError) as info:
        await backend.run(mg.ImageRequest(prompt="x", steps=600), f"stability-ai/sdxl:{SDXL_VERSION}", RunContext())
    message = str(info.value)
    assert "num_inference_steps=600" in message and "(from steps)" in message and "between 1 and 500" in message
    assert info.value.errors[0]["loc"] == ("input", "num_inference_steps")
    assert creates(server) == 0 and server.stats.predictions_created == 0


async def test_enum_violation_names_the_allowed_values(backend: ReplicateBackend, server: ReplicateServer) -> None:
    with pytest.raises(mg.InvalidRequestError, match="must be one of 'af_bella'"):
        await backend.run(
            mg.AudioRequest(prompt="hi", kind="speech", voice="nobody"), "jaaari/kokoro-82m", RunContext()
        )
    assert creates(server) == 0


async def test_option_typo_suggests_the_input(backend: ReplicateBackend, server: ReplicateServer) -> None:
    with pytest.raises(mg.InvalidRequestError, match="did you mean 'output_quality'"):
        await backend.run(
            mg.ImageRequest(prompt="x", options={"output_qualty": 90}), "black-forest-labs/flux-schnell", RunContext()
        )
    assert creates(server) == 0


async def test_missing_required_input(backend: ReplicateBackend, server: ReplicateServer) -> None:
    # wan-2.1-i2v requires an image; a text-only request is refused by the task check first.
    with pytest.raises(mg.UnsupportedRequestError, match="image-to-video"):
        await backend.run(mg.VideoRequest(prompt="x"), "wavespeedai/wan-2.1-i2v-480p", RunContext())
    with pytest.raises(mg.InvalidRequestError, match=r"num_frames=16.*between 81 and 100"):
        await backend.run(
            mg.VideoRequest(prompt="x", image=media.image_bytes(8, 8), frames=16),
            "wavespeedai/wan-2.1-i2v-480p",
            RunContext(),
        )
    assert creates(server) == 0


async def test_invalid_options_are_refused(backend: ReplicateBackend) -> None:
    with pytest.raises(mg.InvalidRequestError, match=r"options\.wait"):
        await backend.run(
            mg.ImageRequest(prompt="x", options={"wait": 90}), "black-forest-labs/flux-schnell", RunContext()
        )
    with pytest.raises(mg.InvalidRequestError, match=r"options\.webhook_events_filter"):
        await backend.run(
            mg.ImageRequest(prompt="x", options={"webhook_events_filter": ["sometimes"]}),
            "black-forest-labs/flux-schnell",
            RunContext(),
        )


# -- mapping ---------------------------------------------------------------------------------------


async def test_unmapped_fields_warn_and_strict_refuses(backend: ReplicateBackend, server: ReplicateServer) -> None:
    req = mg.ImageRequest(prompt="a fox", negative_prompt="blurry", guidance=3.0, seed=1)
    res = await backend.run(req, "black-forest-labs/flux-schnell", RunContext())
    assert {w.feature for w in res.warnings} == {"negative_prompt", "guidance"}
    assert all(w.type == "unsupported" for w in res.warnings)
    assert "negative prompt" in next(w.message for w in res.warnings if w.feature == "negative_prompt")

    before = creates(server)
    with pytest.raises(mg.UnsupportedRequestError, match="negative_prompt"):
        await backend.run(req, "black-forest-labs/flux-schnell", RunContext(strict=True))
    assert creates(server) == before


async def test_width_and_height_become_the_nearest_aspect_ratio(
    backend: ReplicateBackend, server: ReplicateServer
) -> None:
    res = await backend.run(
        mg.ImageRequest(prompt="wide", width=1024, height=576, seed=1), "black-forest-labs/flux-schnell", RunContext()
    )
    assert server.snapshot(res.raw["id"])["input"]["aspect_ratio"] == "16:9"
    assert [w.type for w in res.warnings] == ["compatibility"]


async def test_options_pass_raw_inputs_through(backend: ReplicateBackend, server: ReplicateServer) -> None:
    res = await backend.run(
        mg.ImageRequest(prompt="a fox", options={"output_quality": 95, "go_fast": False, "wait": 5}),
        "black-forest-labs/flux-schnell",
        RunContext(),
    )
    sent = server.snapshot(res.raw["id"])
    assert sent["input"] == {"prompt": "a fox", "output_quality": 95, "go_fast": False}
    assert server.records[res.raw["id"]].prefer_wait_s == 5


async def test_unknown_model_is_mapped_from_its_schema(backend: ReplicateBackend, server: ReplicateServer) -> None:
    server.add_model(odd_model())
    caps = await backend.capabilities("acme/odd")
    assert caps.max_outputs_per_call == 3
    assert "text-to-image" in caps.tasks and "image-to-image" not in caps.tasks

    req = mg.ImageRequest(prompt="a fox", guidance=4.6, steps=30, aspect_ratio="16:10", negative_prompt="x", n=3)
    res = await backend.run(req, "acme/odd", RunContext())
    sent = server.snapshot(res.raw["id"])["input"]
    assert sent == {"text": "a fox", "cfg_scale": 5, "num_steps": 30, "aspect_ratio": "16:9", "num_images": 3}
    assert len(res.artifacts) == 3
    assert {w.feature: w.type for w in res.warnings} == {
        "guidance": "compatibility",  # rounded to the integer input
        "aspect_ratio": "compatibility",  # 16:10 is not offered; 16:9 is nearest
        "negative_prompt": "unsupported",
    }


async def test_client_splits_n_by_num_outputs_maximum(server: ReplicateServer) -> None:
    server.add_model(odd_model())
    backend = ReplicateBackend(api_token=server.token, base_url=server.url)
    async with mg.Client(backends={"replicate": backend}) as client:
        res = await client.image("a fox", model="replicate:acme/odd", n=5)
    assert len(res.artifacts) == 5
    assert server.stats.predictions_created == 2  # 3 + 2


async def test_bad_references(backend: ReplicateBackend, server: ReplicateServer) -> None:
    with pytest.raises(mg.ModelNotFoundError, match="owner/name:<64-hex version id>"):
        await backend.capabilities("just-a-name")
    with pytest.raises(mg.ModelNotFoundError, match="Did you mean 'black-forest-labs/flux-schnell'"):
        await backend.capabilities("black-forest-labs/flux-schnel")
    with pytest.raises(mg.ModelNotFoundError):
        await backend.capabilities("stability-ai/sdxl:" + "0" * 64)
    with pytest.raises(mg.UnsupportedRequestError, match="cannot do text-to-image"):
        await backend.run(mg.ImageRequest(prompt="x"), "minimax/video-01", RunContext())


async def test_schema_is_fetched_once(backend: ReplicateBackend, server: ReplicateServer) -> None:
    import asyncio

    await asyncio.gather(*(backend.capabilities("black-forest-labs/flux-schnell") for _ in range(20)))
    await backend.run(mg.ImageRequest(prompt="x", seed=1), "black-forest-labs/flux-schnell", RunContext())
    assert server.stats.count("GET", "/v1/models/{owner}/{name}") == 1


# -- units -----------------------------------------------------------------------------------------


def test_model_ref() -> None:
    assert ModelRef.parse("owner/name") == ModelRef("owner", "name", None)
    ref = ModelRef.parse(f"stability-ai/sdxl:{SDXL_VERSION}")
    assert (ref.name_ref, ref.version, str(ref)) == (
        "stability-ai/sdxl",
        SDXL_VERSION,
        f"stability-ai/sdxl:{SDXL_VERSION}",
    )
    for bad in ("", "owner", "owner/name:v1", "a/b/c"):
        with pytest.raises(mg.ModelNotFoundError):
            ModelRef.parse(bad)


def test_input_schema_checks_types_bounds_enums_and_arrays() -> None:
    schema = InputSchema.from_openapi(odd_model().openapi_schema())
    assert schema.spec("aspect_ratio")["enum"] == ["1:1", "16:9", "9:16"]  # resolved through $ref
    schema.check({"text": "x", "cfg_scale": 3.0, "style": "anime"}, model="m")  # 3.0 is an integer in JSON
    with pytest.raises(mg.InvalidRequestError) as info:
        schema.check({"cfg_scale": "high", "num_steps": 0, "style": "oil", "seed": True}, model="m")
    kinds = {(e["loc"][1], e["type"]) for e in info.value.errors}
    assert kinds == {
        ("text", "required"),
        ("cfg_scale", "invalid_type"),
        ("num_steps", "range"),
        ("style", "enum"),
        ("seed", "invalid_type"),
    }
    images = InputSchema(
        properties={"images": {"type": "array", "items": {"type": "string", "format": "uri"}, "minItems": 1}}
    )
    images.check({"images": [mg.Image(media.image_bytes(8, 8))]}, model="m")  # artifacts stand for URLs
    with pytest.raises(mg.InvalidRequestError, match="item 0 must be a URL"):
        images.check({"images": ["not a url"]}, model="m")


def test_unknown_schema_maps_by_convention_and_checks_nothing() -> None:
    info = ModelInfo(ModelRef("a", "b"), None, InputSchema.from_openapi(None))
    ctx = RunContext()
    mapped = build_inputs(mg.ImageRequest(prompt="p", width=512, height=512, steps=4), info, ctx)
    assert mapped.inputs == {"prompt": "p", "num_inference_steps": 4, "width": 512, "height": 512}
    info.schema.check({"anything": 1}, model="a/b")
    assert ctx.warnings == []
