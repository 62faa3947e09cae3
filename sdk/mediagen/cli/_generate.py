"""What `image`, `video`, `audio` and `mesh` share: common options, where files go, the run itself.

The flow of one generation: check the output paths (never overwrite silently), submit, follow the
job (a progress display on a terminal), save, print the paths as the user would type them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ._common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, echo, echo_json, fail

__all__ = ["add_common", "add_previews", "add_sampling", "generate", "option_pairs", "output_paths", "size"]

DEFAULT_SUFFIX = {"image": ".png", "video": ".mp4", "audio": ".wav", "mesh": ".glb"}
_IMAGE_SUFFIX = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}


def size(text: str) -> tuple[int, int]:
    """`--size` as (width, height): `512x768`, or `512` for a square."""
    w, _, h = text.lower().partition("x")
    try:
        return int(w), int(h or w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 512x512 or 512, got {text!r}") from None


def option_pairs(text: str) -> tuple[str, Any]:
    """`--option key=value`, the value read as JSON when it parses (`2`, `true`, `[1, 2]`)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--option takes key=value, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_common(parser: argparse.ArgumentParser, *, n: bool = True) -> None:
    """Options every generation command has: model, count, seed, output and how to report."""
    parser.add_argument("-m", "--model", help="provider:model, an alias, or omit for the configured default.")
    if n:
        parser.add_argument("-n", type=int, default=1, metavar="N", help="How many outputs (default 1).")
    parser.add_argument("--seed", type=int, metavar="S", help="Seed of the first output.")
    parser.add_argument(
        "--option",
        type=option_pairs,
        action="append",
        metavar="KEY=VALUE",
        help="Provider option (value read as JSON when it parses); repeatable.",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="A file (numbered name-0, name-1 ... when n > 1), or a directory: a path without a suffix, "
        "ending in /, or an existing one. Default: the working directory.",
    )
    parser.add_argument("--overwrite", action="store_true", help="Replace files that exist (default: refuse).")
    parser.add_argument("--json", action="store_true", dest="as_json", help="Print one JSON object, no progress.")
    parser.add_argument("--timeout", type=float, metavar="S", help="Deadline in seconds for the whole job.")
    parser.add_argument("--strict", action="store_true", help="Fail instead of warning when a setting is not honoured.")


def add_previews(parser: argparse.ArgumentParser) -> None:
    """`--previews DIR`: rough pictures of each step, where the backend makes them (local diffusers)."""
    parser.add_argument(
        "--previews", metavar="DIR", help="Save a rough preview of each step here (local diffusers models)."
    )


def _save_preview(event: Any, directory: Path) -> None:
    """Write a `Preview` event's picture as `<directory>/preview-<output>-<step>.png` (never over a file)."""
    import mediagen as mg

    if not isinstance(event, mg.Preview):
        return
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"preview-{event.index}-{event.step:04d}.png"
    if target.exists():
        return  # a preview is disposable; whatever is there already stays
    event.image.save(target)


def add_sampling(parser: argparse.ArgumentParser, *, negative: bool = True) -> None:
    """Denoising options: steps, guidance and (where it applies) a negative prompt."""
    if negative:
        parser.add_argument("--negative", metavar="TEXT", help="Negative prompt.")
    parser.add_argument("--steps", type=int, metavar="N", help="Denoising steps.")
    parser.add_argument("--guidance", type=float, metavar="F", help="Guidance scale.")


def output_paths(output: str | None, modality: str, count: int, suffix: str) -> list[Path]:
    """Where each artifact goes, as the user would type it (relative paths stay relative).

    `-o fox.png` is a file (numbered when `count > 1`); `-o shots/`, `-o shots` (no suffix) or an
    existing directory is a directory holding `<modality><suffix>`; no `-o` is the working directory.
    """
    if output is None:
        base = Path(f"{modality}{suffix}")
    elif output.endswith(("/", "\\")) or Path(output).is_dir() or not Path(output).suffix:
        base = Path(output) / f"{modality}{suffix}"
    else:
        base = Path(output)
    if count == 1:
        return [base]
    return [base.with_name(f"{base.stem}-{i}{base.suffix}") for i in range(count)]


def _expected_suffix(modality: str, fields: dict[str, Any], output: str | None) -> str:
    if modality == "mesh":
        return "." + str(fields.get("format") or "glb")
    if modality == "image" and fields.get("output_format"):
        return _IMAGE_SUFFIX[fields["output_format"]]
    return DEFAULT_SUFFIX[modality]


