"""`Generate`: mediagen as a Ray Data stage.

```python
import ray, mediagen.ray

ds = ray.data.from_items([{"prompt": "a red fox", "seed": 1}, {"prompt": "a blue owl", "seed": 2}])
out = ds.map_batches(
    mediagen.ray.Generate,
    fn_constructor_kwargs={"model": "diffusers:/models/sd", "output": "s3://bucket/run-1"},
    concurrency=2,          # actors, each holding one client (and its loaded model)
    num_gpus=1,             # per actor
    batch_size=16,          # rows per call: generated concurrently, micro-batched on the device
)
out.show()                  # rows gain "paths", "seeds", "error"
```
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from typing import Any

from .._embedding import SIDECAR_SUFFIX
from .._outputs import OutputDir, open_output
from ..batch import output_suffix, safe_stem
from ..client import Client
from ..errors import MediagenError, OutputExistsError
from ..requests import Request, request_class

__all__ = ["Generate"]

_CONTROL = ("type", "model", "name")


class Generate:
    """A callable class for `Dataset.map_batches`: each row is a request, each output row says where its files went.

    A row holds request fields (`prompt`, `seed`, `width` ...) and optionally `type` (image, video,
    audio, mesh), `model` and `name` (the file stem; else one unique to this actor, call and
    position). The returned batch keeps the input columns and adds `paths` (files written, as
    paths or URLs without credentials), `seeds` and `error` (None, or why that row failed: one bad
    row never fails the batch).

    Files are written as `mediagen batch` writes them (see `mediagen._outputs`): atomically, with
    provenance, never over another file. A named row whose file is already there with the same
    bytes (Ray retried the task) reuses it; with other bytes the row fails instead.

    Args:
        model: Model string (or alias) for rows that name none.
        output: A directory or an fsspec URL (`s3://...`, `file://...`) the workers can write to;
            None keeps the encoded bytes in an `outputs` column instead.
        modality: The request type for rows without `type`.
        client_kwargs: Passed to the actor's `Client`.
        storage_options: Passed to the fsspec filesystem of `output` (credentials, endpoint).

    Raises:
        ConfigError: `output` cannot be used (an unknown scheme, a missing package, unreachable).
    """

    def __init__(
        self,
        model: str | list[str] | None = None,
        output: str | None = None,
        modality: str = "image",
        client_kwargs: Mapping[str, Any] | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.output = output
        self.modality = modality
        self._out: OutputDir | None = None
        if output is not None:
            self._out = open_output(output, storage_options)
            self._out.prepare()  # an unreachable output fails the actor at once, not every row
        # Default names must not clash between actors writing to one place.
        self._tag = secrets.token_hex(4)
        self._loop = asyncio.new_event_loop()
        self._client = Client(**dict(client_kwargs or {}))
        self._calls = 0

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, list[Any]]:
        """Generate every row of `batch` (columns of equal length) concurrently."""
        columns = {k: list(v) for k, v in batch.items()}
        count = len(next(iter(columns.values()))) if columns else 0
        rows = [{k: _plain(v[i]) for k, v in columns.items()} for i in range(count)]
        self._calls += 1
        # Ray Data may call from a pool thread with no loop of its own: the gather must start inside ours.
        outcomes = self._loop.run_until_complete(self._all(rows))
        out: dict[str, list[Any]] = {k: list(v) for k, v in columns.items()}
        for key in ("paths", "seeds", "error", *(["outputs"] if self.output is None else [])):
            out[key] = [o[key] for o in outcomes]
        return out

    async def _all(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(
            await asyncio.gather(
                *(self._one(row, f"{self._tag}-{self._calls:05d}-{i:04d}") for i, row in enumerate(rows))
            )
        )

    async def _one(self, row: dict[str, Any], default_stem: str) -> dict[str, Any]:
        modality = str(row.get("type") or self.modality)
        fields = {k: v for k, v in row.items() if k not in _CONTROL and v is not None}
        stem = safe_stem(str(row["name"])) if row.get("name") else default_stem
        paths: list[str] = []
        try:
            request: Request = request_class(modality)(**fields)  # type: ignore[assignment]
            result = await self._client.generate(request, model=row.get("model") or self.model)
            blobs = []
            for index, artifact in enumerate(result.artifacts):
                data = await artifact.aread()
                suffix = output_suffix(artifact, modality)
                name = f"{stem}{suffix}" if len(result.artifacts) == 1 else f"{stem}-{index}{suffix}"
                blobs.append((name, data, artifact))
            if self._out is None:
                return {"paths": [], "seeds": result.seeds, "error": None, "outputs": [d for _, d, _ in blobs]}
            for name, _, artifact in blobs:
                paths.append(await asyncio.to_thread(_write, self._out, name, artifact))
        except (MediagenError, ValueError, OSError) as exc:
            return {"paths": paths, "seeds": [], "error": f"{type(exc).__name__}: {exc}", "outputs": []}
        return {"paths": paths, "seeds": result.seeds, "error": None, "outputs": []}

    def __del__(self) -> None:
        try:
            self._loop.run_until_complete(self._client.aclose())
            self._loop.close()
        except Exception:  # interpreter shutdown: nothing left to release
            pass


def _plain(value: Any) -> Any:
    # Ray hands columns over as numpy arrays: turn scalars back into Python values for pydantic.
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", None) == 0:
        return item()
    if isinstance(value, float) and value != value:  # a missing value in a numeric column
        return None
    return value


def _write(out: OutputDir, name: str, artifact: Any) -> str:
    """Write one output (provenance included) and its sidecar, if any; where it went."""
    payload, sidecar = artifact.file_payload(name)
    try:
        place = out.write(name, payload)
    except OutputExistsError:
        if out.read(name) != payload:
            raise
        place = out.location(name)  # this very file, from an earlier attempt at this row: reused
    if sidecar is not None:
        out.write(name + SIDECAR_SUFFIX, sidecar, overwrite=True)
    return str(place)
