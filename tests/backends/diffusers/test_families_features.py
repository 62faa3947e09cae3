"""What the family work added around the diffusers backend: honest capabilities, ControlNet inside a
pipeline directory, instruction edits and reference images, pipeline arguments in `options`, safety
flags, previews, and the generated family table in the docs.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mediagen as mg
from mediagen.cli import main
from mediagen_testkit.counting import count_attention

TinyModel = Callable[[str], Path]

ROOT = Path(__file__).resolve().parents[3]


def _picture(side: int = 32, seed: int = 0) -> mg.Image:
    rng = np.random.default_rng(seed)
    return mg.Image.from_array(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))


def _pixels(artifact: mg.Artifact) -> np.ndarray[Any, Any]:
    assert isinstance(artifact, mg.Image)
    return np.asarray(artifact.to_pil().convert("RGB"), dtype=np.int16)


def _client() -> mg.Client:
    return mg.Client(providers={"diffusers": {"batch_window_s": 0.02}})


# -- capabilities from the class and its config ----------------------------------------------------


async def test_a_refiner_serves_image_to_image_only(tiny_model: TinyModel) -> None:
    refiner = f"diffusers:{tiny_model('sdxl-refiner')}"
    async with _client() as client:
        backend = await client.backend("diffusers")
        caps = await backend.capabilities(str(tiny_model("sdxl-refiner")))
        assert caps.tasks == {"image-to-image", "inpaint"}
        with pytest.raises(mg.UnsupportedRequestError, match="text-to-image"):
            await client.image("a fox", model=refiner, steps=2, width=32, height=32)


async def test_too_few_steps_for_the_strength_is_named_in_the_failure(tiny_model: TinyModel) -> None:
    """2 steps at the refiner's default strength 0.3 leave no step; diffusers fails deep inside."""
    refiner = f"diffusers:{tiny_model('sdxl-refiner')}"
    async with _client() as client:
        with pytest.raises(mg.GenerationFailedError, match=r"2 steps at strength 0\.3 .* at least 4, or the strength"):
            await client.image("a fox", model=refiner, image=_picture(), steps=2)
        done = await client.image("a fox", model=refiner, image=_picture(), steps=4)
    assert done.artifacts[0].to_pil().size == (32, 32)


async def test_families_outside_the_auto_pipeline_tables_are_served(tiny_model: TinyModel) -> None:
    async with _client() as client:
        backend = await client.backend("diffusers")
        fill = await backend.capabilities(str(tiny_model("flux-fill")))
        mochi = await backend.capabilities(str(tiny_model("mochi")))
        kontext = await backend.capabilities(str(tiny_model("flux-kontext")))
    assert fill.tasks == {"inpaint"}
    assert mochi.tasks == {"text-to-video"}
    assert {"text-to-image", "image-to-image"} <= set(kontext.tasks)


@pytest.mark.parametrize(
    ("class_name", "words"),
    [
        ("StableDiffusionUpscalePipeline", "an upscaler"),
        ("MarigoldDepthPipeline", "depth"),
        ("WanVideoToVideoPipeline", "video-to-video"),
        ("DDPMPipeline", "unconditional"),
    ],
)
async def test_a_refused_family_says_what_it_is(tmp_path: Path, class_name: str, words: str) -> None:
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
    async with _client() as client:
        with pytest.raises(mg.UnsupportedRequestError) as info:
            await client.image("a fox", model=f"diffusers:{tmp_path}", steps=2)
    message = str(info.value)
    assert class_name in message and words in message
    assert "serves image, video and 3D" not in message


# -- ControlNet inside the pipeline directory ------------------------------------------------------


