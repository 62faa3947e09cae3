"""Mapping: an `AudioRequest` becomes the settings of one model call, checked before anything loads.

Everything here works from the model's configuration (`ModelInfo`), never from its weights, so a
request the model cannot serve (a voice it lacks, with `strict=True`) fails before any loading.
Settings a family cannot honour become warnings through `ctx.warn`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mediagen import AudioRequest, InvalidRequestError, RunContext

from .loading import ModelInfo

__all__ = [
    "DEFAULT_MUSIC_DURATION_S",
    "MusicSettings",
    "SpeechSettings",
    "TransformersOptions",
    "map_music",
    "map_speech",
    "output_seeds",
    "parse_options",
    "resolve_voice",
]

DEFAULT_MUSIC_DURATION_S = 10.0
"""Length of music when the request names none (MusicGen was trained on 30 s clips; 10 s keeps CPUs usable)."""

_DEFAULT_TOP_K = 250
"""MusicGen's published sampling setting, used when a checkpoint's generation config names none."""


class TransformersOptions(BaseModel):
    """Settings of the `transformers` provider, passed as `AudioRequest(options={...})`.

    Unknown keys are an error (a typo should not pass silently); a key that does not apply to the
    model's family becomes a warning.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    top_k: int | None = Field(None, ge=0)
    """MusicGen: sample each audio code among the `top_k` likeliest (0 turns the cut off; default 250)."""
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    """MusicGen: nucleus sampling, keep the likeliest codes whose probabilities add up to `top_p`."""
    temperature: float | None = Field(None, gt=0.0, le=10.0)
    """MusicGen: divide the logits by this before sampling (above 1 wilder, below 1 tamer)."""
    speaker_id: int | None = Field(None, ge=0)
    """VITS: the speaker index, instead of `voice`."""
    speaking_rate: float | None = Field(None, gt=0.0, le=10.0)
    """VITS: above 1 speaks faster, below 1 slower."""
    noise_scale: float | None = Field(None, ge=0.0, le=10.0)
    """VITS: randomness of the voice (model default 0.667)."""
    noise_scale_duration: float | None = Field(None, ge=0.0, le=10.0)
    """VITS: randomness of the rhythm (model default 0.8)."""
    normalize: float | bool = False
    """Peak-normalise every output: True scales the loudest sample to 0.99, a number to that level."""

    def peak(self) -> float | None:
        """The peak level to normalise to, or None to leave the level alone."""
        if self.normalize is False:
            return None
        return 0.99 if self.normalize is True else float(self.normalize)


_FAMILY_OPTIONS: dict[str, frozenset[str]] = {
    "musicgen": frozenset({"top_k", "top_p", "temperature", "normalize"}),
    "vits": frozenset({"speaker_id", "speaking_rate", "noise_scale", "noise_scale_duration", "normalize"}),
}


def parse_options(request: AudioRequest, info: ModelInfo, ctx: RunContext) -> TransformersOptions:
    """Validate `request.options`; warn about keys that do not apply to this model's family.

    Raises:
        InvalidRequestError: An unknown key, or a value out of range.
    """
    try:
        options = TransformersOptions.model_validate(request.options)
    except ValidationError as exc:
        known = ", ".join(TransformersOptions.model_fields)
        raise InvalidRequestError(
            f"invalid options for the transformers provider: {exc.errors()[0]['msg']} "
            f"at {'.'.join(str(p) for p in exc.errors()[0]['loc'])}; known options: {known}",
            errors=[dict(e) for e in exc.errors()],
            provider="transformers",
        ) from None
    for key in sorted(request.options):
        if key not in _FAMILY_OPTIONS[info.family]:
            ctx.warn(f"options.{key}", f"{key} does not apply to {info.model_type} models; it was ignored")
    return options


def output_seeds(request: AudioRequest) -> list[int]:
    """The seed of each output: `seed + i`, or fresh random seeds so the result can report them."""
    return [seed if seed is not None else random.randrange(2**32) for seed in request.seeds()]


# -- music: MusicGen ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MusicSettings:
    """What one MusicGen `generate` call shares across every output batched into it."""

    max_new_tokens: int
    """Decoder steps: audio frames plus the codebook delay."""
    num_samples: int
    """Exact length of each output at the model's rate."""
    guidance: float
    """Classifier-free guidance scale (1 turns guidance off)."""
    top_k: int
    """Sample among the `top_k` likeliest codes (0: no cut)."""
    top_p: float | None
    """Nucleus sampling threshold, or None."""
    temperature: float
    """Logit temperature."""


