"""Loading: from a model string to a pipeline, and what it can do before anything heavy is loaded.

A model is a hub id (`stabilityai/stable-diffusion-xl-base-1.0`) or a directory written by a
pipeline's `save_pretrained`. Its `model_index.json` names the pipeline class; from that class
`resolve_model` works out, without loading weights, which tasks the model serves and with which
pipeline class each (`ModelInfo.views`, worked out by families.py from the class, its `__call__`
signature and the checkpoint's config). `HF_HUB_OFFLINE=1` is honoured by huggingface_hub itself:
only the local cache is read.

Related tasks share weights: the image-to-image pipeline of a model is made from its text-to-image
pipeline with `from_pipe`, which costs no memory. Deprecated pipelines (diffusers'
`DeprecatedPipelineMixin`) are refused unless the backend's `allow_deprecated` setting says otherwise.

Every failure leaves as a mediagen error that names the path and what is missing.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mediagen.errors import ModelNotFoundError, UnsupportedRequestError
from mediagen_local.hub import hub_errors, resolve_reference
from mediagen_local.imports import one_at_a_time

from .families import Kind, Refusal, call_params, has_component, tasks_of, views_of

__all__ = [
    "ModelInfo",
    "ViewInfo",
    "resolve_model",
    "resolve_reference",
    "load_pipeline",
    "load_controlnet",
    "make_view",
    "estimate_weights",
    "hub_errors",
    "quiet_logger",
]

_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_CONFIG_ONLY_PATTERNS = ["*.json", "*.txt", "*.model"]


@dataclass(frozen=True)
class ViewInfo:
    """The pipeline class a model runs one task with, and what its `__call__` accepts."""

    class_name: str
    params: frozenset[str]
    """Parameter names of `__call__`."""
    defaults: Mapping[str, Any]
    """Default values of `__call__`'s parameters, where they have one."""

    @property
    def callbacks(self) -> bool:
        """Whether the pipeline reports steps through `callback_on_step_end` (and can be interrupted)."""
        return "callback_on_step_end" in self.params


@dataclass(frozen=True)
class ModelInfo:
    """What a model is and can do, read from its configuration files (no weights loaded)."""

    model: str
    """The model as given (hub id or directory)."""
    source: str
    """What `from_pretrained` is given: the absolute directory, or the hub id."""
    config_dir: Path
    """A local directory holding the model's configuration files (the model itself, or a hub snapshot)."""
    class_name: str
    """`_class_name` of `model_index.json`."""
    kind: Kind
    views: Mapping[str, ViewInfo]
    """View id (a task, or a task + `"+controlnet"`) -> the pipeline class serving it."""
    lora: bool
    """Whether the pipeline classes load LoRA adapters."""
    schedulers: tuple[str, ...]
    """Scheduler classes compatible with the model's own, first the model's own."""
    default_size: int | None = None
    """Side in pixels the model was trained at (image models), from the denoiser and VAE configs."""
    default_frames: int | None = None
    """Frames the denoiser was trained with, where its config says."""
    components: Mapping[str, Any] = field(default_factory=dict)
    own_controlnet: bool = False
    """The checkpoint holds its own ControlNet (a `controlnet` folder), used when a request names none."""

    @property
    def tasks(self) -> frozenset[str]:
        """The request tasks this model serves."""
        return tasks_of(self.views)


# -- resolving a model string ---------------------------------------------------------------------


@one_at_a_time
def resolve_model(model: str, *, allow_deprecated: bool = False) -> ModelInfo:
    """Read a model's configuration and work out what it can do (blocking: run it off the event loop).

    Args:
        model: A hub id or a pipeline directory.
        allow_deprecated: Accept pipelines diffusers has deprecated.

    Returns:
        The model's `ModelInfo`.

    Raises:
        ModelNotFoundError: Nothing there, or not a complete diffusers pipeline (the message says what
            is missing).
        UnsupportedRequestError: The pipeline is deprecated, unknown to this diffusers, or serves
            no mediagen task (an upscaler, a depth estimator ...: the message says what it is).
        DownloadError: The hub could not be reached.
    """
    import diffusers

    source, path = resolve_reference(model, what="model")
    if path is not None:
        config_dir = path
        index = _read_model_index(path)
        _check_components(path, index)
    else:
        from huggingface_hub import snapshot_download

        with hub_errors(model, "model"):
            config_dir = Path(snapshot_download(model, allow_patterns=_CONFIG_ONLY_PATTERNS))
        index = _read_model_index(config_dir)

    class_name = index.get("_class_name")
    if not isinstance(class_name, str):
        raise ModelNotFoundError(f"model_index.json of {model} has no _class_name naming its pipeline class")
    cls = getattr(diffusers, class_name, None)
    if cls is None:
        raise UnsupportedRequestError(
            f"{model} is a {class_name}, which diffusers {diffusers.__version__} does not have; upgrade diffusers"
        )
    _check_not_deprecated(model, cls, allow_deprecated)

    found = views_of(class_name, index)
    if isinstance(found, Refusal):
        raise UnsupportedRequestError(found.message(model, class_name))
    kind, view_classes = found.kind, found.views
    views = {view: _view_info(name) for view, name in view_classes.items()}
    lora = all(hasattr(getattr(diffusers, v.class_name), "load_lora_weights") for v in views.values())
    return ModelInfo(
        model=model,
        source=source,
        config_dir=config_dir,
        class_name=class_name,
        kind=kind,
        views=views,
        lora=lora,
        schedulers=_compatible_schedulers(index),
        default_size=_default_size(config_dir) if kind == "image" else None,
        default_frames=_read_json(config_dir / "unet" / "config.json").get("num_frames"),
        components={k: v for k, v in index.items() if not k.startswith("_")},
        own_controlnet=found.own_controlnet,
    )


