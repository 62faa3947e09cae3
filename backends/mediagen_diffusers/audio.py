"""Audio: Stable Audio and AudioLDM2 pipelines, mapped from an `AudioRequest` and back to `mg.Audio`.

Three parts, in the order a request meets them:

- `plan_audio` (on the event loop, before anything loads): duration becomes the pipeline's length
  argument (`audio_end_in_s` for Stable Audio, `audio_length_in_s` for AudioLDM2) and is checked
  against what the model can make; the sample rate is read from the model's config files.
- `collect_audio` (on the device worker): the pipeline's `.audios` become plain
  `channels x samples` float arrays, one per output.
- `audio_artifact`: each array is fitted to exactly the requested length, resampled and
  peak-normalised when asked, and measured (`loudness_dbfs`) into the artifact's metadata.

Neither pipeline has `callback_on_step_end`; their legacy `callback` is not needed either: the
backend's step reporter stands in for their progress bar, which reports every step and stops a
batch nobody waits for (see `backend._step_reporter`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mediagen import Audio, AudioRequest, UnsupportedRequestError
from mediagen_local.audio import finish_audio

from .loading import ModelInfo
from .options import DiffusersOptions
from .plan import Mapper, Output, Plan

if TYPE_CHECKING:
    from mediagen import RunContext

__all__ = ["AudioOutput", "audio_artifact", "collect_audio", "plan_audio"]


@dataclass(frozen=True)
class AudioOutput:
    """What each sound of a call becomes."""

    sample_rate: int
    """The model's own rate (Stable Audio: its VAE's; AudioLDM2: its vocoder's)."""
    num_samples: int | None
    """Exact length at the model's rate; None keeps what the pipeline made."""
    peak: float | None = None
    """Peak-normalise to this level (`options.normalize`)."""
    target_rate: int | None = None
    """Resample to this rate (`request.sample_rate`)."""


def plan_audio(req: AudioRequest, info: ModelInfo, opts: DiffusersOptions, ctx: RunContext, seeds: list[int]) -> Plan:
    """Map an audio request onto a Stable Audio or AudioLDM2 pipeline.

    Raises:
        UnsupportedRequestError: The duration is longer than the model can make (before loading),
            or a warning under `strict=True`.
    """
    view = info.views[req.task]
    m = Mapper(info, view, ctx, req.n)
    name = view.class_name

    m.each("prompt", req.prompt, "prompt")
    m.each("negative_prompt", req.negative_prompt, "negative_prompt")
    m.shared("num_inference_steps", req.steps, "steps")
    m.shared("guidance_scale", req.guidance, "guidance")
    if req.voice is not None:
        m.unsupported("voice", f"{name} makes sounds and music, not voices; voice was ignored")
    # `normalize` is applied to the outputs here, not passed to the pipeline.
    m.options(opts, skip=frozenset({"normalize"}))

    rate, longest = _audio_limits(info)
    duration = req.duration_s
    if duration is not None:
        if longest is not None and duration > longest:
            raise UnsupportedRequestError(
                f"{info.model} ({name}) makes at most {longest:g} s of audio; duration_s is {duration:g}",
                feature="duration_s",
            )
        length_arg = "audio_end_in_s" if m.accepts("audio_end_in_s") else "audio_length_in_s"
        m.shared(length_arg, float(duration), "duration_s")
    m.call["output_type"] = "np"

    peak = None if opts.normalize in (None, False) else 0.99 if opts.normalize is True else float(opts.normalize)
    return Plan(
        view=req.task,
        class_name=name,
        controlnet=None,
        call=m.call,
        inputs=m.inputs,
        seeds=seeds,
        output=Output(
            kind="audio",
            audio=AudioOutput(
                sample_rate=rate,
                num_samples=round(duration * rate) if duration is not None else None,
                peak=peak,
                target_rate=req.sample_rate,
            ),
        ),
        callbacks=view.callbacks,
    )


def _audio_limits(info: ModelInfo) -> tuple[int, float | None]:
    """The model's sample rate, and the longest clip it can make (None: no fixed limit)."""
    vae = _read_json(info.config_dir / "vae" / "config.json")
    if info.class_name == "StableAudioPipeline":
        rate = int(vae.get("sampling_rate", 44100))
        hop = math.prod(vae.get("downsampling_ratios", [2, 4, 4, 8, 8]))
        latent_frames = int(_read_json(info.config_dir / "transformer" / "config.json").get("sample_size", 1024))
        # The DiT holds a fixed number of latent frames; the projection model embeds seconds up to its max.
        longest = latent_frames * hop / rate
        most_seconds = _read_json(info.config_dir / "projection_model" / "config.json").get("max_value")
        if isinstance(most_seconds, (int, float)):
            longest = min(longest, float(most_seconds))
        return rate, longest
    return int(_read_json(info.config_dir / "vocoder" / "config.json").get("sampling_rate", 16000)), None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def collect_audio(result: Any) -> list[np.ndarray[Any, Any]]:
    """The pipeline's sounds as `channels x samples` float32 arrays, one per output (on the device worker)."""
    audios = result.audios
    if hasattr(audios, "detach"):  # a tensor (output_type="pt")
        audios = audios.detach().float().cpu().numpy()
    arrays = np.asarray(audios, dtype=np.float32)
    if arrays.ndim == 2:  # AudioLDM2: (batch, samples), mono
        arrays = arrays[:, None, :]
    return [np.ascontiguousarray(sound) for sound in arrays]


def audio_artifact(samples: np.ndarray[Any, Any], output: Output, metadata: dict[str, Any]) -> Audio:
    """Wrap one collected sound as the `mg.Audio` its request asked for."""
    spec = output.audio
    assert spec is not None
    return finish_audio(
        samples,
        spec.sample_rate,
        num_samples=spec.num_samples,
        peak=spec.peak,
        target_rate=spec.target_rate,
        metadata=metadata,
    )