async def test_a_controlnet_inside_the_pipeline_directory_is_used(tiny_model: TinyModel) -> None:
    import diffusers
    import torch

    directory = tiny_model("sd-controlnet")
    control = _picture()
    request = {"control_image": control, "steps": 2, "seed": 3, "width": 32, "height": 32}
    async with _client() as client:
        own = await client.image("a fox", model=f"diffusers:{directory}", **request)
        # A separate ControlNet still goes through control_model (here: the same weights, loaded apart).
        separate = await client.image(
            "a fox", model=f"diffusers:{directory}", control_model=str(tiny_model("controlnet")), **request
        )
        plain = await client.image("a fox", model=f"diffusers:{directory}", steps=2, seed=3, width=32, height=32)
    pipe = diffusers.StableDiffusionControlNetPipeline.from_pretrained(directory)
    pipe.set_progress_bar_config(disable=True)
    raw = pipe(
        "a fox",
        image=control.to_pil().convert("RGB"),
        num_inference_steps=2,
        height=32,
        width=32,
        generator=[torch.Generator("cpu").manual_seed(3)],
    ).images[0]
    expected = np.asarray(raw.convert("RGB"), dtype=np.int16)
    assert np.abs(_pixels(own.artifacts[0]) - expected).max() <= 1
    assert np.abs(_pixels(separate.artifacts[0]) - expected).max() <= 1
    assert own.raw["pipeline"] == "StableDiffusionControlNetPipeline"
    # Without a control image the same directory makes plain text-to-image.
    assert plain.raw["pipeline"] == "StableDiffusionPipeline"
    assert np.abs(_pixels(plain.artifacts[0]) - expected).max() > 1


# -- instruction edits and reference images --------------------------------------------------------


async def test_instruction_edit_on_kontext_follows_the_image(tiny_model: TinyModel) -> None:
    model = f"diffusers:{tiny_model('flux-kontext')}"
    opts = {"_auto_resize": False}
    async with _client() as client:
        day = await client.image("make it night", model=model, image=_picture(seed=0), steps=2, seed=5, options=opts)
        other = await client.image("make it night", model=model, image=_picture(seed=1), steps=2, seed=5, options=opts)
    assert day.artifacts[0].to_pil().size == (32, 32)
    assert day.raw["pipeline"] == "FluxKontextPipeline"
    # Same prompt and seed, another input picture: the edit starts from the image it was given. (Random
    # weights attend to the image tokens only weakly, so the difference is small; were the image
    # ignored, the two outputs would be bit-identical.)
    assert np.abs(_pixels(day.artifacts[0]) - _pixels(other.artifacts[0])).max() > 0


async def test_reference_images_are_refused_by_a_pipeline_without_them(tiny_model: TinyModel) -> None:
    async with _client() as client:
        with pytest.raises(mg.UnsupportedRequestError, match="takes no reference images") as info:
            await client.image(
                "put the cat on the sofa",
                model=f"diffusers:{tiny_model('flux-kontext')}",
                image=_picture(),
                images=[_picture(seed=1), _picture(seed=2)],
                steps=2,
            )
    assert info.value.feature == "images"


async def test_reference_images_reach_a_multi_reference_pipeline(tiny_model: TinyModel) -> None:
    import diffusers
    import torch

    directory = tiny_model("flux2-klein")
    model = f"diffusers:{directory}"
    # FLUX.2 wants condition images of at least 64 px; the output is 32 px.
    first, second = _picture(64, seed=1), _picture(64, seed=2)
    fields: dict[str, Any] = {"image": first, "width": 32, "height": 32, "steps": 2}
    async with _client() as client:
        both = await client.image("put the cat on the sofa", model=model, images=[second], seed=4, n=2, **fields)
        alone = await client.image("put the cat on the sofa", model=model, images=[second], seed=5, **fields)
        one = await client.image("put the cat on the sofa", model=model, seed=4, **fields)
    pipe = diffusers.Flux2KleinPipeline.from_pretrained(directory)
    pipe.set_progress_bar_config(disable=True)
    raw = pipe(
        prompt="put the cat on the sofa",
        image=[first.to_pil().convert("RGB"), second.to_pil().convert("RGB")],
        height=32,
        width=32,
        num_inference_steps=2,
        generator=[torch.Generator("cpu").manual_seed(4)],
    ).images[0]
    assert np.abs(_pixels(both.artifacts[0]) - np.asarray(raw.convert("RGB"), dtype=np.int16)).max() <= 1
    assert np.abs(_pixels(both.artifacts[1]) - _pixels(alone.artifacts[0])).max() <= 1  # n=2 == seed 5 alone
    # The second reference counts: without it, the same seed makes another picture.
    assert np.abs(_pixels(both.artifacts[0]) - _pixels(one.artifacts[0])).max() > 0


