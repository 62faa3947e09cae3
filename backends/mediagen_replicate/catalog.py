"""The catalogue: model references resolved to what runs them and their inputs, fetched once.

`ModelInfo` is one resolved model (its version, schema and curated entry) and what it can do
(`capabilities`); `ModelCatalog` resolves references, sharing one fetch between concurrent callers.
"""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mediagen.backend import Capabilities
from mediagen.errors import ModelNotFoundError
from mediagen.requests import TASKS, Task

from .curated import CURATED, INPUT_NAMES, Curated
from .errors import PROVIDER
from .refs import ModelRef
from .schema import InputSchema, is_number

__all__ = ["FetchModel", "FetchVersion", "ModelCatalog", "ModelInfo"]


@dataclass(frozen=True)
class ModelInfo:
    """A resolved model: where its predictions are created, and its inputs."""

    ref: ModelRef
    """The reference as given."""
    version: str | None
    """The version predictions run on; None for an official model run by name."""
    schema: InputSchema
    """Its inputs."""
    curated: Curated | None = None
    """The curated entry, for well-known models."""

    @property
    def takes_seed(self) -> bool:
        """Whether the model has a seed input (an unknown schema is assumed to)."""
        if self.curated is not None and "seed" in self.curated.inputs:
            return self.curated.inputs["seed"] is not None
        return self.schema.first(INPUT_NAMES["seed"]) is not None

    def capabilities(self) -> Capabilities:
        """What the model can do: tasks from the table or the schema, limits from the schema."""
        schema = self.schema
        outputs = schema.first(INPUT_NAMES["n"]) if schema.known else None
        per_call = 1
        if outputs is not None:
            maximum = schema.spec(outputs).get("maximum")
            per_call = int(maximum) if maximum is not None else 64
        frames = schema.first(INPUT_NAMES["frames"]) if schema.known else None
        duration = schema.first(INPUT_NAMES["duration_s"]) if schema.known else None
        return Capabilities(
            tasks=self.curated.tasks if self.curated else _infer_tasks(schema),
            max_outputs_per_call=max(1, per_call),
            # One seed input for a whole batch cannot make output i with seed + i: one call per output.
            max_seeded_outputs_per_call=1 if self.takes_seed else None,
            max_width=_int_or_none(schema.spec("width").get("maximum")) if schema.known else None,
            max_height=_int_or_none(schema.spec("height").get("maximum")) if schema.known else None,
            max_frames=_int_or_none(schema.spec(frames).get("maximum")) if frames else None,
            max_duration_s=_float_or_none(schema.spec(duration).get("maximum")) if duration else None,
        )


def _infer_tasks(schema: InputSchema) -> frozenset[Task]:
    if not schema.known:
        return frozenset(TASKS)
    text = schema.first(INPUT_NAMES["prompt"])
    image = schema.first(INPUT_NAMES["image"])
    tasks: set[Task] = set()
    if text is not None and not (image is not None and schema.needs(image)):
        tasks |= {t for t in TASKS if t.startswith("text-to-")}
    if image is not None:
        tasks |= {"image-to-image", "image-to-video", "image-to-3d"}
        if schema.first(INPUT_NAMES["mask"]):
            tasks.add("inpaint")
        if schema.first(INPUT_NAMES["control_image"]):
            tasks.add("controlnet")
    return frozenset(tasks) or frozenset(TASKS)


def _int_or_none(value: Any) -> int | None:
    return int(value) if is_number(value) else None


def _float_or_none(value: Any) -> float | None:
    return float(value) if is_number(value) else None


FetchModel = Callable[[str, str], Awaitable[Mapping[str, Any]]]
FetchVersion = Callable[[str, str, str], Awaitable[Mapping[str, Any]]]


class ModelCatalog:
    """Resolves model strings to `ModelInfo`, fetching each model's schema once.

    Concurrent first requests for one model share one fetch; a failed fetch is not cached.

    Args:
        fetch_model: `(owner, name)` → the model object (`GET /v1/models/{owner}/{name}`).
        fetch_version: `(owner, name, version)` → the version object.
    """

    def __init__(self, fetch_model: FetchModel, fetch_version: FetchVersion) -> None:
        self._fetch_model = fetch_model
        self._fetch_version = fetch_version
        self._known: dict[str, ModelInfo] = {}
        self._loading: dict[str, asyncio.Task[ModelInfo]] = {}

    @property
    def cached(self) -> list[str]:
        """References resolved so far."""
        return sorted(self._known)

    async def resolve(self, model: str) -> ModelInfo:
        """The model behind a reference (`owner/name` or `owner/name:<version>`).

        Raises:
            ModelNotFoundError: Bad reference, or Replicate does not know the model or version.
        """
        ref = ModelRef.parse(model)
        key = str(ref)
        if key in self._known:
            return self._known[key]
        task = self._loading.get(key)
        if task is None:
            task = asyncio.ensure_future(self._load(ref))
            self._loading[key] = task
            task.add_done_callback(lambda _: self._loading.pop(key, None))
        # Shielded: one caller giving up must not cancel the fetch the others wait for.
        info = await asyncio.shield(task)
        self._known[key] = info
        return info

    async def _load(self, ref: ModelRef) -> ModelInfo:
        curated = CURATED.get(ref.name_ref)
        try:
            if ref.version is not None:
                version = await self._fetch_version(ref.owner, ref.name, ref.version)
                return ModelInfo(ref, ref.version, InputSchema.from_openapi(version.get("openapi_schema")), curated)
            found = await self._fetch_model(ref.owner, ref.name)
        except ModelNotFoundError as exc:
            close = difflib.get_close_matches(ref.name_ref, list(CURATED), n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]!r}?" if close and close[0] != ref.name_ref else ""
            raise ModelNotFoundError(
                f"Replicate has no model {str(ref)!r} visible to this token.{hint}",
                provider=PROVIDER,
                model=str(ref),
                status=exc.status,
                detail=exc.detail,
            ) from exc
        latest = found.get("latest_version") or {}
        official = found.get("is_official")
        if official is None:
            official = curated.official if curated else not latest
        if not official and not latest.get("id"):
            raise ModelNotFoundError(
                f"{ref.name_ref} has no version to run; pin one as 'owner/name:<version>'",
                provider=PROVIDER,
                model=str(ref),
            )
        schema = InputSchema.from_openapi(latest.get("openapi_schema"))
        return ModelInfo(ref, None if official else str(latest["id"]), schema, curated)
