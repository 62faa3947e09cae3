"""Run a JSONL file of requests: concurrently, resumably, every line's outcome by line number.

Each line is one JSON object: the request's fields, plus

- `"type"`: `image` (default), `video`, `audio` or `mesh`;
- `"model"`: the model string (else the batch's default);
- `"name"`: the output file stem (else the line number, `00042`).

A line that cannot run (not UTF-8, not JSON, a field of the wrong type, an invalid request, a name
another line already took) is reported as failed with its line number; the other lines run. A UTF-8
byte order mark at the start of the file (or of a line) is ignored.

The output directory may be a path or any fsspec URL (`s3://bucket/run`, `file:///shared/run`:
see `mediagen._outputs`); outputs, the manifest and resume all go through it, and every file is
written atomically.

Finished lines are recorded in `manifest.jsonl` in the output directory, keyed by a fingerprint of
the request (type, model, name and fields; the n-th identical line gets its own key). A re-run skips
a line whose fingerprint is recorded and whose files are all still there, so after lines are
inserted, removed or edited it redoes exactly the lines that changed (and those whose files are
gone), whatever their line numbers now.

Output names never clash silently: an explicit `name` used by two lines fails the later line; a
default name (the line number) that is taken gets `_2`, `_3` ... appended; a file this batch did
not write is never replaced (a file recorded in the manifest for a line that no longer exists is).
A full disk (or any other failure to write the manifest) stops the run cleanly: lines not started
are reported as not run, and `BatchReport.stopped` says why.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ._embedding import SIDECAR_SUFFIX
from ._outputs import OutputDir, is_plain_name, open_output
from .artifacts import Artifact
from .client import Client, _invalid
from .requests import Request, request_class
from .results import Result

__all__ = [
    "BatchLine",
    "BatchReport",
    "run_batch",
    "parse_lines",
    "output_suffix",
    "request_key",
    "safe_stem",
    "MANIFEST",
]

MANIFEST = "manifest.jsonl"
_SUFFIX = {"image": ".png", "video": ".mp4", "audio": ".wav", "mesh": ".glb"}
_BOM = "\ufeff"
# Errors that say the disk (or quota) is full: nothing further can be written, so the run stops.
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT} if hasattr(errno, "EDQUOT") else {errno.ENOSPC}


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
    """Why the line cannot run (not UTF-8, bad JSON, a wrong field type, an invalid request, a taken name)."""
    named: bool = False
    """Whether `stem` came from the line's own `name` (then it is never changed to avoid a clash)."""
    key: str = ""
    """The fingerprint the manifest records it by (see `request_key`); empty when the line cannot run."""
    request: Request | None = None
    """The validated request (None when the line cannot run): validated once, when the file is read."""


@dataclass
class BatchReport:
    """What a batch run did, by line number."""

    done: list[int] = field(default_factory=list)
    """Lines generated in this run."""
    skipped: list[int] = field(default_factory=list)
    """Lines finished by an earlier run (same request recorded, files still there)."""
    failed: dict[int, str] = field(default_factory=dict)
    """Line number → why it failed."""
    not_run: list[int] = field(default_factory=list)
    """Lines never started because the run stopped (see `stopped`)."""
    files: list[Path | str] = field(default_factory=list)
    """Files written in this run: paths in a local directory, else URLs (without credentials)."""
    stopped: str | None = None
    """Why the run stopped before every line was tried (a full disk); None when it ran to the end."""

    @property
    def ok(self) -> bool:
        """True when every line is done or skipped."""
        return not self.failed and not self.not_run and self.stopped is None

    def outcomes(self) -> dict[int, str]:
        """Line number → `"done"`, `"skipped"`, `"not run"` or `"failed: <why>"`, in line order."""
        found: dict[int, str] = {n: "done" for n in self.done}
        found.update({n: "skipped" for n in self.skipped})
        found.update({n: "not run" for n in self.not_run})
        found.update({n: f"failed: {why}" for n, why in self.failed.items()})
        return dict(sorted(found.items()))


