"""The diffusers backend on tiny random-weight pipelines, saved to disk and loaded by path, offline.

Sizes are 16-32 px and 2 steps, so that every task runs in tens of milliseconds on a CPU; only Shap-E's
mesh decoding (a fixed 128^3 grid) takes seconds, so each 3D task runs once.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mediagen as mg
from mediagen_diffusers import DiffusersBackend

TinyModel = Callable[[str], Path]


# Tests that count what was batched together wait longer for company than the 1 ms default, so that
# a busy test machine descheduling the event loop between two submissions does not split a batch.
WINDOW = {"batch_window_s": 0.02}


@pytest.fixture(scope="module")
def backend() -> Any:
    """One backend for the module: models load once, as they would in an application."""
    b = DiffusersBackend(**WINDOW)
    yield b
    asyncio.run(b.aclose())


@pytest.fixture(scope="module")
def sd(tiny_model: TinyModel) -> str:
    return str(tiny_model("sd"))


@pytest.fixture
def picture() -> mg.Image:
    rng = np.random.default_rng(0)
    return mg.Image.from_array(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))


def pixels(artifact: mg.Artifact) -> np.ndarray[Any, Any]:
    assert isinstance(artifact, mg.Image)
    return np.asarray(artifact.to_pil().convert("RGB"), dtype=np.int16)


def same(a: mg.Artifact, b: mg.Artifact) -> bool:
    # Batched and lone calls differ by float rounding only (about 1e-6), which can flip a uint8 by one.
    return bool(np.abs(pixels(a) - pixels(b)).max() <= 1)


async def run(backend: Any, request: mg.Request, model: str, **ctx: Any) -> mg.Result:
    return await backend.run(request, model, mg.RunContext(**ctx))  # type: ignore[no-any-return]


class Events:
    """An event sink that records, and lets a test wait for the first progress event."""

    def __init__(self) -> None:
        self.seen: list[mg.Event] = []
        self.progressed = asyncio.Event()

    def __call__(self, event: mg.Event) -> None:
        self.seen.append(event)
        if isinstance(event, mg.Progress):
            self.progressed.set()

    async def first_progress(self) -> None:
        await asyncio.wait_for(self.progressed.wait(), 60)

    def steps(self) -> list[int]:
        return [e.step for e in self.seen if isinstance(e, mg.Progress)]


def image_request(**fields: Any) -> mg.ImageRequest:
    return mg.ImageRequest(**{"prompt": "a red fox", "width": 32, "height": 32, "steps": 2, "seed": 1, **fields})


# -- every task makes a decodable file of the requested size ---------------------------------------


async def test_text_to_image_saves_a_png_of_the_requested_size(backend: Any, sd: str, tmp_path: Path) -> None:
    import PIL.Image

    res = await run(backend, image_request(width=48, height=32, n=2), sd)
    assert res.provider == "diffusers" and res.model == sd
    assert len(res.artifacts) == 2 and res.seeds == [1, 2]
    for i, artifact in enumerate(res.artifacts):
        path = artifact.save(tmp_path / f"fox{i}.png")
        with PIL.Image.open(path) as decoded:
            assert decoded.size == (48, 32)
    assert res.usage.images == 2
    assert res.usage.megapixels == pytest.approx(2 * 48 * 32 / 1e6)
    assert res.timings.run_s is not None and res.timings.queue_s is not None
    assert res.raw["pipeline"] == "StableDiffusionPipeline"


async def test_output_format_picks_the_encoding(backend: Any, sd: str, tmp_path: Path) -> None:
    res = await run(backend, image_request(output_format="jpeg"), sd)
    assert res.artifacts[0].media_type == "image/jpeg"
    assert res.artifacts[0].read()[:2] == b"\xff\xd8"


async def test_image_to_image_inpaint_and_controlnet(
    backend: Any, sd: str, tiny_model: TinyModel, picture: mg.Image, tmp_path: Path
) -> None:
    import PIL.Image

    controlnet = str(tiny_model("controlnet"))
    mask = mg.Image.from_array(np.pad(np.full((16, 16), 255, np.uint8), 8))
    requests = {
        "image-to-image": image_request(image=picture, strength=0.6, width=None, height=None),
        "inpaint": image_request(image=picture, mask=mask, width=24, height=24),
        "controlnet": image_request(control_image=picture, control_model=controlnet, control_scale=0.8),
    }
    pipelines = {}
    for task, request in requests.items():
        assert request.task == task
        res = await run(backend, request, sd)
        path = res.artifacts[0].save(tmp_path / f"{task}.png")
        with PIL.Image.open(path) as decoded:
            # Without a size, image-to-image follows the input picture's.
            assert decoded.size == ((24, 24) if task == "inpaint" else (32, 32))
        assert res.warnings == []
        pipelines[task] = res.raw["pipeline"]
    assert pipelines == {
        "image-to-image": "StableDiffusionImg2ImgPipeline",
        "inpaint": "StableDiffusionInpaintPipeline",
        "controlnet": "StableDiffusionControlNetPipeline",
    }
    # The control image steers the result.
    plain = await run(backend, image_request(), sd)
    other = mg.Image.from_array(np.zeros((32, 32, 3), np.uint8))
    steered = await run(backend, image_request(control_image=other, control_model=controlnet), sd)
    assert not same(plain.artifacts[0], steered.artifacts[0])


async def test_text_to_video_saves_an_mp4_with_the_requested_frames(
    backend: Any, tiny_model: TinyModel, tmp_path: Path
) -> None:
    wan = str(tiny_model("wan-t2v"))
    req = mg.VideoRequest(prompt="waves", width=32, height=16, frames=5, fps=10, steps=2, seed=3)
    res = await run(backend, req, wan)
    (video,) = res.videos
    path = video.save(tmp_path / "waves.mp4")
    decoded = mg.Video(path=path)
    assert decoded.frames.shape == (5, 16, 32, 3)
    assert decoded.fps == pytest.approx(10)
    assert res.usage.video_s == pytest.approx(0.5)
    assert res.raw["pipeline"] == "WanPipeline"


async def test_video_frames_round_to_what_the_model_makes_with_a_warning(backend: Any, tiny_model: TinyModel) -> None:
    wan = str(tiny_model("wan-t2v"))
    req = mg.VideoRequest(prompt="waves", width=16, height=16, duration_s=0.5, fps=12, steps=2, seed=3)
    res = await run(backend, req, wan)
    assert res.videos[0].num_frames == 5  # 6 frames asked for; Wan makes 4k+1
    (warning,) = res.warnings
    assert warning.type == "compatibility" and warning.feature == "frames"
    with pytest.raises(mg.UnsupportedRequestError, match="frames"):
        await run(backend, req, wan, strict=True)


async def test_image_to_video_with_svd(backend: Any, tiny_model: TinyModel, picture: mg.Image, tmp_path: Path) -> None:
    svd = str(tiny_model("svd"))
    req = mg.VideoRequest(image=picture, prompt="ignored", frames=4, steps=2, seed=5)
    assert req.task == "image-to-video"
    res = await run(backend, req, svd)
    path = res.videos[0].save(tmp_path / "clip.mp4")
    decoded = mg.Video(path=path)
    assert decoded.frames.shape == (4, 32, 32, 3)
    assert [w.feature for w in res.warnings] == ["prompt"]  # SVD is conditioned on the image only


async def test_text_to_3d_gives_an_upright_coloured_mesh(backend: Any, tiny_model: TinyModel, tmp_path: Path) -> None:
    import trimesh

    shap_e = str(tiny_model("shap-e"))
    req = mg.MeshRequest(prompt="a chair", negative_prompt="wobbly", format="ply", steps=2, seed=0)
    res = await run(backend, req, shap_e)
    (mesh,) = res.meshes
    assert mesh.media_type == "model/ply"
    assert [w.feature for w in res.warnings] == ["negative_prompt"]
    path = mesh.save(tmp_path / "chair.glb")
    loaded = trimesh.load(path, force="mesh")
    assert len(loaded.faces) > 0 and len(loaded.vertices) > 0
    colours = mg.Mesh(path=path).to_trimesh().visual.vertex_colors
    assert colours is not None and len(colours) == len(loaded.vertices)
    assert res.usage.meshes == 1


async def test_image_to_3d(backend: Any, tiny_model: TinyModel, picture: mg.Image, tmp_path: Path) -> None:
    import trimesh

    shap_e = str(tiny_model("shap-e-img2img"))
    res = await run(backend, mg.MeshRequest(image=picture, format="obj", steps=2, seed=0), shap_e)
    (mesh,) = res.meshes
    assert mesh.media_type == "model/obj"
    loaded = trimesh.load(mesh.save(tmp_path / "thing.obj"), force="mesh")
    assert len(loaded.faces) > 0


async def test_fields_a_model_cannot_take_are_warnings_or_strict_errors(backend: Any, tiny_model: TinyModel) -> None:
    # Planning happens before anything runs, so strict mode fails fast, even for slow models.
    shap_e = str(tiny_model("shap-e"))
    for request, feature in [
        (mg.MeshRequest(prompt="a chair", negative_prompt="wobbly", steps=2), "negative_prompt"),
        (mg.MeshRequest(prompt="a chair", options={"clip_skip": 1}, steps=2), "options.clip_skip"),
    ]:
        with pytest.raises(mg.UnsupportedRequestError) as caught:
            await run(backend, request, shap_e, strict=True)
        assert caught.value.feature == feature
    svd = str(tiny_model("svd"))
    with pytest.raises(mg.UnsupportedRequestError, match="prompt"):
        await run(backend, mg.VideoRequest(image=np.zeros((16, 16, 3), np.uint8), prompt="x"), svd, strict=True)


# -- seeds, batching, n ----------------------------------------------------------------------------


async def test_seeds_reproduce(backend: Any, sd: str) -> None:
    a = await run(backend, image_request(seed=7), sd)
    b = await run(backend, image_request(seed=7), sd)
    c = await run(backend, image_request(seed=8), sd)
    assert same(a.artifacts[0], b.artifacts[0])
    assert not same(a.artifacts[0], c.artifacts[0])
    # Without a seed one is picked, reported, and makes the same image again.
    d = await run(backend, image_request(seed=None), sd)
    (picked,) = d.seeds
    assert isinstance(picked, int)
    again = await run(backend, image_request(seed=picked), sd)
    assert same(d.artifacts[0], again.artifacts[0])


async def test_batched_equals_alone(backend: Any, sd: str) -> None:
    alone = await run(backend, image_request(prompt="a fox in snow", seed=42, negative_prompt="blurry"), sd)
    mates = [
        image_request(prompt="a cat", seed=1),
        image_request(prompt="a fox in snow", seed=42, negative_prompt="blurry"),
        image_request(prompt="a house", seed=3),
        image_request(prompt="a boat at dawn", seed=4),
    ]
    # Requests with and without a negative prompt do not share a call; make them all alike.
    mates = [m.model_copy(update={"negative_prompt": m.negative_prompt or "blurry"}) for m in mates]
    results = await asyncio.gather(*(run(backend, m, sd) for m in mates))
    assert all(r.raw["batch_requests"] == 4 for r in results)
    assert same(results[1].artifacts[0], alone.artifacts[0])
    assert not same(results[0].artifacts[0], alone.artifacts[0])


async def test_n_counts_toward_the_batch_and_each_output_keeps_its_seed(sd: str) -> None:
    backend = DiffusersBackend(max_batch=4, batch_window_s=0.05)
    try:
        assert (await backend.capabilities(sd)).max_outputs_per_call == 4
        results = await asyncio.gather(
            run(backend, image_request(seed=10, n=2), sd),
            run(backend, image_request(seed=20, n=2), sd),
            run(backend, image_request(seed=30, n=2), sd),
        )
        # Two requests of 2 fill a call of 4; the third waits for the next one (which two is up to arrival).
        assert sorted(r.raw["batch_outputs"] for r in results) == [2, 4, 4]
        assert results[0].seeds == [10, 11]
        single = await run(backend, image_request(seed=11), sd)
        assert same(results[0].artifacts[1], single.artifacts[0])
    finally:
        await backend.aclose()


async def test_video_batched_equals_alone(backend: Any, tiny_model: TinyModel) -> None:
    wan = str(tiny_model("wan-t2v"))

    def req(prompt: str, seed: int) -> mg.VideoRequest:
        return mg.VideoRequest(prompt=prompt, width=16, height=16, frames=5, steps=2, seed=seed)

    alone = await run(backend, req("waves", 9), wan)
    batched = await asyncio.gather(run(backend, req("fire", 1), wan), run(backend, req("waves", 9), wan))
    assert batched[1].raw["batch_requests"] == 2
    diff = np.abs(alone.videos[0].frames.astype(int) - batched[1].videos[0].frames.astype(int)).max()
    assert diff <= 1


# -- LoRA, options ---------------------------------------------------------------------------------


async def test_lora_changes_the_output_and_is_gone_afterwards(backend: Any, sd: str, tiny_model: TinyModel) -> None:
    lora = str(tiny_model("lora"))
    before = await run(backend, image_request(), sd)
    with_lora = await run(backend, image_request(loras=[lora]), sd)
    half = await run(backend, image_request(loras=[(lora, 0.5)]), sd)
    two = await run(backend, image_request(loras=[(lora, 0.5), mg.LoRA(path=lora, scale=0.25)]), sd)
    after = await run(backend, image_request(), sd)
    assert not same(before.artifacts[0], with_lora.artifacts[0])
    assert not same(with_lora.artifacts[0], half.artifacts[0])
    assert not same(half.artifacts[0], two.artifacts[0])
    assert same(before.artifacts[0], after.artifacts[0])
    # A LoRA request never shares a call with a plain one.
    mixed = await asyncio.gather(run(backend, image_request(), sd), run(backend, image_request(loras=[lora]), sd))
    assert [r.raw["batch_requests"] for r in mixed] == [1, 1]
    assert same(mixed[1].artifacts[0], with_lora.artifacts[0])


async def test_a_missing_lora_is_a_clear_error_and_leaves_the_model_clean(
    backend: Any, sd: str, tmp_path: Path
) -> None:
    before = await run(backend, image_request(), sd)
    with pytest.raises(mg.ModelNotFoundError, match="LoRA"):
        await run(backend, image_request(loras=[str(tmp_path / "nope.safetensors")]), sd)
    after = await run(backend, image_request(), sd)
    assert same(before.artifacts[0], after.artifacts[0])


async def test_scheduler_option_swaps_the_sampler_for_one_request(backend: Any, sd: str) -> None:
    before = await run(backend, image_request(), sd)
    euler = await run(backend, image_request(options={"scheduler": "euler_a"}), sd)
    after = await run(backend, image_request(), sd)
    assert not same(before.artifacts[0], euler.artifacts[0])
    assert same(before.artifacts[0], after.artifacts[0])
    with pytest.raises(mg.InvalidRequestError, match="compatible"):
        await run(backend, image_request(options={"scheduler": "NoSuchScheduler"}), sd)


async def test_unknown_options_are_an_error_listing_the_known_ones(backend: Any, sd: str) -> None:
    with pytest.raises(mg.InvalidRequestError, match=r"unknown option.*'sampler'.*scheduler, control_model"):
        await run(backend, image_request(options={"sampler": "euler"}), sd)
    with pytest.raises(mg.InvalidRequestError, match="eta"):
        await run(backend, image_request(options={"eta": 3}), sd)


# -- progress and cancellation ---------------------------------------------------------------------


async def test_progress_events_for_each_request_of_a_batch(backend: Any, sd: str) -> None:
    events: list[list[mg.Event]] = [[], []]
    await asyncio.gather(*(run(backend, image_request(steps=3, seed=i), sd, emit=events[i].append) for i in range(2)))
    for seen in events:
        assert [(e.step, e.total) for e in seen if isinstance(e, mg.Progress)] == [(1, 3), (2, 3), (3, 3)]


async def test_cancelling_mid_run_stops_at_the_next_step_and_the_worker_carries_on(backend: Any, sd: str) -> None:
    events = Events()
    task = asyncio.ensure_future(run(backend, image_request(steps=400), sd, emit=events))
    await events.first_progress()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert max(events.steps()) < 400
    res = await run(backend, image_request(), sd)
    assert len(res.artifacts) == 1


async def test_cancelling_one_request_of_a_batch_spares_the_others(backend: Any, sd: str) -> None:
    alone = await run(backend, image_request(steps=40, seed=5), sd)
    events = Events()
    doomed = asyncio.ensure_future(run(backend, image_request(steps=40, seed=6), sd, emit=events))
    kept = asyncio.ensure_future(run(backend, image_request(steps=40, seed=5), sd))
    await events.first_progress()
    doomed.cancel()
    res = await kept
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert res.raw["batch_requests"] == 2
    assert same(res.artifacts[0], alone.artifacts[0])


# -- concurrency safety ----------------------------------------------------------------------------


async def test_eight_concurrent_requests_of_different_tasks_do_not_corrupt_each_other(
    backend: Any, sd: str, tiny_model: TinyModel, picture: mg.Image
) -> None:
    wan, svd = str(tiny_model("wan-t2v")), str(tiny_model("svd"))
    lora, controlnet = str(tiny_model("lora")), str(tiny_model("controlnet"))
    mask = mg.Image.from_array(np.pad(np.full((16, 16), 255, np.uint8), 8))
    jobs: list[tuple[mg.Request, str]] = [
        (image_request(seed=1), sd),
        (image_request(seed=2, image=picture, strength=0.7), sd),
        (image_request(seed=3, image=picture, mask=mask), sd),
        (image_request(seed=4, control_image=picture, control_model=controlnet), sd),
        (image_request(seed=5, loras=[lora]), sd),
        (image_request(seed=6, options={"scheduler": "dpm++"}), sd),
        (mg.VideoRequest(prompt="waves", width=16, height=16, frames=5, steps=2, seed=7), wan),
        (mg.VideoRequest(image=picture, frames=4, steps=2, seed=8), svd),
    ]
    solo = [await run(backend, request, model) for request, model in jobs]
    together = await asyncio.gather(*(run(backend, request, model) for request, model in jobs))
    for one, other in zip(solo, together, strict=True):
        for a, b in zip(one.artifacts, other.artifacts, strict=True):
            if isinstance(a, mg.Video):
                assert isinstance(b, mg.Video)
                assert np.abs(a.frames.astype(int) - b.frames.astype(int)).max() <= 1
            else:
                assert same(a, b)


# -- models: errors, memory, describe --------------------------------------------------------------


async def test_missing_or_malformed_model_directories_are_clear_errors(
    backend: Any, sd: str, tiny_model: TinyModel, tmp_path: Path
) -> None:
    async def error_of(model: str) -> str:
        with pytest.raises(mg.MediagenError) as caught:
            await backend.capabilities(model)
        return str(caught.value)

    assert "does not exist" in await error_of(str(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no model_index.json" in await error_of(str(empty))
    assert "single model (ControlNetModel)" in await error_of(str(tiny_model("controlnet")))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text("{not json")
    assert "cannot be read as JSON" in await error_of(str(broken))
    partial = tmp_path / "partial"
    shutil.copytree(sd, partial)
    shutil.rmtree(partial / "unet")
    message = await error_of(str(partial))
    assert "'unet'" in message and str(partial / "unet") in message
    no_weights = tmp_path / "no-weights"
    shutil.copytree(sd, no_weights)
    for f in (no_weights / "vae").glob("*.safetensors"):
        f.unlink()
    assert "no weights" in await error_of(str(no_weights))


async def test_deprecated_and_foreign_pipelines_are_refused(backend: Any, tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    (old / "model_index.json").write_text(json.dumps({"_class_name": "TextToVideoSDPipeline"}))
    with pytest.raises(mg.UnsupportedRequestError, match="deprecated"):
        await backend.capabilities(str(old))
    depth = tmp_path / "depth"
    depth.mkdir()
    (depth / "model_index.json").write_text(json.dumps({"_class_name": "MarigoldDepthPipeline"}))
    with pytest.raises(mg.UnsupportedRequestError, match="MarigoldDepthPipeline"):
        await backend.capabilities(str(depth))


async def test_a_task_the_model_does_not_do_is_unsupported(backend: Any, sd: str) -> None:
    caps = await backend.capabilities(sd)
    assert caps.tasks == {"text-to-image", "image-to-image", "inpaint", "controlnet"}
    with pytest.raises(mg.UnsupportedRequestError, match="text-to-video"):
        await run(backend, mg.VideoRequest(prompt="waves"), sd)
    with pytest.raises(mg.UnsupportedRequestError, match="control_model"):
        await run(backend, image_request(control_image=np.zeros((32, 32, 3), np.uint8)), sd)


async def test_a_model_larger_than_the_memory_budget_fails_clearly(sd: str) -> None:
    backend = DiffusersBackend(memory_budget_gb=1e-6)
    try:
        with pytest.raises(mg.GenerationFailedError, match=r"does not fit on cpu.*memory_budget_gb"):
            await run(backend, image_request(), sd)
        # Nothing crashed: the worker serves the next request, of another backend, as usual.
    finally:
        await backend.aclose()


async def test_least_recently_used_models_are_evicted_to_stay_within_budget(sd: str, tiny_model: TinyModel) -> None:
    from mediagen_diffusers.loading import estimate_weights, resolve_model

    wan = str(tiny_model("wan-t2v"))
    sizes = [estimate_weights(resolve_model(m), 4) for m in (sd, wan)]
    budget = max(s[0] for s in sizes if s) * 1.5
    backend = DiffusersBackend(memory_budget_gb=budget / 1024**3)
    try:
        await run(backend, image_request(), sd)
        await run(backend, mg.VideoRequest(prompt="x", width=16, height=16, frames=5, steps=2), wan)
        loaded = [entry["name"] for entry in backend.describe()["loaded"]]
        assert any(wan in name for name in loaded)
        assert not any(sd in name for name in loaded)
    finally:
        await backend.aclose()


async def test_describe_shows_device_and_what_is_loaded(backend: Any, sd: str) -> None:
    await run(backend, image_request(), sd)
    state = backend.describe()
    assert state["device"] == "cpu" and state["dtype"] == "float32"
    names = [entry["name"] for entry in state["loaded"]]
    assert any("StableDiffusionPipeline" in name for name in names)
    assert state["batching"]["max_batch"] == 8


def test_bad_settings_name_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"max_batchh.*known settings: device"):
        DiffusersBackend(max_batchh=4)


# -- through the client ----------------------------------------------------------------------------


async def test_through_the_client_generate_batches_and_warns(sd: str, tiny_model: TinyModel) -> None:
    shap_e = str(tiny_model("shap-e"))
    # Through the client the first request also loads the model, so the four reach the batcher further
    # apart than they do in the backend-level tests: a wider window keeps a loaded CI machine from
    # splitting them.
    async with mg.Client(providers={"diffusers": {"batch_window_s": 0.25}}) as client:
        results = await asyncio.gather(
            *(
                client.image(f"a fox {i}", model=f"diffusers:{sd}", seed=i, width=32, height=32, steps=2)
                for i in range(4)
            )
        )
        assert [r.raw["batch_requests"] for r in results] == [4, 4, 4, 4]
        res = await client.image("a fox", model=f"diffusers:{sd}", seed=3, width=32, height=32, steps=2, n=3)
        assert res.seeds == [3, 4, 5]
        with pytest.raises(mg.UnsupportedRequestError, match="negative_prompt"):
            await client.mesh("a chair", model=f"diffusers:{shap_e}", negative_prompt="x", steps=2, strict=True)
        with pytest.raises(mg.UnsupportedRequestError):
            await client.video("waves", model=f"diffusers:{sd}")


async def test_through_the_client_cancel_ends_with_cancelled_and_the_next_job_runs(sd: str) -> None:
    async with mg.Client() as client:
        job = client.submit(image_request(steps=400), model=f"diffusers:{sd}")
        seen: list[mg.Event] = []
        async for event in job.events():
            seen.append(event)
            if isinstance(event, mg.Progress):
                await job.cancel()
        assert isinstance(seen[-1], mg.Cancelled)
        assert max(e.step for e in seen if isinstance(e, mg.Progress)) < 400
        with pytest.raises(asyncio.CancelledError):
            await job.result()
        res = await client.generate(image_request(), model=f"diffusers:{sd}")
        assert len(res.images) == 1
