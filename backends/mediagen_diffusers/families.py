"""Families: what a diffusers pipeline class can do, worked out from the class itself.

A checkpoint's `model_index.json` names its pipeline class. From that class, its `__call__`
signature and the checkpoint's own config, `views_of` works out which mediagen tasks the checkpoint
serves and which pipeline class serves each (a *view*; related classes share the weights through
`from_pipe`):

1. Classes in diffusers' auto-pipeline tables (text to image, image to image, inpainting, and
   their ControlNet variants) take the views of their family there, as `AutoPipelineFor*` would.
2. Other classes are read from their name and signature: the output (`num_frames` makes video,
   `num_waveforms_per_prompt` audio, Shap-E meshes), the inputs (`mask_image` inpaints,
   `control_image` is ControlNet, a required `image` conditions on a picture), and a few known
   siblings on the same weights (LTX text-to-video and image-to-video).
3. The checkpoint's config narrows it: an SDXL refiner (`requires_aesthetics_score`) has no
   text-to-image UNet, so it serves image-to-image and inpainting only; a ControlNet saved inside
   the pipeline directory serves ControlNet requests without a separate `control_model`.

What a class cannot do is said in words (`Refusal`): an upscaler, a depth estimator, a
video-to-video pipeline are not mediagen tasks, and the message names what the class is.

`family_table()` runs the same rules over every pipeline class of the installed diffusers; the
table in docs/backends/diffusers.md is generated from it (`python -m mediagen_diffusers.family_doc
docs/backends/diffusers.md`; a test checks it is up to date).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "CONTROLNET_SUFFIX",
    "Kind",
    "Refusal",
    "Views",
    "views_of",
    "tasks_of",
    "call_params",
    "has_component",
    "family_table",
    "batches_image_lists",
    "one_output_per_call",
    "MULTI_IMAGE_CLASSES",
]

Kind = Literal["image", "video", "mesh", "audio"]

# View ids: the task, plus "+controlnet" for the ControlNet variant of an image task.
CONTROLNET_SUFFIX = "+controlnet"

# Suffixes of auto-pipeline family names that are variants of a base family.
_FAMILY_VARIANTS = ("-controlnet-union", "-controlnet-pag", "-controlnet", "-pag")

# Checkpoints that serve a second task on the same weights, through `from_pipe`.
_SIBLINGS: dict[str, dict[str, str]] = {
    "LTXPipeline": {"text-to-video": "LTXPipeline", "image-to-video": "LTXImageToVideoPipeline"},
    "LTXImageToVideoPipeline": {"text-to-video": "LTXPipeline", "image-to-video": "LTXImageToVideoPipeline"},
}

# Arguments only video pipelines have; only audio pipelines have.
_VIDEO_ARGS = frozenset({"num_frames", "num_videos_per_prompt", "video_length"})
_AUDIO_ARGS = frozenset({"num_waveforms_per_prompt", "audio_end_in_s", "audio_length_in_s", "audio_duration"})

# Audio pipelines whose length argument and outputs audio.py maps.
_AUDIO_CLASSES = frozenset({"StableAudioPipeline", "AudioLDM2Pipeline"})

# Pipelines whose `image` takes several reference images at once (`ImageRequest.images`).
MULTI_IMAGE_CLASSES = frozenset({"QwenImageEditPlusPipeline", "Flux2Pipeline", "Flux2KleinPipeline"})

# What a class is, by a part of its name, when that is no mediagen task. Checked in order.
_NOT_A_TASK: tuple[tuple[str, str], ...] = (
    ("Upscale", "an upscaler (it enlarges a given image)"),
    ("SuperResolution", "a super-resolution stage (it enlarges a given image)"),
    ("LatentUpsample", "a latent upsampler (it enlarges another pipeline's latents)"),
    ("Marigold", "a depth / normals / intrinsics estimator (it analyses an image)"),
    ("Depth2Img", "a depth-conditioned image-to-image pipeline"),
    ("ImageVariation", "an image-variation pipeline (no prompt)"),
    ("Prior", "a prior (it makes image embeddings for another pipeline, not images)"),
    ("Redux", "a prior (it makes image embeddings for another pipeline, not images)"),
    ("VideoToVideo", "a video-to-video pipeline (it restyles a given video)"),
    ("Video2Video", "a video-to-video pipeline (it restyles a given video)"),
    ("AudioToAudio", "an audio-to-audio pipeline (it restyles a given sound)"),
    ("Adapter", "a T2I-Adapter pipeline (conditioned through an adapter model)"),
    ("Paradigms", "a research sampler pipeline"),
    ("ModelEditing", "a research model-editing pipeline"),
    ("Pix2PixZero", "a research editing pipeline (it needs source and target embeddings)"),
    ("Layered", "a layer-decomposition pipeline (it splits an image into layers)"),
    ("LLaDA", "a text-generation (language) pipeline"),
    ("DiffusionGemma", "a text-generation (language) pipeline"),
    ("Proteina", "a protein-structure generator"),
)


@dataclass(frozen=True)
class Refusal:
    """Why a pipeline class serves no mediagen task: what it is, in words."""

    what: str
    """What the class is ("an upscaler (it enlarges a given image)")."""

    def message(self, model: str, class_name: str) -> str:
        """The error message for a model of this class."""
        return f"{model} is a {class_name}, {self.what}; the diffusers backend serves no task with it"


@dataclass(frozen=True)
class Views:
    """The tasks a checkpoint serves and the pipeline class serving each."""

    kind: Kind
    views: dict[str, str]
    """View id (a task, or a task + `"+controlnet"`) -> pipeline class name."""
    own_controlnet: bool = False
    """The checkpoint holds its own ControlNet (or is a control model, like FLUX.1 Canny)."""


def tasks_of(views: Iterable[str]) -> frozenset[str]:
    """The request tasks a set of view ids serves (a `+controlnet` view serves `controlnet`)."""
    ids = list(views)
    tasks = {view for view in ids if CONTROLNET_SUFFIX not in view}
    if any(CONTROLNET_SUFFIX in view for view in ids):
        tasks.add("controlnet")
    return frozenset(tasks)


def views_of(class_name: str, index: Mapping[str, Any] | None = None) -> Views | Refusal:
    """The views of a checkpoint of `class_name`, whose `model_index.json` is `index`.

    Args:
        class_name: `_class_name` of `model_index.json`, a class of the installed diffusers.
        index: The checkpoint's `model_index.json` (its config and components); None reads the
            class alone.

    Returns:
        Its `Views`, or a `Refusal` saying what the class is when it serves no task.
    """
    index = index or {}
    for part, what in _NOT_A_TASK:
        if part in class_name:
            return Refusal(what)
    found = _from_auto_tables(class_name) or _from_signature(class_name)
    if isinstance(found, Refusal):
        return found
    own_controlnet = has_component(index, "controlnet")
    views = dict(found.views)
    if index.get("requires_aesthetics_score") is True:
        # An SDXL refiner: its UNet is conditioned on an aesthetic score instead of the target
        # size, which the text-to-image and ControlNet pipelines do not pass.
        views = {v: c for v, c in views.items() if v in ("image-to-image", "inpaint")}
        if not views:
            return Refusal("a refiner (requires_aesthetics_score) without an image-to-image pipeline")
    return Views(found.kind, views, own_controlnet or found.own_controlnet)


def batches_image_lists(class_name: str) -> bool:
    """Whether the class takes one input image per prompt in a batch (a list), output by output.

    Classes of diffusers' auto-pipeline image tables do (their batch tests cover it). Others may
    keep only the first image of a list (Shap-E) or repeat the image latents per prompt (Wan):
    requests with input images are then run with one image and `num_*_per_prompt`.
    """
    tables = _auto_tables()
    return any(class_name in names for names in (tables["text-to-image"], tables["image-to-image"], tables["inpaint"]))


def one_output_per_call(class_name: str, components: Mapping[str, Any]) -> bool:
    """Whether a checkpoint can make only one output of an input image per call.

    Wan 2.1 image-to-video (the checkpoints with a CLIP `image_encoder`) repeats the image
    embeddings per prompt, not per output, so `num_videos_per_prompt > 1` fails inside the
    pipeline; Wan 2.2 (no image encoder) does not have that problem. Stable Video Diffusion draws
    its conditioning-image noise from the first generator of the call only, so a video would depend
    on its place in a batch; FLUX.1 Fill samples its masked-image latents the same way.
    """
    if class_name in ("StableVideoDiffusionPipeline", "FluxFillPipeline"):
        return True
    return class_name == "WanImageToVideoPipeline" and has_component(components, "image_encoder")


# -- 1. diffusers' auto-pipeline tables ----------------------------------------------------------


def _auto_tables() -> dict[str, dict[str, str]]:
    from diffusers.pipelines.auto_pipeline import (
        AUTO_IMAGE2IMAGE_PIPELINES_MAPPING,
        AUTO_INPAINT_PIPELINES_MAPPING,
        AUTO_TEXT2IMAGE_PIPELINES_MAPPING,
    )

    return {
        task: {family: cls.__name__ for family, cls in table.items()}
        for task, table in (
            ("text-to-image", AUTO_TEXT2IMAGE_PIPELINES_MAPPING),
            ("image-to-image", AUTO_IMAGE2IMAGE_PIPELINES_MAPPING),
            ("inpaint", AUTO_INPAINT_PIPELINES_MAPPING),
        )
    }


def _from_auto_tables(class_name: str) -> Views | None:
    import diffusers

    tables = _auto_tables()
    family = next((f for table in tables.values() for f, c in table.items() if c == class_name), None)
    if family is None or _VIDEO_ARGS & set(call_params(getattr(diffusers, class_name))):
        return None  # not in the tables, or a video model listed there (Helios): read its signature
    own_control = False
    if family.endswith("-control"):
        # FLUX.1 Canny / Depth: the control is built into the transformer; every view takes a control image.
        own_control = True
        control = {task + CONTROLNET_SUFFIX: table[family] for task, table in tables.items() if family in table}
        return Views("image", control, own_controlnet=own_control)
    for variant in _FAMILY_VARIANTS:
        family = family.removesuffix(variant)
    views: dict[str, str] = {}
    for task, table in tables.items():
        if family in table and not _is_control_class(table[family]):
            views[task] = table[family]
        if family + "-controlnet" in table:
            views[task + CONTROLNET_SUFFIX] = table[family + "-controlnet"]
    return Views("image", views) if views else None


def _is_control_class(class_name: str) -> bool:
    return "Control" in class_name


# -- 2. the class's name and signature -----------------------------------------------------------


def _from_signature(class_name: str) -> Views | Refusal:
    import diffusers

    cls = getattr(diffusers, class_name, None)
    if cls is None:
        return Refusal("a pipeline this diffusers does not have")
    if class_name in _SIBLINGS:
        return Views("video", dict(_SIBLINGS[class_name]))
    params = call_params(cls)
    names = set(params)
    required_image = "image" in params and params["image"].default is inspect.Parameter.empty
    if class_name.startswith("ShapE"):
        return Views("mesh", {"image-to-3d" if "image" in names else "text-to-3d": class_name})
    if names & _AUDIO_ARGS or "Audio" in class_name or class_name in _AUDIO_CLASSES:
        if class_name not in _AUDIO_CLASSES:
            return Refusal("an audio pipeline whose length and outputs mediagen does not map yet")
        return Views("audio", {t: class_name for t in ("text-to-audio", "text-to-sound", "text-to-music")})
    if "video" in names and "prompt" not in names:
        return Refusal("a video-to-video pipeline (it restyles a given video)")
    if names & _VIDEO_ARGS:
        if "Control" in class_name:
            return Refusal("a video ControlNet pipeline (it needs control frames)")
        image_to_video = required_image or any(p in class_name for p in ("ImageToVideo", "I2V", "Image2Video"))
        image_to_video = image_to_video or class_name == "StableVideoDiffusionPipeline"
        if image_to_video:
            return Views("video", {"image-to-video": class_name})
        if "prompt" not in names:
            return Refusal("a video pipeline that takes neither a prompt nor an image")
        return Views("video", {"text-to-video": class_name})
    if "prompt" not in names:
        if "image" in names:
            return Refusal("an image pipeline without a prompt")
        return Refusal("an unconditional or class-conditional generator (no prompt, no image)")
    if "mask_image" in names:
        return Views("image", {"inpaint" + (CONTROLNET_SUFFIX if "control_image" in names else ""): class_name})
    if "control_image" in names or _is_control_class(class_name):
        task = "image-to-image" if "image" in names and "control_image" in names else "text-to-image"
        return Views("image", {task + CONTROLNET_SUFFIX: class_name}, own_controlnet="ControlNet" not in class_name)
    if "image" in names or "images" in names:
        return Views("image", {"image-to-image": class_name})
    if "num_images_per_prompt" in names or "height" in names:
        return Views("image", {"text-to-image": class_name})
    return Refusal("a pipeline whose outputs mediagen does not know")


def call_params(cls: type) -> dict[str, inspect.Parameter]:
    """A pipeline class's `__call__` parameters, without `self`."""
    signature = inspect.signature(cls.__call__)
    return {name: p for name, p in signature.parameters.items() if name != "self"}