def request_key(modality: str, model: str | None, name: str | None, fields: dict[str, Any]) -> str:
    """The fingerprint of one line's request: what a resumed run compares, not the line number.

    Examples:
        >>> request_key("image", "test:fake", None, {"prompt": "a", "seed": 1}) == request_key(
        ...     "image", "test:fake", None, {"seed": 1, "prompt": "a"})
        True
    """
    canonical = json.dumps(
        {"type": modality, "model": model, "name": name, "fields": fields},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        default=repr,
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()[:32]


def parse_lines(path: str | os.PathLike[str], *, model: str | None = None) -> list[BatchLine]:
    """Read and check every non-empty line; a line that cannot run carries its error instead.

    Never raises for the file's content (only when the file cannot be read at all).

    Args:
        path: The JSONL file.
        model: The batch's default model (part of each line's key when the line names none).

    Returns:
        One `BatchLine` per non-blank, non-comment line, in file order.
    """
    raw = Path(path).read_bytes()
    lines: list[BatchLine] = []
    seen_keys: dict[str, int] = {}
    named_by: dict[str, int] = {}
    for number, chunk in enumerate(raw.split(b"\n"), start=1):
        chunk = chunk.rstrip(b"\r")
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = BatchLine(number=number, stem=f"{number:05d}")
            line.error = f"not valid UTF-8 (byte 0x{chunk[exc.start]:02x} at column {exc.start + 1})"
            lines.append(line)
            continue
        text = text.removeprefix(_BOM)
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        line = BatchLine(number=number, stem=f"{number:05d}")
        lines.append(line)
        try:
            _parse_line(line, text, model)
        except (ValueError, TypeError) as exc:  # an invalid request (InvalidRequestError), an unknown type
            line.error = " ".join(str(exc).split())
            continue
        except Exception as exc:  # anything else about one line is reported too, never the end of the run
            line.error = " ".join(f"{type(exc).__name__}: {exc}".split())
            continue
        if line.error is not None:
            continue
        if line.named:
            # Two lines asking for one file: the first keeps it; on a case-insensitive disk too.
            folded = line.stem.casefold()
            if folded in named_by:
                line.error = (
                    f"output name {line.stem!r} is already used by line {named_by[folded]}; give each line its own name"
                )
                continue
            named_by[folded] = number
        # The n-th identical line gets its own key, so duplicates each run (and resume) on their own.
        seen_keys[line.key] = seen_keys.get(line.key, 0) + 1
        line.key = f"{line.key}-{seen_keys[line.key]}"
    return lines


def _parse_line(line: BatchLine, text: str, default_model: str | None) -> None:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        line.error = f"not valid JSON ({exc.msg} at column {exc.colno})"
        return
    if not isinstance(data, dict):
        line.error = f"each line must be a JSON object, not {_json_type(data)}"
        return
    modality = data.pop("type", "image")
    model = data.pop("model", None)
    name = data.pop("name", None)
    if not isinstance(modality, str):
        line.error = f'"type" must be a string (image, video, audio or mesh), not {_json_type(modality)}'
        return
    if model is not None and not isinstance(model, str):
        line.error = f'"model" must be a model string like "provider:model", not {_json_type(model)}'
        return
    if name is not None and (isinstance(name, bool) or not isinstance(name, str | int)):
        line.error = f'"name" must be a string, not {_json_type(name)}'
        return
    line.modality = modality
    line.model = model
    cls = request_class(modality)
    try:
        line.request = cls(**data)  # type: ignore[assignment]  # validated now: a bad line fails before any work
    except ValidationError as exc:
        raise _invalid(exc, cls.__name__) from exc
    line.fields = data
    if name is not None:
        line.stem = safe_stem(str(name))
        line.named = True
    line.key = request_key(modality, model or default_model, None if name is None else str(name), data)


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array"}
    if value is None:
        return "null"
    return names.get(type(value), "an object")


def safe_stem(name: str) -> str:
    """A file stem from user input that cannot climb out of the output directory."""
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._")
    return stem[:150] or "output"


@dataclass
class _Manifest:
    """What earlier runs recorded: files by request key."""

    files: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, out: OutputDir) -> _Manifest:
        manifest = cls()
        raw = out.read(MANIFEST)
        if raw is None:
            return manifest
        for text in raw.decode("utf-8", "replace").splitlines():
            try:
                entry = json.loads(text)
                key, files = entry["key"], entry["files"]
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line, or a line-number entry of an older run: that line runs again
            if isinstance(key, str) and isinstance(files, list) and all(isinstance(f, str) for f in files):
                # Only plain names inside the output directory count.
                manifest.files[key] = [f for f in files if is_plain_name(f)]
        return manifest