def _suffix_for(artifact: Any, modality: str, fields: dict[str, Any]) -> str:
    from .._media import suffix_for_media_type

    if modality == "mesh" or (modality == "image" and fields.get("output_format")):
        return _expected_suffix(modality, fields, None)
    return suffix_for_media_type(artifact.media_type) or DEFAULT_SUFFIX[modality]


def _taken(paths: list[Path]) -> list[Path]:
    return [p for p in paths if p.exists()]


def _exists_error(paths: list[Path]) -> Exception:
    from ..errors import OutputExistsError

    names = ", ".join(str(p) for p in paths)
    return OutputExistsError(
        f"{names} already exists; pass --overwrite to replace it, or choose another -o", path=str(paths[0])
    )


def generate(modality: str, fields: dict[str, Any], args: argparse.Namespace) -> int:
    """Run one generation command to the end and return its exit code."""
    import mediagen as mg

    as_json: bool = args.as_json
    fields = {k: v for k, v in fields.items() if v is not None}
    n = int(fields.get("n", 1))
    # Refuse before any work when the files we would write are already there.
    planned = output_paths(args.output, modality, n, _expected_suffix(modality, fields, args.output))
    if not args.overwrite and names_chosen(args.output) and _taken(planned):
        return fail(_exists_error(_taken(planned)), EXIT_BAD_INPUT, as_json)
    interactive = not as_json and _is_terminal()
    try:
        with mg.SyncClient(strict=args.strict or None) as client:
            request = client.client.build_request(modality, **fields)
            preview_dir = Path(args.previews) if getattr(args, "previews", None) else None
            job = client.submit(
                request, model=args.model, timeout=args.timeout, previews=1 if preview_dir is not None else None
            )
            on_event = None if preview_dir is None else (lambda event: _save_preview(event, preview_dir))
            if interactive:
                from ._progress import Display

                with Display() as display:
                    result = display.follow(job, on_event)
                    display.phase("saving")
                    paths = _save(result, modality, fields, args)
            else:
                if on_event is not None:
                    for event in job.events():
                        on_event(event)
                result = job.result()
                paths = _save(result, modality, fields, args)
    except (mg.InvalidRequestError, mg.UnsupportedRequestError, mg.ModelNotFoundError, mg.OutputExistsError) as exc:
        return fail(exc, EXIT_BAD_INPUT, as_json)
    except (mg.MediagenError, ImportError, OSError) as exc:
        return fail(exc, EXIT_FAILED, as_json)
    if as_json:
        echo_json(
            {
                "provider": result.provider,
                "model": result.model,
                "files": [str(p) for p in paths],
                "seeds": result.seeds,
                "timings": result.timings.model_dump(),
                "usage": result.usage.model_dump(),
                "warnings": [w.model_dump() for w in result.warnings],
            }
        )
    else:
        # The result's warnings were logged once by the client (shown by the CLI's log handler).
        for path in paths:
            echo(str(path))
    return EXIT_OK


def _save(result: Any, modality: str, fields: dict[str, Any], args: argparse.Namespace) -> list[Path]:
    suffix = _suffix_for(result.artifacts[0], modality, fields) if result.artifacts else DEFAULT_SUFFIX[modality]
    targets = output_paths(args.output, modality, len(result.artifacts), suffix)
    chosen = names_chosen(args.output)
    if chosen and not args.overwrite and _taken(targets):
        raise _exists_error(_taken(targets))
    saved = []
    for artifact, target in zip(result.artifacts, targets, strict=True):
        if chosen or args.overwrite:
            # Atomic, and still refused if another process created the file since the check above.
            artifact.save(target, overwrite=args.overwrite)
            saved.append(target)
        else:
            saved.append(_save_free(artifact, target))
    return saved


def names_chosen(output: str | None) -> bool:
    """Whether `-o` names the file(s) (never replaced without --overwrite) or not (names are derived).

    A derived name (no `-o`, or a directory) moves to the next free one instead: `image.png`, then
    `image-1.png`, so running a command twice keeps both results.
    """
    return output is not None and not (output.endswith(("/", "\\")) or Path(output).is_dir() or not Path(output).suffix)


def _save_free(artifact: Any, target: Path) -> Path:
    from .._files import next_free_names
    from ..errors import OutputExistsError

    for name in next_free_names(target.name):
        candidate = target.with_name(name)
        try:
            artifact.save(candidate)
        except OutputExistsError:
            continue
        return candidate
    raise _exists_error([target])


def _is_terminal() -> bool:
    import sys

    return sys.stderr.isatty()