def _read_model_index(path: Path) -> dict[str, Any]:
    if path.is_file():
        raise ModelNotFoundError(
            f"{path} is a file; give the directory that pipe.save_pretrained() wrote (it holds model_index.json)"
        )
    index_file = path / "model_index.json"
    if not index_file.is_file():
        single = _read_json(path / "config.json").get("_class_name")
        if single:
            raise ModelNotFoundError(
                f"{path} holds a single model ({single}), not a pipeline: it has config.json but no "
                "model_index.json. A ControlNet goes in control_model=..., a LoRA in loras=[...]"
            )
        raise ModelNotFoundError(
            f"{path} has no model_index.json, so it is not a diffusers pipeline directory "
            "(write one with pipe.save_pretrained(directory))"
        )
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"{index_file} cannot be read as JSON: {exc}") from exc
    if not isinstance(index, dict):
        raise ModelNotFoundError(f"{index_file} should hold a JSON object, not {type(index).__name__}")
    return index


def _check_components(path: Path, index: Mapping[str, Any]) -> None:
    for name, spec in index.items():
        if name.startswith("_") or not has_component(index, name):
            continue
        folder = path / name
        if not folder.is_dir():
            raise ModelNotFoundError(
                f"{path} is incomplete: model_index.json lists the component {name!r} ({spec[1]}), "
                f"but the folder {folder} is missing"
            )
        if (folder / "config.json").is_file() and not _weight_files(folder):
            raise ModelNotFoundError(
                f"{path} is incomplete: {folder} has config.json but no weights (*.safetensors or *.bin)"
            )


def _check_not_deprecated(model: str, cls: type, allow_deprecated: bool) -> None:
    from diffusers.pipelines.pipeline_utils import DeprecatedPipelineMixin

    if issubclass(cls, DeprecatedPipelineMixin) and not allow_deprecated:
        raise UnsupportedRequestError(
            f"{model} is a {cls.__name__}, which diffusers has deprecated (no more fixes); use a current "
            "pipeline (Wan, LTX, CogVideoX for video), or set allow_deprecated = true under "
            "[providers.diffusers] to run it anyway"
        )


def _view_info(class_name: str) -> ViewInfo:
    import diffusers

    params = call_params(getattr(diffusers, class_name))
    return ViewInfo(
        class_name=class_name,
        params=frozenset(params),
        defaults={name: p.default for name, p in params.items() if p.default is not inspect.Parameter.empty},
    )


def _compatible_schedulers(index: Mapping[str, Any]) -> tuple[str, ...]:
    import diffusers

    spec = index.get("scheduler")
    if not isinstance(spec, list) or len(spec) != 2 or not isinstance(spec[1], str):
        return ()
    own = getattr(diffusers, spec[1], None)
    if own is None:
        return (spec[1],)
    finder = getattr(own, "_get_compatibles", None)
    classes = finder() if callable(finder) else []
    others = sorted(c.__name__ for c in classes if c.__name__ != spec[1])
    return (spec[1], *others)


def _default_size(config_dir: Path) -> int | None:
    denoiser = _read_json(config_dir / "unet" / "config.json") or _read_json(config_dir / "transformer" / "config.json")
    sample = denoiser.get("sample_size")
    channels = _read_json(config_dir / "vae" / "config.json").get("block_out_channels")
    if not isinstance(sample, int) or not isinstance(channels, list) or not channels:
        return None
    return int(sample * 2 ** (len(channels) - 1))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# -- loading ---------------------------------------------------------------------------------------