def _append_text(out: OutputDir, name: str, text: str) -> None:
    """Append to a file: the one place the manifest is written (tests inject failures here)."""
    out.append(name, text)


async def run_batch(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | OutputDir,
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
        out_dir: Where outputs and `manifest.jsonl` go (created if missing): a path, or any fsspec
            URL (`s3://bucket/run`, `file:///shared/run`) with its package installed, or an
            `OutputDir` already opened and prepared.
        client: The client that runs the requests.
        model: Model for lines that name none (else the configured default).
        concurrency: How many lines run at once.
        on_line_done: Called with `(line number, error or None)` as each line ends (progress bars).
        generate: Runs one request with a model string (default: `client.generate`). Another
            engine (Ray) passes its own; parsing, resume, names and the manifest stay here.

    Returns:
        Each line's outcome: done, skipped, failed (with why) or not run (the run stopped).

    Raises:
        ConfigError: The output directory cannot be used (an unknown URL scheme, a missing
            package, an unreachable host).
    """
    if isinstance(out_dir, OutputDir):
        out = out_dir  # opened and prepared by the caller (the Ray engine checks it before starting)
    else:
        out = open_output(out_dir)
        await asyncio.to_thread(out.prepare)
    lines = parse_lines(path, model=model)
    manifest = await asyncio.to_thread(_Manifest.load, out)
    # One listing up front (a URL's every lookup is a round trip); the run keeps it current.
    # Exact names say whether a recorded file is still there; folded ones whether a name is taken
    # (on a case-insensitive disk `A.png` takes `a.png`).
    existing = await asyncio.to_thread(out.names)
    present = {name.casefold() for name in existing}
    report = BatchReport()
    semaphore = asyncio.Semaphore(max(1, concurrency))
    manifest_lock = asyncio.Lock()
    stop = asyncio.Event()

    # Who owns each existing name: lines of this file (their recorded files), or lines since removed
    # or edited (stale: their files may be replaced). Names compare case-insensitively.
    current = {line.key for line in lines if line.error is None}
    owner: dict[str, str] = {}
    for key, files in manifest.files.items():
        for name in files:
            owner[name.casefold()] = key
    reserved: set[str] = set()
    # A default name never takes a stem some line asked for by name, whichever finishes first.
    asked = {line.stem.casefold() for line in lines if line.named and line.error is None}

    def skippable(line: BatchLine) -> bool:
        files = manifest.files.get(line.key)
        return bool(files) and all(f in existing for f in files or ())

    for line in lines:
        if line.error is None and skippable(line):
            reserved.update(f.casefold() for f in manifest.files[line.key])

    def free(name: str, key: str) -> bool:
        folded = name.casefold()
        if folded in reserved:
            return False
        if folded not in present:
            return True
        # An existing file may be replaced only when this batch wrote it for this request or for a
        # line that no longer exists.
        holder = owner.get(folded)
        return holder is not None and (holder == key or holder not in current)

    def targets(line: BatchLine, suffixes: list[str]) -> list[str] | None:
        count = len(suffixes)
        for attempt in range(1, 1000):
            stem = line.stem if attempt == 1 else f"{line.stem}_{attempt}"
            if not line.named and stem.casefold() in asked:
                continue
            names = [f"{stem}{s}" if count == 1 else f"{stem}-{i}{s}" for i, s in enumerate(suffixes)]
            if len({n.casefold() for n in names}) == count and all(free(n, line.key) for n in names):
                reserved.update(n.casefold() for n in names)
                return names
            if line.named:
                return None  # the user chose this name: never renamed, never overwritten
        return None

    def disk_full(exc: BaseException, what: str) -> None:
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL and report.stopped is None:
            report.stopped = f"{what}: {exc.strerror or exc}; fix it and run the batch again to resume"
            stop.set()

    async def one(line: BatchLine) -> None:
        if line.error is not None:
            report.failed[line.number] = line.error
            return
        if skippable(line):
            report.skipped.append(line.number)
            return
        async with semaphore:
            if stop.is_set():
                report.not_run.append(line.number)
                return
            written: list[str] = []
            places: list[Path | str] = []
            try:
                request = line.request
                assert request is not None  # every line without an error was validated when read
                if generate is None:
                    result = await client.generate(request, model=line.model or model)
                else:
                    result = await generate(request, line.model or model)
                for artifact in result.artifacts:
                    await artifact.aread()
                suffixes = [output_suffix(a, line.modality) for a in result.artifacts]
                names = targets(line, suffixes)
                if names is None:
                    report.failed[line.number] = (
                        f"output name {line.stem!r} is taken (by another line, or by a file this batch did "
                        "not write); give the line another name or move the file"
                    )
                    return
                for artifact, name in zip(result.artifacts, names, strict=True):
                    payload, sidecar = await asyncio.to_thread(artifact.file_payload, name)
                    # A file already there is ours and superseded (see `free`): replaced atomically.
                    place = await asyncio.to_thread(out.write, name, payload, overwrite=name.casefold() in present)
                    written.append(name)
                    places.append(place)
                    present.add(name.casefold())
                    existing.add(name)
                    if sidecar is not None:  # provenance the format has no place for: it follows its file
                        await asyncio.to_thread(out.write, name + SIDECAR_SUFFIX, sidecar, overwrite=True)
            except Exception as exc:  # any failure is this line's; the run goes on
                await _remove(out, written, present, existing)
                report.failed[line.number] = " ".join(f"{type(exc).__name__}: {exc}".split())
                disk_full(exc, f"writing the outputs of line {line.number} failed")
                return
            # Recorded while the line still holds its slot: once the run stops, no other line starts.
            async with manifest_lock:
                entry = {
                    "key": line.key,
                    "line": line.number,
                    "files": written,
                    "model": result.model_string,
                    "seeds": result.seeds,
                }
                try:
                    await asyncio.to_thread(_append_text, out, MANIFEST, json.dumps(entry) + "\n")
                except OSError as exc:
                    # Not recorded means not done: remove the files, so a resumed run redoes the line
                    # cleanly (and the space they took is free again).
                    await _remove(out, written, present, existing)
                    why = exc.strerror or str(exc)
                    report.failed[line.number] = (
                        f"its outputs could not be recorded in {MANIFEST} ({why}); removed them"
                    )
                    disk_full(exc, f"writing {MANIFEST} failed")
                    if report.stopped is None:
                        report.stopped = f"writing {MANIFEST} failed: {why}"
                        stop.set()
                    return
        for name in written:
            owner[name.casefold()] = line.key
        report.done.append(line.number)
        report.files.extend(places)

    async def tracked(line: BatchLine) -> None:
        await one(line)
        if on_line_done is not None:
            error = report.failed.get(line.number)
            on_line_done(line.number, "not run" if line.number in report.not_run else error)

    await asyncio.gather(*(tracked(line) for line in lines))
    report.done.sort()
    report.skipped.sort()
    report.not_run.sort()
    return report


async def _remove(out: OutputDir, names: list[str], present: set[str], existing: set[str]) -> None:
    for name in names:
        try:
            await asyncio.to_thread(out.remove, name)
        except Exception:  # cleanup after a failure: the line is reported failed either way
            continue
        present.discard(name.casefold())
        existing.discard(name)


def output_suffix(artifact: Artifact, modality: str) -> str:
    """The file suffix of an output: from its media type, else the modality's usual one."""
    from ._media import suffix_for_media_type

    return suffix_for_media_type(artifact.media_type) or _SUFFIX[modality]