def map_music(request: AudioRequest, info: ModelInfo, options: TransformersOptions, ctx: RunContext) -> MusicSettings:
    """Settings of a MusicGen call for `request`.

    Duration becomes decoder steps through the audio codec's frame rate: MusicGen emits one code per
    codebook per step, each codebook delayed one step more than the last, so
    `ceil(duration * frame_rate) + codebook_delay` steps give at least the frames asked for.
    """
    assert info.frame_rate is not None and info.max_duration_s is not None
    duration = (
        request.duration_s if request.duration_s is not None else min(DEFAULT_MUSIC_DURATION_S, info.max_duration_s)
    )
    if request.steps is not None:
        ctx.warn("steps", "MusicGen is autoregressive: its length comes from duration_s, not from steps")
    if request.negative_prompt:
        ctx.warn("negative_prompt", "MusicGen guides against an empty prompt only; negative_prompt was ignored")
    frames = math.ceil(duration * info.frame_rate)
    top_k = options.top_k if options.top_k is not None else (info.default_top_k or _DEFAULT_TOP_K)
    return MusicSettings(
        max_new_tokens=frames + info.codebook_delay,
        num_samples=round(duration * info.sampling_rate),
        guidance=request.guidance if request.guidance is not None else info.default_guidance,
        top_k=top_k,
        top_p=options.top_p if options.top_p is not None else info.default_top_p,
        temperature=options.temperature if options.temperature is not None else info.default_temperature,
    )


# -- speech: VITS / MMS-TTS ---------------------------------------------------------------------


@dataclass(frozen=True)
class SpeechSettings:
    """What one VITS forward pass needs besides the text."""

    speaker_id: int | None
    """The speaker, for models with several; None for single-voice models."""
    speaking_rate: float
    """Above 1 faster, below 1 slower."""
    noise_scale: float | None
    """Voice randomness, or None for the model's own."""
    noise_scale_duration: float | None
    """Rhythm randomness, or None for the model's own."""
    num_samples: int | None
    """Exact output length when `duration_s` was asked for; None lets the text decide."""


def map_speech(request: AudioRequest, info: ModelInfo, options: TransformersOptions, ctx: RunContext) -> SpeechSettings:
    """Settings of a VITS call for `request` (the voice is checked against the config here)."""
    for name in ("steps", "guidance", "negative_prompt"):
        if getattr(request, name) not in (None, ""):
            ctx.warn(name, f"VITS text-to-speech has no {name}; it was ignored")
    speaker_id = resolve_voice(request.voice, options.speaker_id, info, ctx)
    num_samples = round(request.duration_s * info.sampling_rate) if request.duration_s is not None else None
    return SpeechSettings(
        speaker_id=speaker_id,
        speaking_rate=options.speaking_rate or 1.0,
        noise_scale=options.noise_scale,
        noise_scale_duration=options.noise_scale_duration,
        num_samples=num_samples,
    )


def resolve_voice(voice: str | None, speaker_id: int | None, info: ModelInfo, ctx: RunContext) -> int | None:
    """The speaker index for `voice` (a name the config lists, or an index) or `options.speaker_id`.

    A model with one voice ignores `voice` with a warning; a voice the model lacks warns and falls
    back to speaker 0. With `strict=True` both warnings raise `UnsupportedRequestError`.

    Returns:
        The speaker index, or None when the model has a single voice.
    """
    if voice is not None and speaker_id is not None:
        raise InvalidRequestError("give voice or options.speaker_id, not both", provider="transformers")
    wanted: str | int | None = voice if voice is not None else speaker_id
    if info.num_speakers <= 1:
        if wanted is not None:
            ctx.warn("voice", f"this {info.model_type} model has a single voice; voice {wanted!r} was ignored")
        return None
    if wanted is None:
        return 0
    found = _speaker_index(wanted, info)
    if found is None:
        named = f" ({', '.join(info.speakers)})" if info.speakers else ""
        ctx.warn(
            "voice",
            f"the model has no voice {wanted!r}; it has speakers 0-{info.num_speakers - 1}{named}. Used speaker 0",
        )
        return 0
    return found


def _speaker_index(wanted: str | int, info: ModelInfo) -> int | None:
    if isinstance(wanted, int) or wanted.strip().isdigit():
        index = int(wanted)
        return index if 0 <= index < info.num_speakers else None
    lowered = [name.casefold() for name in info.speakers]
    if wanted.casefold() in lowered:
        return lowered.index(wanted.casefold())
    return None


def describe_settings(settings: Any) -> dict[str, Any]:
    """The settings as a plain dict, for `Result.raw`."""
    return dict(settings.__dict__)