# -- pipeline arguments in options -----------------------------------------------------------------


async def test_options_pass_pipeline_arguments_checked_against_call(tiny_model: TinyModel) -> None:
    model = f"diffusers:{tiny_model('pixart')}"
    async with _client() as client:
        res = await client.image(
            "a fox", model=model, width=32, height=32, steps=2, options={"use_resolution_binning": False}
        )
        assert res.artifacts[0].to_pil().size == (32, 32)
        assert res.raw["call"]["use_resolution_binning"] is False
        with pytest.raises(mg.InvalidRequestError, match="use_resolution_binning"):
            await client.image("a fox", model=model, steps=2, options={"no_such_argument": 1})
        with pytest.raises(mg.InvalidRequestError, match="request field 'height'"):
            await client.image("a fox", model=model, steps=2, options={"height": 64})
        with pytest.raises(mg.InvalidRequestError, match="out of range"):
            await client.image("a fox", model=model, steps=2, options={"use_resolution_binning": 10**12})


# -- the two kinds of classifier-free guidance -------------------------------------------------------


class _LibraryLines(logging.Handler):
    """What diffusers' loggers print (their root logger does not propagate to Python's)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _raw_image(directory: Path, seed: int, **kwargs: Any) -> tuple[np.ndarray[Any, Any], int]:
    """Raw diffusers' picture for "a fox" at 32 px in 2 steps, and the attention calls it made."""
    import diffusers
    import torch

    pipe = diffusers.DiffusionPipeline.from_pretrained(directory)
    pipe.set_progress_bar_config(disable=True)
    with torch.inference_mode(), count_attention() as count:
        out = pipe(
            prompt="a fox",
            num_inference_steps=2,
            height=32,
            width=32,
            generator=torch.Generator("cpu").manual_seed(seed),
            **kwargs,
        )
    return np.asarray(out.images[0].convert("RGB"), dtype=np.int16), count.calls


async def _image(client: mg.Client, model: str, **fields: Any) -> tuple[mg.Result, int]:
    """The SDK's picture for the same call, and the attention calls it made."""
    with count_attention() as count:
        result = await client.image("a fox", model=model, steps=2, seed=1, width=32, height=32, **fields)
    return result, count.calls


def _close(result: mg.Result, raw: np.ndarray[Any, Any]) -> bool:
    pixels = _pixels(result.artifacts[0])
    return pixels.shape == raw.shape and bool(np.abs(pixels - raw).max() <= 1)


# A tiny random model's picture hardly moves with the prompt or guidance (within a level or two),
# so whether a guidance pass ran is told by the work: a CFG step runs the transformer twice.


