"""Tiny random-weight models, built in code, for offline tests of the local backends.

Every builder writes a standard directory with ``save_pretrained`` so that tests exercise the real loading
path (``DiffusionPipeline.from_pretrained(dir)``, ``VitsModel.from_pretrained(dir)`` ...) without any hub
access. Weights are random but seeded, tokenizers come from an in-memory vocabulary, and every model is
small enough that a 2-step generation at 16-32 px runs in well under a second on a CPU.

Builders are idempotent: a directory that already holds its marker file (``model_index.json`` for
pipelines, ``config.json`` for single models, the LoRA weights file for LoRAs) is returned untouched.
A build happens in a sibling temporary directory that is renamed into place at the end, so a crashed or
concurrent build never leaves a half-written model where a reader could find it.

torch, diffusers and transformers are imported inside the functions only: importing this module stays
cheap and works without the ``local`` extra installed.

Example:
    >>> from mediagen_testkit.tiny import ensure_tiny_model
    >>> sd_dir = ensure_tiny_model("sd")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable

from .tiny_families import family_builders
from .tiny_recipes import (
    MUSICGEN_SAMPLING_RATE,
    STABLE_AUDIO_SAMPLING_RATE,
    TINY_MODELS_VERSION,
    VITS_SAMPLING_RATE,
    _build_lock,
    build_audioldm2,
    build_controlnet,
    build_lora,
    build_musicgen,
    build_sd,
    build_shap_e,
    build_shap_e_img2img,
    build_stable_audio,
    build_svd,
    build_vits,
    build_wan_t2v,
    clip_tokenizer,
    marching_cubes_table,
    sd_scheduler,
)

__all__ = [
    "clip_tokenizer",
    "sd_scheduler",
    "MUSICGEN_SAMPLING_RATE",
    "STABLE_AUDIO_SAMPLING_RATE",
    "TINY_MODELS_VERSION",
    "VITS_SAMPLING_RATE",
    "build_audioldm2",
    "build_controlnet",
    "build_lora",
    "build_musicgen",
    "build_sd",
    "build_shap_e",
    "build_shap_e_img2img",
    "build_stable_audio",
    "build_svd",
    "build_vits",
    "build_wan_t2v",
    "marching_cubes_table",
    "TINY_MODEL_NAMES",
    "TORCHVISION_TINY_MODEL_NAMES",
    "default_cache_dir",
    "ensure_tiny_model",
    "ensure_tiny_models",
]

#: Names understood by :func:`ensure_tiny_model`, in build order (dependencies first).
TINY_MODEL_NAMES: tuple[str, ...] = (
    "sd",
    "controlnet",
    "lora",
    "wan-t2v",
    "svd",
    "shap-e",
    "shap-e-img2img",
    "stable-audio",
    "audioldm2",
    "musicgen",
    "vits",
    "vits-speakers",
    # The other diffusers families (mediagen_testkit.tiny_families).
    "sd-controlnet",
    "sd-safety",
    "flux",
    "flux-fill",
    "flux-kontext",
    "flux-control",
    "sd3",
    "sdxl",
    "sdxl-refiner",
    "pixart",
    "sana",
    "flux2-klein",
    "kolors",
    "qwen-image",
    "hidream",
    "lumina2",
    "lumina",
    "wan-i2v",
    "wan22-t2v",
    "wan22-i2v",
    "ltx",
    "cogvideox",
    "mochi",
    "hunyuan-video",
    "animatediff",
)

#: Names :func:`ensure_tiny_model` also understands whose pipelines need torchvision to load (their
#: `Qwen2VLProcessor` builds a video processor); :func:`ensure_tiny_models` leaves them out.
TORCHVISION_TINY_MODEL_NAMES: tuple[str, ...] = ("qwen-image-edit", "qwen-image-edit-plus")


def default_cache_dir() -> pathlib.Path:
    """Where :func:`ensure_tiny_models` keeps its models when no directory is given.

    Returns:
        ``$MEDIAGEN_CACHE_DIR/tiny-models`` if the variable is set, else ``~/.cache/mediagen/tiny-models``.
    """
    root = os.environ.get("MEDIAGEN_CACHE_DIR")
    base = pathlib.Path(root).expanduser() if root else pathlib.Path.home() / ".cache" / "mediagen"
    return base / "tiny-models"


def _builders(root: pathlib.Path) -> dict[str, Callable[[pathlib.Path], pathlib.Path]]:
    sd = root / "sd"
    return {
        "sd": build_sd,
        "controlnet": lambda p: build_controlnet(p, sd),
        "lora": lambda p: build_lora(p, sd),
        "wan-t2v": build_wan_t2v,
        "svd": build_svd,
        "shap-e": build_shap_e,
        "shap-e-img2img": build_shap_e_img2img,
        "stable-audio": build_stable_audio,
        "audioldm2": build_audioldm2,
        "musicgen": build_musicgen,
        "vits": build_vits,
        "vits-speakers": lambda p: build_vits(p, speakers=2),
        **family_builders(root),
    }


def _versioned_root(cache_dir: str | os.PathLike[str] | None) -> pathlib.Path:
    base = pathlib.Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base.absolute() / f"v{TINY_MODELS_VERSION}"


def ensure_tiny_model(name: str, cache_dir: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """Build one tiny model into the cache unless it is already there.

    Models live in ``<cache_dir>/v<TINY_MODELS_VERSION>/<name>``. Safe to call from several processes at
    once: builds are serialised by a lock file where the platform supports it, and in any case land with
    an atomic rename.

    Args:
        name: One of :data:`TINY_MODEL_NAMES` or :data:`TORCHVISION_TINY_MODEL_NAMES`.
        cache_dir: Cache root; defaults to :func:`default_cache_dir`.

    Returns:
        The model directory.

    Raises:
        KeyError: ``name`` is not a known tiny model.
    """
    # The builders load the same libraries the backends do: keep the same noise (and progress bars) out.
    from mediagen_local.imports import quiet_library_progress

    quiet_library_progress()
    root = _versioned_root(cache_dir)
    builders = _builders(root)
    if name not in builders:
        raise KeyError(
            f"unknown tiny model {name!r}; known: {', '.join(TINY_MODEL_NAMES + TORCHVISION_TINY_MODEL_NAMES)}"
        )
    target = root / name
    with _build_lock(root / f".{name}.lock"):
        if name in ("controlnet", "lora", "sd-controlnet", "sd-safety"):
            # Build the base pipeline under its own lock, so that two processes do not both build it.
            with _build_lock(root / ".sd.lock"):
                build_sd(root / "sd")
        return builders[name](target)


def ensure_tiny_models(cache_dir: str | os.PathLike[str] | None = None) -> dict[str, pathlib.Path]:
    """Build every tiny model into the cache (those already there are reused).

    Args:
        cache_dir: Cache root; defaults to :func:`default_cache_dir`.

    Returns:
        A mapping from each name in :data:`TINY_MODEL_NAMES` to its directory.
    """
    return {name: ensure_tiny_model(name, cache_dir) for name in TINY_MODEL_NAMES}
