"""Run a JSONL file of requests: concurrently, resumably, reporting failures by line number.

Each line is one JSON object: the request's fields, plus

- `"type"`: `image` (default), `video`, `audio` or `mesh`;
- `"model"`: the model string (else the batch's default);
- `"name"`: the output file stem (else the line number, `00042`).

Finished lines are recorded in `manifest.jsonl` in the output directory; a re-run skips every line
whose files are all still there, so an interrupted or partly failed batch only does what is missing.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .artifacts import Artifact
from .client import Client, _invalid
from .errors import InvalidRequestError, MediagenError
from .requests import Request, request_class
from .results import Result

__all__ = ["BatchLine", "BatchReport", "run_batch", "MANIFEST"]

MANIFEST = "manifest.jsonl"
_SUFFIX = {"image": ".png", "video": ".mp4", "audio": ".wav", "mesh": ".glb"}


@dataclass
class BatchLine:
    """One line of the input file, parsed (or the reason it could not be)."""

    number: int
    """1-based line number in the file."""
    stem: str
    """File stem of its outputs."""
    modality: str = "image"
    model: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    """Why the line cannot run (bad JSON, an invalid request)."""


@dataclass
class BatchReport:
    """What a batch run did."""

    done: list[int] = field(default_factory=list)
    """Lines generated in this run."""
    skipped: list[int] = field(default_factory=list)
    """Lines finished by an earlier run (their files exist)."""
    failed: dict[int, str] = field(default_factory=dict)
    """Line number → why it failed."""
    files: list[Path] = field(default_factory=list)
    """Files written in this run."""

    @property
    def ok(self) -> bool:
        """True when no line failed."""
        return not self.failed


def parse_lines(path: Path) -> list[BatchLine]:
    """Read and check every non-empty line; invalid ones carry their error instead of failing the file."""
    lines = []
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        line = BatchLine(number=number, stem=f"{number:05d}")
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("each line must be a JSON object")
            line.modality = str(data.pop("type", "image"))
            line.model = data.pop("model", None)
            name = data.pop("name", None)
            if name is not None:
                line.stem = _safe_stem(str(name))
            cls = request_class(line.modality)
            try:
                cls(**data)  # validate now: a bad line fails before any work
            except ValidationError as exc:
                raise _invalid(exc, cls.__name__) from exc
            line.fields = data
        except json.JSONDecodeError as exc:
            line.error = f"not valid JSON ({exc.msg} at column {exc.colno})"
        except (ValueError, TypeError) as exc:
            line.error = " ".join(str(exc).split())
        lines.append(line)
    return lines


def _safe_stem(name: str) -> str:
    # A name from the input file must not climb out of the output directory.
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._")
    return stem or "output"


def _load_manifest(out_dir: Path) -> dict[int, list[str]]:
    finished: dict[int, list[str]] = {}
    manifest = out_dir / MANIFEST
    if not manifest.exists():
        return finished
    for text in manifest.read_text().splitlines():
        try:
            entry = json.loads(text)
            finished[int(entry["line"])] = list(entry["files"])
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line from an interrupted run: that line simply runs again
    return finished


async def run_batch(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    client: Client,
    model: str | None = None,
    concurrency: int = 4,
    on_line_done: Callable[[int, str | None], None] | None = None,
    generate: Callable[[Request, str | None], Awaitable[Result]] | None = None,
) -> BatchReport:
    """Generate every line of a JSONL file into `out_dir`.

    Args:
        path: The JSONL file.
        out_dir: Where outputs and `manifest.jsonl` go (created if missing).
        client: The client that runs the requests.
        model: Model for lines that name none (else the configured default).
        concurrency: How many lines run at once.
        on_line_done: Called with `(line number, error or None)` as each line ends (progress bars).
        generate: Runs one request with a model string (default: `client.generate`). Another
            engine (Ray) passes its own; parsing, resume, names and the manifest stay here.

    Returns:
        What was done, skipped and failed (by line number).
    """
    out = Path(out_dir)
    # Small, local file operations: not worth a thread hop each.
    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
    lines = parse_lines(Path(path))
    finished = _load_manifest(out)
    report = BatchReport()
    semaphore = asyncio.Semaphore(max(1, concurrency))
    manifest_lock = asyncio.Lock()

    async def one(line: BatchLine) -> None:
        if line.error is not None:
            report.failed[line.number] = line.error
            return
        files = finished.get(line.number)
        if files and all((out / f).exists() for f in files):
            report.skipped.append(line.number)
            return
        async with semaphore:
            try:
                request = client.build_request(line.modality, **line.fields)
                if generate is None:
                    result = await client.generate(request, model=line.model or model)
                else:
                    result = await generate(request, line.model or model)
                written = [
                    await _save(artifact, out, line.stem, index, len(result.artifacts), line.modality)
                    for index, artifact in enumerate(result.artifacts)
                ]
            except (MediagenError, InvalidRequestError, ImportError, OSError, ValueError) as exc:
                report.failed[line.number] = f"{type(exc).__name__}: {exc}".replace("\n", " ")
                return
        async with manifest_lock:
            entry = {
                "line": line.number,
                "files": [p.name for p in written],
                "model": result.model_string,
                "seeds": result.seeds,
            }
            with (out / MANIFEST).open("a") as fh:
                fh.write(json.dumps(entry) + "\n")
        report.done.append(line.number)
        report.files.extend(written)

    async def tracked(line: BatchLine) -> None:
        await one(line)
        if on_line_done is not None:
            on_line_done(line.number, report.failed.get(line.number))

    await asyncio.gather(*(tracked(line) for line in lines))
    report.done.sort()
    report.skipped.sort()
    return report


async def _save(artifact: Artifact, out: Path, stem: str, index: int, count: int, modality: str) -> Path:
    from ._media import suffix_for_media_type

    await artifact.aread()
    suffix = suffix_for_media_type(artifact.media_type) or _SUFFIX[modality]
    name = f"{stem}{suffix}" if count == 1 else f"{stem}-{index}{suffix}"
    return artifact.save(out / name)