async def test_guidance_sets_real_cfg_on_a_pipeline_whose_guidance_it_is(tiny_model: TinyModel) -> None:
    """Qwen-Image guides only with true_cfg_scale (default 4) and a negative prompt; `guidance` sets it."""
    directory = tiny_model("qwen-image")
    model = f"diffusers:{directory}"
    lines = _LibraryLines()
    logging.getLogger("diffusers").addHandler(lines)
    try:
        async with _client() as client:
            await client.image("a fox", model=model, steps=1, width=32, height=32)  # loads the model
            plain, plain_work = await _image(client, model)
            negative, negative_work = await _image(client, model, negative_prompt="blurry")
            guided, guided_work = await _image(client, model, guidance=5.0)
            unused, unused_work = await _image(client, model, negative_prompt="blurry", options={"true_cfg_scale": 1.0})
            with pytest.raises(mg.InvalidRequestError, match="not both"):
                await client.image("a fox", model=model, steps=2, guidance=5.0, options={"true_cfg_scale": 3.0})
    finally:
        logging.getLogger("diffusers").removeHandler(lines)
    # Nothing from the pipeline about guidance it was not asked for (its default would log on every call).
    assert not [line for line in lines.lines if "guidance" in line], lines.lines
    assert not plain.warnings and not negative.warnings and not guided.warnings
    # The negative prompt acts at the pipeline's own default scale; `guidance` is that scale, with
    # an empty negative prompt when none is given (diffusers' documented switch).
    raw_plain, raw_plain_work = await asyncio.to_thread(_raw_image, directory, 1)
    raw_negative, raw_negative_work = await asyncio.to_thread(_raw_image, directory, 1, negative_prompt="blurry")
    raw_guided, raw_guided_work = await asyncio.to_thread(
        _raw_image, directory, 1, negative_prompt=" ", true_cfg_scale=5.0
    )
    assert _close(plain, raw_plain) and plain_work == raw_plain_work
    assert _close(negative, raw_negative) and negative_work == raw_negative_work
    assert _close(guided, raw_guided) and guided_work == raw_guided_work
    assert negative_work > plain_work and guided_work > plain_work
    assert guided.raw["call"]["true_cfg_scale"] == 5.0
    # A negative prompt at scale 1 does nothing: said, and no guidance pass runs.
    assert [w.feature for w in unused.warnings] == ["negative_prompt"]
    assert "true_cfg_scale > 1" in unused.warnings[0].message
    assert _close(unused, raw_plain) and unused_work == plain_work


async def test_a_negative_prompt_on_a_guidance_distilled_pipeline_is_said_to_need_true_cfg(
    tiny_model: TinyModel,
) -> None:
    """FLUX: `guidance` is the distilled guidance; real CFG (and the negative prompt) only with options."""
    model = f"diffusers:{tiny_model('flux')}"
    async with _client() as client:
        await client.image("a fox", model=model, steps=1, width=32, height=32)  # loads the model
        _, plain_work = await _image(client, model)
        ignored, ignored_work = await _image(client, model, negative_prompt="blurry")
        lone_scale, lone_scale_work = await _image(client, model, options={"true_cfg_scale": 2.0})
        real, real_work = await _image(client, model, negative_prompt="blurry", options={"true_cfg_scale": 2.0})
        distilled, distilled_work = await _image(client, model, guidance=7.0)
    assert [w.feature for w in ignored.warnings] == ["negative_prompt"]
    assert [w.feature for w in lone_scale.warnings] == ["options.true_cfg_scale"]
    assert not real.warnings and not distilled.warnings
    assert ignored_work == lone_scale_work == distilled_work == plain_work
    assert real_work > plain_work
    assert distilled.raw["call"]["guidance_scale"] == 7.0 and real.raw["call"]["true_cfg_scale"] == 2.0


# -- safety flags ----------------------------------------------------------------------------------


async def test_safety_checker_flags_become_a_warning_and_metadata(tiny_model: TinyModel) -> None:
    async with _client() as client:
        flagged = await client.image("a fox", model=f"diffusers:{tiny_model('sd-safety')}", steps=2, seed=1, n=2)
        clean = await client.image("a fox", model=f"diffusers:{tiny_model('sd')}", steps=2, seed=1)
    assert [a.metadata["nsfw_content_detected"] for a in flagged.artifacts] == [True, True]
    assert any("nsfw_content_detected" in w.message for w in flagged.warnings)
    assert _pixels(flagged.artifacts[0]).max() == 0  # the pipeline blanked it
    assert "nsfw_content_detected" not in clean.artifacts[0].metadata
    assert not clean.warnings


# -- previews --------------------------------------------------------------------------------------


async def _events(client: mg.Client, request: mg.Request, model: str, previews: int | None) -> list[mg.Event]:
    job = client.submit(request, model=model, previews=previews)
    seen = [event async for event in job.events()]
    await job.result()
    return seen


