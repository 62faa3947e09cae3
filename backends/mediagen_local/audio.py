"""Audio outputs of every local backend: waveforms become `mg.Audio` of the length and rate asked for.

MusicGen and VITS (through transformers) and StableAudio and AudioLDM2 (through diffusers) alike.

Every output goes through the same four steps, in this order: fit to the requested number of samples
(cut, or padded with silence), resample when `request.sample_rate` is set, peak-normalise when
asked, then measure loudness into the metadata. Fitting happens at the model's own rate, so the length is
exact there, and within a sample at a resampled rate.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mediagen import Audio

__all__ = ["finish_audio", "fit_samples"]


def fit_samples(samples: np.ndarray[Any, Any], num_samples: int | None) -> np.ndarray[Any, Any]:
    """Cut `channels x n` samples to `num_samples`, or pad them with silence up to it.

    Args:
        samples: `channels x n` float samples.
        num_samples: The wanted length; None keeps the samples as they are.

    Returns:
        `channels x num_samples` samples.
    """
    if num_samples is None or samples.shape[1] == num_samples:
        return samples
    if samples.shape[1] > num_samples:
        return samples[:, :num_samples]
    return np.pad(samples, ((0, 0), (0, num_samples - samples.shape[1])))


def finish_audio(
    waveform: Any,
    sample_rate: int,
    *,
    num_samples: int | None,
    peak: float | None,
    target_rate: int | None,
    metadata: dict[str, Any],
) -> Audio:
    """Turn one model waveform into the artifact the request asked for.

    Args:
        waveform: `n` or `channels x n` samples (numpy or a CPU tensor), floats in [-1, 1].
        sample_rate: The model's rate.
        num_samples: Exact length at the model's rate; None keeps what the model made.
        peak: Scale so the loudest sample reaches this level (None leaves the level alone).
        target_rate: Resample to this rate (None keeps the model's).
        metadata: Facts to keep on the artifact (seed, model ...); sample rate, channels, duration
            and `loudness_dbfs` (RMS level, None for silence) are added.

    Returns:
        The finished `mg.Audio`.
    """
    samples = np.asarray(waveform, dtype=np.float32)
    if samples.ndim == 1:
        samples = samples[None, :]
    # Random or badly conditioned models can overshoot; a WAV cannot hold more than full scale.
    samples = np.clip(np.nan_to_num(fit_samples(samples, num_samples)), -1.0, 1.0)
    audio = Audio.from_samples(samples, sample_rate, metadata=metadata)
    if target_rate is not None and target_rate != sample_rate:
        audio = audio.resample(target_rate)
    if peak is not None:
        # After resampling, whose ringing can push a peak past the level asked for.
        audio = audio.normalize(peak)
    loudness = audio.loudness_dbfs()
    audio.metadata.update(
        {
            "sample_rate": audio.sample_rate,
            "channels": audio.channels,
            "duration_s": audio.duration_s,
            # Silence measures -inf, which JSON cannot carry; None says "no level" as plainly.
            "loudness_dbfs": round(loudness, 2) if math.isfinite(loudness) else None,
        }
    )
    return audio
