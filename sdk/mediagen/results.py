"""Results of a generation: artifacts plus what it took to make them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .artifacts import Artifact, Audio, Image, Mesh, Video

__all__ = ["Result", "Timings", "Usage", "GenerationWarning"]


class GenerationWarning(BaseModel):
    """Something the backend could not do as asked, reported instead of silently dropped.

    Examples:
        >>> GenerationWarning.unsupported("negative_prompt", "this model has no negative prompt")  # doctest: +ELLIPSIS
        GenerationWarning(type='unsupported', feature='negative_prompt', ...)
    """

    model_config = ConfigDict(frozen=True)

    type: Literal["unsupported", "compatibility", "deprecated", "other"]
    """`unsupported`: a setting was ignored; `compatibility`: honoured approximately;
    `deprecated`: still works, will not; `other`: anything else worth knowing."""
    feature: str | None = None
    """The request field or feature concerned."""
    message: str = ""
    """What happened and what to do instead."""
    provider: str | None = None
    """The provider that raised it (set by the client)."""

    @classmethod
    def unsupported(cls, feature: str, details: str = "") -> GenerationWarning:
        """A setting the backend ignored."""
        return cls(type="unsupported", feature=feature, message=details or f"{feature} is not supported")

    @classmethod
    def compatibility(cls, feature: str, details: str) -> GenerationWarning:
        """A setting honoured only approximately (rounded size, clamped duration ...)."""
        return cls(type="compatibility", feature=feature, message=details)

    @classmethod
    def deprecated(cls, feature: str, details: str) -> GenerationWarning:
        """A setting or model that still works but is on its way out."""
        return cls(type="deprecated", feature=feature, message=details)

    @classmethod
    def other(cls, message: str) -> GenerationWarning:
        """Anything else worth telling the caller."""
        return cls(type="other", message=message)

    def __str__(self) -> str:
        head = f"{self.type}: {self.feature}" if self.feature else self.type
        return f"{head}: {self.message}" if self.message else head


class Timings(BaseModel):
    """Where the time went, in seconds (None where a phase did not apply)."""

    queue_s: float | None = None
    """Waiting: for a device worker, or in the provider's queue."""
    load_s: float | None = None
    """Loading the model (local backends; 0 when it was cached)."""
    run_s: float | None = None
    """Running the model."""
    download_s: float | None = None
    """Fetching outputs."""
    total_s: float | None = None
    """End to end, as the client saw it."""

    def merge(self, other: Timings) -> Timings:
        """Sum of two timings (for results merged from several backend calls)."""

        def add(a: float | None, b: float | None) -> float | None:
            return None if a is None and b is None else (a or 0.0) + (b or 0.0)

        return Timings(
            queue_s=add(self.queue_s, other.queue_s),
            load_s=add(self.load_s, other.load_s),
            run_s=add(self.run_s, other.run_s),
            download_s=add(self.download_s, other.download_s),
            total_s=max(self.total_s or 0.0, other.total_s or 0.0) or None,
        )


class Usage(BaseModel):
    """What a generation consumed, in units that compare across providers."""

    images: int = 0
    """Images produced."""
    megapixels: float = 0.0
    """Pixels produced, in millions (images and video frames)."""
    video_s: float = 0.0
    """Seconds of video produced."""
    audio_s: float = 0.0
    """Seconds of audio produced."""
    meshes: int = 0
    """Meshes produced."""
    device_s: float | None = None
    """Local device time: seconds of the worker running the model on `device`."""
    device: str | None = None
    """Where `device_s` was spent (`"cpu"`, `"cuda:0"`, `"mps"`; `"mixed"` for a sum over several)."""
    predict_s: float | None = None
    """Provider-reported compute time (Replicate's `metrics.predict_time`)."""
    cost: float | None = None
    """Cost in the configured currency, where prices are configured."""

    def __add__(self, other: Usage) -> Usage:
        def add(a: float | None, b: float | None) -> float | None:
            return None if a is None and b is None else (a or 0.0) + (b or 0.0)

        return Usage(
            images=self.images + other.images,
            megapixels=self.megapixels + other.megapixels,
            video_s=self.video_s + other.video_s,
            audio_s=self.audio_s + other.audio_s,
            meshes=self.meshes + other.meshes,
            device_s=add(self.device_s, other.device_s),
            device=self.device
            if other.device in (None, self.device)
            else other.device
            if self.device is None
            else "mixed",
            predict_s=add(self.predict_s, other.predict_s),
            cost=add(self.cost, other.cost),
        )


class Result(BaseModel):
    """What a generation returns.

    Examples:
        >>> res = await client.generate(ImageRequest(prompt="a fox"), model="test:fake")  # doctest: +SKIP
        >>> res.artifacts[0].save("fox.png")  # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    artifacts: list[Artifact]
    """The outputs, in order (output `i` was made with `seeds[i]`)."""
    provider: str
    """The provider that served the request."""
    model: str
    """The model part of the model string that served it."""
    seeds: list[int | None] = Field(default_factory=list)
    """The seed of each output, where known."""
    timings: Timings = Field(default_factory=Timings)
    """Where the time went."""
    usage: Usage = Field(default_factory=Usage)
    """What it consumed."""
    warnings: list[GenerationWarning] = Field(default_factory=list)
    """Settings that were not honoured, and other notes."""
    raw: Any = None
    """What the provider returned, unconverted (a prediction object, pipeline output metadata ...)."""
    cached: bool = False
    """True when the result came from the result cache, not from a backend."""

    @property
    def images(self) -> list[Image]:
        """The artifacts that are images."""
        return [a for a in self.artifacts if isinstance(a, Image)]

    @property
    def videos(self) -> list[Video]:
        """The artifacts that are videos."""
        return [a for a in self.artifacts if isinstance(a, Video)]

    @property
    def audios(self) -> list[Audio]:
        """The artifacts that are sounds."""
        return [a for a in self.artifacts if isinstance(a, Audio)]

    @property
    def meshes(self) -> list[Mesh]:
        """The artifacts that are meshes."""
        return [a for a in self.artifacts if isinstance(a, Mesh)]

    @property
    def model_string(self) -> str:
        """`"provider:model"` of the backend that served it."""
        return f"{self.provider}:{self.model}"

    def __repr__(self) -> str:
        """Short: who made it, what it made, how long it took (the raw payload stays in `.raw`)."""
        artifacts = ", ".join(repr(a) for a in self.artifacts[:4])
        if len(self.artifacts) > 4:
            artifacts += f", ... ({len(self.artifacts)} in all)"
        phases = [
            f"{name} {value:.2f} s"
            for name, value in (
                ("total", self.timings.total_s),
                ("load", self.timings.load_s),
                ("run", self.timings.run_s),
            )
            if value is not None
        ]
        extra = ", cached" if self.cached else ""
        warned = f", {len(self.warnings)} warning(s)" if self.warnings else ""
        return (
            f"<mediagen.Result {self.provider}:{self.model} [{artifacts}] {', '.join(phases) or 'untimed'}"
            f"{warned}{extra}>"
        )

    __str__ = __repr__

    def _repr_html_(self) -> str:
        parts = []
        for artifact in self.artifacts:
            if isinstance(artifact, Image):
                import base64

                parts.append(f'<img src="data:image/png;base64,{base64.b64encode(artifact._repr_png_()).decode()}"/>')
            elif hasattr(artifact, "_repr_html_"):
                parts.append(artifact._repr_html_())
        import html

        # The model string came from the caller or a config file: escaped like everything shown.
        return "".join(parts) + f"<br/><code>{html.escape(self.model_string)}</code>"