@one_at_a_time
def load_pipeline(info: ModelInfo, dtype: Any) -> Any:
    """Load the model's own pipeline into CPU memory, in `dtype` (blocking; on the device worker).

    Raises:
        ModelNotFoundError: A file is missing or unreadable.
        DownloadError: The hub could not be reached.
    """
    import diffusers

    cls = getattr(diffusers, info.class_name)
    with hub_errors(info.model, "model"), _load_errors(info.model):
        pipe = cls.from_pretrained(info.source, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@one_at_a_time
def load_controlnet(ref: str, dtype: Any) -> Any:
    """Load a ControlNet model (its class from its `config.json`) into CPU memory.

    Raises:
        ModelNotFoundError: Nothing there, or not a ControlNet.
    """
    import diffusers

    source, path = resolve_reference(ref, what="ControlNet")
    if path is not None:
        class_name = _read_json(path / "config.json").get("_class_name")
    else:
        from huggingface_hub import hf_hub_download

        with hub_errors(ref, "ControlNet"):
            class_name = _read_json(Path(hf_hub_download(ref, "config.json"))).get("_class_name")
    cls = getattr(diffusers, class_name, None) if isinstance(class_name, str) else None
    if cls is None or "ControlNet" not in class_name:  # type: ignore[operator]
        raise ModelNotFoundError(
            f"{ref} is not a ControlNet model: its config.json names {class_name or 'no _class_name'} "
            "(expected ControlNetModel, SD3ControlNetModel, FluxControlNetModel ...)"
        )
    with hub_errors(ref, "ControlNet"), _load_errors(ref):
        return cls.from_pretrained(source, dtype=dtype)


@one_at_a_time
def make_view(base: Any, info: ModelInfo, view: str, dtype: Any, controlnet: Any | None = None) -> Any:
    """The pipeline serving `view`, sharing `base`'s weights (`from_pipe` allocates nothing).

    Args:
        base: The model's own pipeline, already placed on its device.
        info: The model.
        view: A key of `info.views`.
        dtype: The dtype the weights are in (from_pipe would otherwise cast to fp32).
        controlnet: The ControlNet model, for ControlNet views.
    """
    import diffusers

    class_name = info.views[view].class_name
    if type(base).__name__ == class_name and controlnet is None:
        return base
    cls = getattr(diffusers, class_name)
    extra = {"controlnet": controlnet} if controlnet is not None else {}
    # from_pipe ends with a no-op cast to `dtype`, which diffusers 0.42 answers with a spurious
    # "modules that should be kept in float32: []" warning per model.
    with quiet_logger("diffusers.models.modeling_utils"):
        pipe = cls.from_pipe(base, dtype=dtype, **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@contextlib.contextmanager
def quiet_logger(name: str, level: int = logging.ERROR) -> Iterator[None]:
    """Raise a library logger's level for a moment (on the device worker, around a noisy call)."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


@contextlib.contextmanager
def _load_errors(ref: str) -> Iterator[None]:
    try:
        yield
    except (OSError, ValueError, KeyError) as exc:
        raise ModelNotFoundError(f"could not load {ref}: {exc}") from exc


# -- sizes -----------------------------------------------------------------------------------------


def estimate_weights(info: ModelInfo, itemsize: int) -> tuple[int, int] | None:
    """Bytes the model's weights will take in a dtype of `itemsize` bytes, from the files on disk.

    Safetensors headers give exact element counts; `.bin` files count by their size, taken as fp32.
    Weight-variant files (`*.fp16.safetensors`) are skipped when plain ones exist, as
    `from_pretrained` skips them.

    Returns:
        `(total, largest component)`, or None when the weights are not on disk yet (a hub model not
        downloaded).
    """
    if not Path(info.source).is_dir():
        return None
    sizes = []
    for name in info.components:
        folder = Path(info.source) / name
        files = _weight_files(folder)
        if files:
            sizes.append(sum(_file_weight_bytes(f, itemsize) for f in files))
    if not sizes:
        return None
    return sum(sizes), max(sizes)


def _weight_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [f for f in folder.iterdir() if f.is_file() and f.name.endswith(_WEIGHT_SUFFIXES)]
    safetensors = [f for f in found if f.suffix == ".safetensors"]
    chosen = safetensors or found
    plain = [f for f in chosen if "." not in f.name.removesuffix(f.suffix)]
    return plain or chosen


def _file_weight_bytes(path: Path, itemsize: int) -> int:
    if path.suffix != ".safetensors":
        return path.stat().st_size * itemsize // 4
    try:
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(length))
    except (OSError, ValueError):
        return path.stat().st_size
    total = 0
    for name, meta in header.items():
        if name == "__metadata__" or not isinstance(meta, dict):
            continue
        count = math.prod(meta.get("shape", []))
        floating = meta.get("dtype", "") in ("F16", "BF16", "F32", "F64")
        start, end = meta.get("data_offsets", (0, 0))
        total += count * itemsize if floating else end - start
    return total