async def test_previews_come_only_when_asked_and_decode(tiny_model: TinyModel) -> None:
    sd = f"diffusers:{tiny_model('sd')}"
    wan = f"diffusers:{tiny_model('wan-t2v')}"
    image = mg.ImageRequest(prompt="a fox", width=32, height=32, steps=2, seed=1, n=2)
    video = mg.VideoRequest(prompt="waves", width=16, height=16, frames=5, steps=2, seed=1)
    async with _client() as client:
        with_previews = await _events(client, image, sd, previews=1)
        without = await _events(client, image, sd, previews=None)
        clip = await _events(client, video, wan, previews=2)
        with pytest.raises(mg.InvalidRequestError, match="previews"):
            client.submit(image, model=sd, previews=0)
    shown = [e for e in with_previews if isinstance(e, mg.Preview)]
    assert sorted((e.index, e.step) for e in shown) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    for event in shown:
        assert event.total == 2
        picture = mg.Image(event.image.read()).to_pil()  # a real encoded image
        assert picture.size == (16, 16)  # the latent's size: 32 px over the VAE's factor of 2
    assert not [e for e in without if isinstance(e, mg.Preview)]
    frames = [e for e in clip if isinstance(e, mg.Preview)]
    assert [e.step for e in frames] == [2] and frames[0].image.to_pil().size == (2, 2)


def test_cli_saves_previews(tiny_model: TinyModel, tmp_path: Path) -> None:
    out = tmp_path / "fox.png"
    code = main(
        [
            "image",
            "a fox",
            "-m",
            f"diffusers:{tiny_model('sd')}",
            "--steps",
            "2",
            "--size",
            "32x32",
            "-o",
            str(out),
            "--previews",
            str(tmp_path / "previews"),
        ],
    )
    assert code == 0
    saved = sorted(p.name for p in (tmp_path / "previews").iterdir())
    assert saved == ["preview-0-0001.png", "preview-0-0002.png"]


# -- the generated table ---------------------------------------------------------------------------


def test_the_family_table_in_the_docs_is_up_to_date() -> None:
    from mediagen_diffusers.family_doc import with_family_table

    page = (ROOT / "docs" / "backends" / "diffusers.md").read_text(encoding="utf-8")
    assert with_family_table(page) == page, (
        "docs/backends/diffusers.md is out of date: run python -m mediagen_diffusers.family_doc docs/backends/diffusers.md"
    )


@pytest.mark.parametrize(
    ("class_name", "index", "tasks"),
    [
        ("FluxPipeline", {}, {"text-to-image", "image-to-image", "inpaint", "controlnet"}),
        ("FluxControlPipeline", {}, {"controlnet"}),  # FLUX.1 Canny/Depth: the control is built in
        ("FluxFillPipeline", {}, {"inpaint"}),
        ("QwenImageEditPlusPipeline", {}, {"image-to-image"}),
        ("HeliosPipeline", {}, {"text-to-video"}),  # listed in the text-to-image table, but a video model
        ("LattePipeline", {}, {"text-to-video"}),  # video_length, no num_frames
        ("WanImageToVideoPipeline", {}, {"image-to-video"}),
        ("HunyuanVideoPipeline", {}, {"text-to-video"}),
        ("StableDiffusionXLImg2ImgPipeline", {"requires_aesthetics_score": True}, {"image-to-image", "inpaint"}),
        ("StableDiffusionXLImg2ImgPipeline", {}, {"text-to-image", "image-to-image", "inpaint", "controlnet"}),
    ],
)
def test_tasks_from_the_class_and_its_config(class_name: str, index: dict[str, Any], tasks: set[str]) -> None:
    from mediagen_diffusers.families import Views, tasks_of, views_of

    found = views_of(class_name, index)
    assert isinstance(found, Views)
    served = tasks_of(found.views)
    assert served == tasks


def test_a_controlnet_component_makes_the_checkpoint_its_own_controlnet() -> None:
    from mediagen_diffusers.families import Views, views_of

    found = views_of("StableDiffusionControlNetPipeline", {"controlnet": ["diffusers", "ControlNetModel"]})
    assert isinstance(found, Views) and found.own_controlnet
    bare = views_of("StableDiffusionControlNetPipeline", {"controlnet": [None, None]})
    assert isinstance(bare, Views) and not bare.own_controlnet
