"""What mediagen knows about models beyond their schemas.

The curated table (`CURATED`) says, for well-known models, the tasks they serve, inputs under
unconventional names (`first_frame_image`, `images`), inputs a model lacks and why, and inputs
to always send. `INPUT_NAMES` lists the names models commonly give each request field's input.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mediagen.requests import Task

__all__ = ["CURATED", "INPUT_NAMES", "Curated"]

_IMAGE_TASKS: frozenset[Task] = frozenset({"text-to-image", "image-to-image"})


@dataclass(frozen=True)
class Curated:
    """What mediagen knows about a well-known model beyond its schema."""

    tasks: frozenset[Task]
    """The tasks the model serves."""
    official: bool = False
    """Official models run by name (`POST /v1/models/{owner}/{name}/predictions`)."""
    inputs: Mapping[str, str | tuple[str, ...] | None] = field(default_factory=dict)
    """Request field → the input(s) it fills; None when the model has no such input."""
    notes: Mapping[str, str] = field(default_factory=dict)
    """Request field → why the model cannot honour it (shown in the warning)."""
    fixed: Mapping[str, Any] = field(default_factory=dict)
    """Inputs always sent (options can still override them)."""
    seeded: Mapping[str, Any] = field(default_factory=dict)
    """Inputs sent along with a seed (TRELLIS randomises its seed unless told not to)."""
    outputs: tuple[str, ...] = ()
    """Keys of an object output, in the order their artifacts are returned (the main one first)."""


_FLUX_NO_NEGATIVE = "FLUX models take no negative prompt; say what you want in the prompt instead"
_VIDEO01_FIXED = "minimax/video-01 always makes a 6 s, 25 fps, 1280x720 video"

CURATED: dict[str, Curated] = {
    "black-forest-labs/flux-schnell": Curated(
        tasks=frozenset({"text-to-image"}),
        official=True,
        inputs={"negative_prompt": None, "guidance": None},
        notes={
            "negative_prompt": _FLUX_NO_NEGATIVE,
            "guidance": "FLUX schnell is guidance-distilled and takes no guidance scale",
        },
    ),
    "black-forest-labs/flux-dev": Curated(
        tasks=_IMAGE_TASKS,
        official=True,
        inputs={"negative_prompt": None, "guidance": "guidance", "strength": "prompt_strength"},
        notes={"negative_prompt": _FLUX_NO_NEGATIVE},
    ),
    "black-forest-labs/flux-1.1-pro": Curated(
        tasks=frozenset({"text-to-image"}),
        official=True,
        inputs={"negative_prompt": None, "guidance": None, "steps": None},
        notes={
            "negative_prompt": _FLUX_NO_NEGATIVE,
            "guidance": "FLUX 1.1 pro sets its own guidance",
            "steps": "FLUX 1.1 pro sets its own number of steps",
        },
    ),
    # Editing: an image to edit (and a mask), or reference images.
    "black-forest-labs/flux-kontext-pro": Curated(
        tasks=frozenset({"text-to-image", "image-to-image"}),
        official=True,
        inputs={"image": "input_image", "images": None, "mask": None, "negative_prompt": None, "steps": None},
        notes={
            "images": "FLUX Kontext [pro] edits one input_image; pass the picture as image=",
            "mask": "FLUX Kontext edits from the prompt alone; use black-forest-labs/flux-fill-pro to paint in a mask",
            "negative_prompt": _FLUX_NO_NEGATIVE,
            "steps": "FLUX Kontext [pro] sets its own number of steps",
        },
    ),
    "black-forest-labs/flux-fill-pro": Curated(
        tasks=frozenset({"inpaint"}),
        official=True,
        inputs={"image": "image", "mask": "mask", "images": None, "negative_prompt": None},
        notes={
            "images": "FLUX Fill [pro] paints into one image; it takes no reference images",
            "negative_prompt": _FLUX_NO_NEGATIVE,
        },
    ),
    "google/nano-banana": Curated(
        tasks=frozenset({"text-to-image", "image-to-image"}),
        official=True,
        # One array holds them all: the image to edit first, then the references.
        inputs={
            "image": "image_input",
            "images": "image_input",
            "mask": None,
            "seed": None,
            "negative_prompt": None,
            "steps": None,
            "guidance": None,
        },
        notes={
            "mask": "nano-banana edits from the prompt; describe the region to change instead of masking it",
            "seed": "nano-banana takes no seed",
        },
    ),
    "stability-ai/sdxl": Curated(tasks=frozenset({"text-to-image", "image-to-image", "inpaint"})),
    "minimax/video-01": Curated(
        tasks=frozenset({"text-to-video", "image-to-video"}),
        official=True,
        inputs={
            "image": "first_frame_image",
            "seed": None,
            "negative_prompt": None,
            "width": None,
            "height": None,
            "frames": None,
            "fps": None,
            "duration_s": None,
            "steps": None,
            "guidance": None,
        },
        notes={
            "seed": "minimax/video-01 takes no seed, so its videos cannot be reproduced",
            "width": _VIDEO01_FIXED,
            "height": _VIDEO01_FIXED,
            "frames": _VIDEO01_FIXED,
            "fps": _VIDEO01_FIXED,
            "duration_s": _VIDEO01_FIXED,
        },
    ),
    "wavespeedai/wan-2.1-i2v-480p": Curated(
        tasks=frozenset({"image-to-video"}),
        official=True,
        inputs={
            "frames": "num_frames",
            "fps": "frames_per_second",
            "steps": "sample_steps",
            "guidance": "sample_guide_scale",
            "width": None,
            "height": None,
        },
        notes={
            "width": "wan-2.1-i2v-480p makes 480p video shaped like the input image",
            "height": "wan-2.1-i2v-480p makes 480p video shaped like the input image",
        },
    ),
    "meta/musicgen": Curated(
        tasks=frozenset({"text-to-music", "text-to-audio"}),
        inputs={"guidance": "classifier_free_guidance", "sample_rate": None, "steps": None},
        notes={"sample_rate": "musicgen makes 32 kHz audio; call .resample() on the result"},
    ),
    "jaaari/kokoro-82m": Curated(
        tasks=frozenset({"text-to-speech", "text-to-audio"}),
        inputs={"prompt": "text", "duration_s": None, "seed": None, "sample_rate": None},
        notes={
            "duration_s": "speech lasts as long as the text takes; speed it up with options={'speed': 1.5}",
            "sample_rate": "kokoro makes 24 kHz audio; call .resample() on the result",
        },
    ),
    "firtoz/trellis": Curated(
        tasks=frozenset({"image-to-3d"}),
        inputs={
            "image": "images",
            "prompt": None,
            "negative_prompt": None,
            "steps": ("ss_sampling_steps", "slat_sampling_steps"),
            "guidance": "ss_guidance_strength",
        },
        notes={"prompt": "TRELLIS reconstructs the object from the image; it reads no prompt"},
        # Without generate_model TRELLIS returns only preview videos.
        fixed={"generate_model": True},
        seeded={"randomize_seed": False},
        outputs=("model_file", "combined_video", "color_video", "normal_video", "gaussian_ply", "no_background_images"),
    ),
}
"""Well-known models by `owner/name`; any other model is mapped from its schema alone."""


# -- conventional input names -------------------------------------------------------------------

# Request field → input names models commonly use for it, most common first.
INPUT_NAMES: dict[str, tuple[str, ...]] = {
    "prompt": ("prompt", "text", "input_text", "caption"),
    "negative_prompt": ("negative_prompt", "negative"),
    "seed": ("seed",),
    "n": ("num_outputs", "num_images", "number_of_images", "batch_size", "n"),
    "steps": ("num_inference_steps", "steps", "num_steps", "sample_steps", "sampling_steps"),
    "guidance": ("guidance_scale", "guidance", "cfg_scale", "cfg", "sample_guide_scale"),
    "image": (
        "image",
        "input_image",
        "init_image",
        "start_image",
        "first_frame_image",
        "image_url",
        "images",
        "image_input",
    ),
    # Reference images (edit and multi-reference models): an array input, in order.
    "images": ("image_input", "input_images", "reference_images", "images", "image_urls"),
    "mask": ("mask", "mask_image", "inpaint_mask"),
    "strength": ("prompt_strength", "strength", "denoising_strength", "image_strength"),
    "control_image": ("control_image", "controlnet_image", "conditioning_image"),
    "control_scale": ("controlnet_conditioning_scale", "control_strength", "conditioning_scale", "control_scale"),
    "control_model": ("control_model", "controlnet_model", "controlnet"),
    "output_format": ("output_format",),
    "frames": ("num_frames", "frames", "video_length", "frame_num"),
    "duration_s": ("duration", "duration_seconds", "duration_s", "seconds", "length"),
    "fps": ("fps", "frames_per_second"),
    "voice": ("voice", "speaker", "voice_id"),
    "sample_rate": ("sample_rate",),
    "format": ("output_format", "format", "file_format", "mesh_format"),
    "loras": ("lora_weights", "hf_lora", "lora"),
}
