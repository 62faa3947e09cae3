"""Loading: from a model string to a model, and what it can do before any weight is read.

A model is a hub id (`facebook/musicgen-small`, `facebook/mms-tts-eng`) or a directory written by
`save_pretrained`. Its `config.json` names the `model_type`, which picks the family:

| model_type | family | class | serves |
|---|---|---|---|
| `musicgen` (mono and stereo) | music | `MusicgenForConditionalGeneration` | text-to-music |
| `vits` (MMS-TTS) | speech | `VitsModel` | text-to-speech |

Any other text-to-audio model transformers knows (Bark, SpeechT5, SeamlessM4T ...) is refused with
an `UnsupportedRequestError` that names it, as is anything that is not an audio model at all.
`HF_HUB_OFFLINE=1` is honoured by huggingface_hub itself: only the local cache is read.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from mediagen.errors import ModelNotFoundError, UnsupportedRequestError
from mediagen.requests import Task
from mediagen_local.hub import hub_errors, resolve_reference
from mediagen_local.imports import one_at_a_time

__all__ = [
    "FAMILIES",
    "Family",
    "LoadedModel",
    "ModelInfo",
    "hub_errors",
    "load_model",
    "resolve_model",
    "resolve_reference",
]

Family = Literal["musicgen", "vits"]

FAMILIES: dict[str, tuple[Family, str]] = {
    "musicgen": ("musicgen", "MusicgenForConditionalGeneration"),
    "vits": ("vits", "VitsModel"),
}
"""`model_type` -> (family, model class) for every model type the backend runs."""

_TASKS: dict[Family, frozenset[Task]] = {
    "musicgen": frozenset({"text-to-music", "text-to-audio"}),
    "vits": frozenset({"text-to-speech", "text-to-audio"}),
}


@dataclass(frozen=True)
class ModelInfo:
    """What a model is and can do, read from its configuration files (no weights loaded)."""

    model: str
    """The model as given (hub id or directory)."""
    source: str
    """What `from_pretrained` is given: the absolute directory, or the hub id."""
    model_type: str
    """`model_type` of `config.json`."""
    family: Family
    """Which code path runs it."""
    class_name: str
    """The transformers model class."""
    sampling_rate: int
    """Output samples per second."""
    channels: int
    """Output channels (stereo MusicGen checkpoints have 2)."""
    frame_rate: float | None = None
    """Music: audio-codec frames per second (one decoder step each)."""
    num_codebooks: int = 0
    """Music: codes per frame (decoder rows per output); stereo checkpoints interleave both channels'."""
    max_duration_s: float | None = None
    """Music: the longest clip the decoder's positions can hold."""
    num_speakers: int = 1
    """Speech: how many voices the model has."""
    speakers: tuple[str, ...] = ()
    """Speech: voice names by speaker index, where the config lists them."""
    default_guidance: float = 1.0
    """Music: the checkpoint's own guidance scale."""
    default_top_k: int | None = None
    """Music: the checkpoint's own top-k."""
    default_top_p: float | None = None
    """Music: the checkpoint's own top-p."""
    default_temperature: float = 1.0
    """Music: the checkpoint's own temperature."""

    @property
    def tasks(self) -> frozenset[Task]:
        """The request tasks this model serves."""
        return _TASKS[self.family]

    @property
    def codebook_delay(self) -> int:
        """Music: decoder steps that make no whole frame (each codebook of a channel starts a step later)."""
        return max(0, self.num_codebooks // self.channels - 1)


@one_at_a_time
def resolve_model(model: str) -> ModelInfo:
    """Read a model's configuration and work out what it can do (blocking: run it off the event loop).

    Args:
        model: A hub id or a directory holding `config.json`.

    Returns:
        The model's `ModelInfo`.

    Raises:
        ModelNotFoundError: Nothing there, or no readable `config.json`.
        UnsupportedRequestError: Not an audio model, or an audio family this backend does not run.
        DownloadError: The hub could not be reached.
    """
    from transformers import AutoConfig, GenerationConfig

    source, path = resolve_reference(model, what="model")
    if path is not None and not (path / "config.json").is_file():
        hint = (
            " (it holds model_index.json: a diffusers pipeline, use 'diffusers:')"
            if (path / "model_index.json").is_file()
            else ""
        )
        raise ModelNotFoundError(f"{path} has no config.json, so it is not a transformers model directory{hint}")
    with hub_errors(model, "model", library="transformers"), _config_errors(model):
        config = AutoConfig.from_pretrained(source)
    model_type = str(getattr(config, "model_type", ""))
    if model_type not in FAMILIES:
        raise UnsupportedRequestError(_unsupported_message(model, model_type), feature="model")
    family, class_name = FAMILIES[model_type]
    try:
        generation: Any = GenerationConfig.from_pretrained(source)
    except (OSError, ValueError):
        generation = getattr(config, "generation_config", None) or GenerationConfig()  # type: ignore[no-untyped-call]
    if family == "musicgen":
        return _music_info(model, source, model_type, class_name, config, generation)
    return ModelInfo(
        model=model,
        source=source,
        model_type=model_type,
        family=family,
        class_name=class_name,
        sampling_rate=int(config.sampling_rate),
        channels=1,
        num_speakers=int(getattr(config, "num_speakers", 1) or 1),
        speakers=_speaker_names(config),
    )


def _music_info(model: str, source: str, model_type: str, class_name: str, config: Any, generation: Any) -> ModelInfo:
    codec, decoder = config.audio_encoder, config.decoder
    frame_rate = float(
        getattr(codec, "frame_rate", None) or math.ceil(codec.sampling_rate / math.prod(codec.upsampling_ratios))
    )
    num_codebooks = int(decoder.num_codebooks)
    channels = int(getattr(decoder, "audio_channels", 1) or 1)
    # One position goes to the start token and the codebook delay makes no whole frames.
    steps = int(decoder.max_position_embeddings) - 1 - max(0, num_codebooks // channels - 1)
    guidance = generation.guidance_scale if generation.guidance_scale is not None else 1.0
    return ModelInfo(
        model=model,
        source=source,
        model_type=model_type,
        family="musicgen",
        class_name=class_name,
        sampling_rate=int(codec.sampling_rate),
        channels=channels,
        frame_rate=frame_rate,
        num_codebooks=num_codebooks,
        max_duration_s=steps / frame_rate,
        default_guidance=float(guidance),
        default_top_k=generation.top_k,
        default_top_p=generation.top_p,
        default_temperature=float(generation.temperature or 1.0),
    )


def _speaker_names(config: Any) -> tuple[str, ...]:
    # transformers' VitsConfig has no speaker names; some checkpoints add them, in one of these shapes.
    for attr in ("id2speaker", "speaker_names", "speakers"):
        names = getattr(config, attr, None)
        if isinstance(names, dict) and names:
            by_id = {int(k): str(v) for k, v in names.items()}
            return tuple(by_id.get(i, str(i)) for i in range(max(by_id) + 1))
        if isinstance(names, (list, tuple)) and names:
            return tuple(str(n) for n in names)
    return ()


def _unsupported_message(model: str, model_type: str) -> str:
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_TEXT_TO_SPECTROGRAM_MAPPING_NAMES,
        MODEL_FOR_TEXT_TO_WAVEFORM_MAPPING_NAMES,
    )

    runs = "MusicGen (musicgen) for music and VITS / MMS-TTS (vits) for speech"
    audio = {**MODEL_FOR_TEXT_TO_WAVEFORM_MAPPING_NAMES, **MODEL_FOR_TEXT_TO_SPECTROGRAM_MAPPING_NAMES}
    if model_type in audio:
        return (
            f"{model} is a {model_type} model ({audio[model_type]}), a text-to-audio family the transformers "
            f"backend does not run yet; it runs {runs}. Sound effects and music also come from 'diffusers:' "
            "(Stable Audio, AudioLDM2)"
        )
    return f"{model} is a {model_type or 'model of unknown type'} model, not a text-to-audio model; the transformers backend runs {runs}"


@contextlib.contextmanager
def _config_errors(ref: str) -> Iterator[None]:
    try:
        yield
    except (OSError, KeyError) as exc:
        raise ModelNotFoundError(f"could not read the configuration of {ref}: {exc}") from exc
    except ValueError as exc:
        # AutoConfig raises ValueError for a model_type this transformers does not know.
        raise UnsupportedRequestError(
            f"{ref}: transformers cannot read its configuration ({exc}); upgrade transformers or check the model",
            feature="model",
        ) from exc


# -- loading ---------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A model on its device, with the preprocessor its inputs go through."""

    model: Any
    """The transformers model, in eval mode."""
    processor: Any
    """MusicGen: its processor (tokenizer + feature extractor); VITS: its tokenizer."""
    device: str
    """Where it runs."""


@one_at_a_time
def load_model(info: ModelInfo, dtype: Any) -> LoadedModel:
    """Load the model and its preprocessor into CPU memory, in `dtype` (blocking; on the device worker).

    Raises:
        ModelNotFoundError: A file is missing or unreadable.
        DownloadError: The hub could not be reached.
    """
    import transformers

    cls = getattr(transformers, info.class_name)
    with hub_errors(info.model, "model", library="transformers"), _load_errors(info.model):
        model = cls.from_pretrained(info.source, dtype=dtype).eval()
        if info.family == "musicgen":
            processor = transformers.AutoProcessor.from_pretrained(info.source)  # type: ignore[no-untyped-call]
        else:
            processor = transformers.AutoTokenizer.from_pretrained(info.source)
    return LoadedModel(model=model, processor=processor, device="cpu")


@contextlib.contextmanager
def _load_errors(ref: str) -> Iterator[None]:
    try:
        yield
    except (OSError, ValueError, KeyError) as exc:
        raise ModelNotFoundError(f"could not load {ref}: {exc}") from exc