def has_component(index: Mapping[str, Any], name: str) -> bool:
    """Whether `model_index.json` lists component `name` as present (`[library, class]`)."""
    spec = index.get(name)
    return isinstance(spec, list) and len(spec) == 2 and spec[0] is not None


# -- the table of every class --------------------------------------------------------------------

_TASK_COLUMNS = (
    ("text-to-image", "text→image"),
    ("image-to-image", "image→image"),
    ("inpaint", "inpaint"),
    ("controlnet", "ControlNet"),
    ("text-to-video", "text→video"),
    ("image-to-video", "image→video"),
    ("text-to-audio", "text→audio"),
    ("text-to-3d", "text→3D"),
    ("image-to-3d", "image→3D"),
)


def family_table() -> str:
    """A Markdown table: every pipeline class of the installed diffusers, by the tasks it serves.

    Deprecated classes are left out (the backend refuses them unless `allow_deprecated`); classes
    that serve nothing are listed last with the reason.
    """
    import diffusers
    from diffusers.pipelines.pipeline_utils import DeprecatedPipelineMixin, DiffusionPipeline

    served: list[str] = []
    refused: list[str] = []
    header = "| pipeline class | " + " | ".join(label for _, label in _TASK_COLUMNS) + " |"
    rule = "|---|" + "---|" * len(_TASK_COLUMNS)
    for name in sorted(n for n in dir(diffusers) if n.endswith("Pipeline")):
        cls = getattr(diffusers, name, None)
        if not isinstance(cls, type) or not issubclass(cls, DiffusionPipeline) or cls is DiffusionPipeline:
            continue
        if issubclass(cls, DeprecatedPipelineMixin):
            continue
        found = views_of(name)
        if isinstance(found, Refusal):
            refused.append(f"| `{name}` | {found.what} |")
            continue
        tasks = tasks_of(found.views)
        cells = ["✓" if task in tasks else "" for task, _ in _TASK_COLUMNS]
        served.append(f"| `{name}` | " + " | ".join(cells) + " |")
    lines = [
        f"Generated from diffusers {diffusers.__version__} by `python -m mediagen_diffusers.family_doc`; "
        "a test checks it is up to date.",
        "",
        header,
        rule,
        *served,
        "",
        "Classes the backend refuses, and why:",
        "",
        "| pipeline class | what it is |",
        "|---|---|",
        *refused,
    ]
    return "\n".join(lines) + "\n"
