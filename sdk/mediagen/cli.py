"""The `mediagen` command: generate from the shell, list backends, run the demo.

Exit codes: 0 success, 2 bad input (an invalid request, an unknown model), 1 any other failure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    name="mediagen",
    help="Generate images, video, audio and 3D meshes with local or hosted models.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

_SUFFIX = {"image": ".png", "video": ".mp4", "audio": ".wav", "mesh": ".glb"}


def _parse_size(size: str | None) -> dict[str, int]:
    if not size:
        return {}
    try:
        w, _, h = size.lower().partition("x")
        return {"width": int(w), "height": int(h or w)}
    except ValueError:
        raise typer.BadParameter(f"size must look like 512x512 or 512, got {size!r}") from None


def _parse_options(options: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in options or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--option takes key=value, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _outputs(output: str | None, modality: str, count: int, suffix: str) -> list[Path]:
    """Where each artifact goes: `-o file.png` (numbered when n > 1), `-o dir/`, or the working dir."""
    if output is None:
        base = Path.cwd() / f"{modality}{suffix}"
    elif output.endswith(("/", "\\")) or Path(output).is_dir():
        base = Path(output) / f"{modality}{suffix}"
    else:
        base = Path(output) if Path(output).suffix else Path(output).with_suffix(suffix)
    if count == 1:
        return [base]
    return [base.with_name(f"{base.stem}-{i}{base.suffix}") for i in range(count)]


def _generate(
    modality: str,
    fields: dict[str, Any],
    model: str | None,
    output: str | None,
    as_json: bool,
    timeout: float | None,
    strict: bool,
    previews: str | None = None,
) -> None:
    import mediagen as mg

    fail = _fail
    try:
        with mg.SyncClient(strict=strict or None) as client:
            request = client.client.build_request(modality, **{k: v for k, v in fields.items() if v is not None})
            job = client.submit(request, model=model, timeout=timeout, previews=1 if previews else None)
            result = _follow(job, quiet=as_json, previews=Path(previews) if previews else None)
    except mg.InvalidRequestError as exc:
        fail(exc, EXIT_BAD_INPUT, as_json)
    except mg.ModelNotFoundError as exc:
        fail(exc, EXIT_BAD_INPUT, as_json)
    except (mg.MediagenError, ImportError) as exc:
        fail(exc, EXIT_FAILED, as_json)
    except KeyboardInterrupt:
        fail(RuntimeError("interrupted"), 130, as_json)
    suffix = _suffix_for(result.artifacts[0], modality, fields) if result.artifacts else _SUFFIX[modality]
    targets = _outputs(output, modality, len(result.artifacts), suffix)
    paths = [artifact.save(path) for artifact, path in zip(result.artifacts, targets, strict=True)]
    if as_json:
        out = {
            "provider": result.provider,
            "model": result.model,
            "files": [str(p) for p in paths],
            "seeds": result.seeds,
            "timings": result.timings.model_dump(),
            "usage": result.usage.model_dump(),
            "warnings": [w.model_dump() for w in result.warnings],
        }
        typer.echo(json.dumps(out))
    else:
        from rich.console import Console

        console = Console(stderr=True)
        for warning in result.warnings:
            console.print(f"[yellow]warning[/]: {warning}")
        for path in paths:
            typer.echo(str(path))


def _suffix_for(artifact: Any, modality: str, fields: dict[str, Any]) -> str:
    from ._media import suffix_for_media_type

    if modality == "mesh":
        return "." + str(fields.get("format") or "glb")
    if modality == "image" and fields.get("output_format"):
        return {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}[fields["output_format"]]
    return suffix_for_media_type(artifact.media_type) or _SUFFIX[modality]


def _follow(job: Any, *, quiet: bool, previews: Path | None = None) -> Any:
    """Show a progress bar fed by the job's events (saving previews into `previews`), then return its result."""
    import mediagen as mg

    if quiet or not sys.stderr.isatty():
        if previews is not None:
            for event in job.events():
                _save_preview(event, previews)
        return job.result()
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("queued", total=None)
        for event in job.events():
            if isinstance(event, mg.Started):
                bar.update(task, description=f"{event.provider}:{event.model}")
            elif isinstance(event, mg.Progress):
                bar.update(task, completed=event.step, total=event.total)
            elif isinstance(event, mg.Preview) and previews is not None:
                _save_preview(event, previews)
            elif isinstance(event, mg.Log):
                bar.console.print(f"[dim]{event.message}[/]")
    return job.result()


def _save_preview(event: Any, directory: Path) -> None:
    """Write a `Preview` event's picture as `<directory>/preview-<output>-<step>.png` (never over a file)."""
    import mediagen as mg

    if not isinstance(event, mg.Preview):
        return
    target = directory / f"preview-{event.index}-{event.step:04d}.png"
    if target.exists():
        return  # a preview is disposable; whatever is there already stays
    event.image.save(target)


_previews_opt = typer.Option(None, "--previews", help="Save a rough preview of each step here (local models).")
_model_opt = typer.Option(None, "--model", "-m", help="provider:model, an alias, or omit for the configured default.")
_n_opt = typer.Option(1, "-n", help="How many outputs.")
_seed_opt = typer.Option(None, "--seed", help="Seed of the first output.")
_out_opt = typer.Option(None, "--output", "-o", help="File (numbered when n > 1) or directory.")
_json_opt = typer.Option(False, "--json", help="Print one JSON object instead of paths.")
_opt_opt = typer.Option(None, "--option", help="Provider option key=value (value parsed as JSON when it can be).")
_timeout_opt = typer.Option(None, "--timeout", help="Deadline in seconds for the whole job.")
_strict_opt = typer.Option(False, "--strict", help="Fail instead of warning when a setting is not honoured.")
_steps_opt = typer.Option(None, "--steps", help="Denoising steps.")
_guidance_opt = typer.Option(None, "--guidance", help="Guidance scale.")
_neg_opt = typer.Option(None, "--negative", help="Negative prompt.")
_size_opt = typer.Option(None, "--size", help="WIDTHxHEIGHT, e.g. 512x512.")


@app.command()
def image(
    prompt: str = typer.Argument(..., help="What to draw."),
    model: Optional[str] = _model_opt,
    n: int = _n_opt,
    seed: Optional[int] = _seed_opt,
    size: Optional[str] = _size_opt,
    aspect_ratio: Optional[str] = typer.Option(None, "--aspect-ratio", help="W:H, e.g. 16:9."),
    image_in: Optional[str] = typer.Option(None, "--image", help="Start image (path or URL)."),
    mask: Optional[str] = typer.Option(None, "--mask", help="Inpainting mask (path or URL)."),
    strength: Optional[float] = typer.Option(None, "--strength", help="Image-to-image strength."),
    control_image: Optional[str] = typer.Option(None, "--control-image", help="ControlNet image."),
    control_model: Optional[str] = typer.Option(None, "--control-model", help="ControlNet model."),
    lora: Optional[list[str]] = typer.Option(None, "--lora", help="LoRA path[=scale], repeatable."),
    output_format: Optional[str] = typer.Option(None, "--format", help="png, jpeg or webp."),
    negative: Optional[str] = _neg_opt,
    steps: Optional[int] = _steps_opt,
    guidance: Optional[float] = _guidance_opt,
    option: Optional[list[str]] = _opt_opt,
    output: Optional[str] = _out_opt,
    as_json: bool = _json_opt,
    timeout: Optional[float] = _timeout_opt,
    strict: bool = _strict_opt,
    previews: Optional[str] = _previews_opt,
) -> None:
    """Generate images."""
    loras = []
    for item in lora or []:
        path, sep, scale = item.rpartition("=")
        loras.append({"path": path, "scale": float(scale)} if sep and _is_float(scale) else {"path": item})
    fields = {
        "prompt": prompt,
        "n": n,
        "seed": seed,
        **_parse_size(size),
        "aspect_ratio": aspect_ratio,
        "image": image_in,
        "mask": mask,
        "strength": strength,
        "control_image": control_image,
        "control_model": control_model,
        "loras": loras or None,
        "output_format": output_format,
        "negative_prompt": negative,
        "steps": steps,
        "guidance": guidance,
        "options": _parse_options(option) or None,
    }
    _generate("image", fields, model, output, as_json, timeout, strict, previews)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@app.command()
def video(
    prompt: Optional[str] = typer.Argument(None, help="What happens (optional with --image)."),
    model: Optional[str] = _model_opt,
    n: int = _n_opt,
    seed: Optional[int] = _seed_opt,
    size: Optional[str] = _size_opt,
    frames: Optional[int] = typer.Option(None, "--frames", help="Number of frames."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Seconds (instead of --frames)."),
    fps: Optional[float] = typer.Option(None, "--fps", help="Frames per second."),
    image_in: Optional[str] = typer.Option(None, "--image", help="First frame (image-to-video)."),
    negative: Optional[str] = _neg_opt,
    steps: Optional[int] = _steps_opt,
    guidance: Optional[float] = _guidance_opt,
    option: Optional[list[str]] = _opt_opt,
    output: Optional[str] = _out_opt,
    as_json: bool = _json_opt,
    timeout: Optional[float] = _timeout_opt,
    strict: bool = _strict_opt,
    previews: Optional[str] = _previews_opt,
) -> None:
    """Generate a video."""
    fields = {
        "prompt": prompt,
        "n": n,
        "seed": seed,
        **_parse_size(size),
        "frames": frames,
        "duration_s": duration,
        "fps": fps,
        "image": image_in,
        "negative_prompt": negative,
        "steps": steps,
        "guidance": guidance,
        "options": _parse_options(option) or None,
    }
    _generate("video", fields, model, output, as_json, timeout, strict, previews)


@app.command()
def audio(
    prompt: str = typer.Argument(..., help="What it sounds like (for speech: the text to speak)."),
    model: Optional[str] = _model_opt,
    kind: Optional[str] = typer.Option(None, "--kind", help="music, sound or speech."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Seconds."),
    voice: Optional[str] = typer.Option(None, "--voice", help="Speaker, for speech."),
    sample_rate: Optional[int] = typer.Option(None, "--sample-rate", help="Resample to this rate."),
    n: int = _n_opt,
    seed: Optional[int] = _seed_opt,
    negative: Optional[str] = _neg_opt,
    steps: Optional[int] = _steps_opt,
    guidance: Optional[float] = _guidance_opt,
    option: Optional[list[str]] = _opt_opt,
    output: Optional[str] = _out_opt,
    as_json: bool = _json_opt,
    timeout: Optional[float] = _timeout_opt,
    strict: bool = _strict_opt,
) -> None:
    """Generate music, sound effects or speech."""
    fields = {
        "prompt": prompt,
        "kind": kind,
        "duration_s": duration,
        "voice": voice,
        "sample_rate": sample_rate,
        "n": n,
        "seed": seed,
        "negative_prompt": negative,
        "steps": steps,
        "guidance": guidance,
        "options": _parse_options(option) or None,
    }
    _generate("audio", fields, model, output, as_json, timeout, strict)


@app.command()
def mesh(
    prompt: Optional[str] = typer.Argument(None, help="The object (optional with --image)."),
    model: Optional[str] = _model_opt,
    image_in: Optional[str] = typer.Option(None, "--image", help="Reconstruct this image (image-to-3D)."),
    fmt: str = typer.Option("glb", "--format", help="glb, obj or ply."),
    n: int = _n_opt,
    seed: Optional[int] = _seed_opt,
    steps: Optional[int] = _steps_opt,
    guidance: Optional[float] = _guidance_opt,
    option: Optional[list[str]] = _opt_opt,
    output: Optional[str] = _out_opt,
    as_json: bool = _json_opt,
    timeout: Optional[float] = _timeout_opt,
    strict: bool = _strict_opt,
) -> None:
    """Generate a 3D mesh."""
    fields = {
        "prompt": prompt,
        "image": image_in,
        "format": fmt,
        "n": n,
        "seed": seed,
        "steps": steps,
        "guidance": guidance,
        "options": _parse_options(option) or None,
    }
    _generate("mesh", fields, model, output, as_json, timeout, strict)


@app.command()
def backends(as_json: bool = _json_opt) -> None:
    """List providers, whether each is usable here, and why not."""
    rows = _backend_rows()
    if as_json:
        typer.echo(json.dumps(rows))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("provider", "usable", "modalities", "notes")
    for row in rows:
        ok = "[green]yes[/]" if row["usable"] else "[red]no[/]"
        table.add_row(
            row["provider"], ok, ", ".join(_modalities(row["tasks"])), row["reason"] or _state_line(row["state"])
        )
    Console().print(table)


@app.command()
def demo(
    output: str = typer.Option("mediagen-demo", "--output", "-o", help="Directory for the files."),
) -> None:
    """Build tiny random-weight models and generate one file per modality (offline)."""
    try:
        # The demo's tiny-model recipes live in the test kit, which apps do not install.
        from mediagen_testkit.demo import run_demo
    except ImportError:
        typer.echo(
            "mediagen demo needs the test kit (tiny-model recipes): from a clone, run `make demo`, "
            "or `pip install -e ./testkit`",
            err=True,
        )
        raise typer.Exit(EXIT_BAD_INPUT) from None

    typer.echo("mediagen demo: tiny random-weight models, so expect noise, not foxes.")
    written = run_demo(output, echo=typer.echo)
    if not written:
        typer.echo("nothing could be generated here: install the extras, e.g. pip install 'mediagen[all]'")
        raise typer.Exit(EXIT_FAILED)


@app.command()
def batch(
    path: Path = typer.Argument(..., help="JSONL file: one request per line.", exists=True, dir_okay=False),
    model: Optional[str] = _model_opt,
    output: str = typer.Option("batch-out", "--output", "-o", help="Directory for outputs and manifest.jsonl."),
    concurrency: int = typer.Option(4, "--concurrency", "-c", min=1, help="Lines run at once."),
    as_json: bool = _json_opt,
) -> None:
    """Run every line of a JSONL file; a re-run skips finished lines. Exit 1 if any line failed."""
    import asyncio

    import mediagen as mg

    from .batch import parse_lines, run_batch

    total = len(parse_lines(path))

    async def main() -> Any:
        async with mg.Client() as client:
            if as_json or not sys.stderr.isatty():
                return await run_batch(path, output, client=client, model=model, concurrency=concurrency)
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            with Progress("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
                task = bar.add_task(path.name, total=total)
                return await run_batch(
                    path,
                    output,
                    client=client,
                    model=model,
                    concurrency=concurrency,
                    on_line_done=lambda _n, _err: bar.advance(task),
                )

    report = asyncio.run(main())
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "done": report.done,
                    "skipped": report.skipped,
                    "failed": {str(k): v for k, v in sorted(report.failed.items())},
                    "files": [str(f) for f in report.files],
                }
            )
        )
    else:
        typer.echo(f"{len(report.done)} done, {len(report.skipped)} already done, {len(report.failed)} failed")
        for number, why in sorted(report.failed.items()):
            typer.echo(f"  line {number}: {why}", err=True)
    if report.failed:
        raise typer.Exit(EXIT_FAILED)


def _fail(exc: BaseException, code: int, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
    else:
        from rich.console import Console
        from rich.markup import escape

        Console(stderr=True).print(f"[red]error[/] ({type(exc).__name__}): {escape(str(exc))}", highlight=False)
    raise typer.Exit(code)


_MODALITY_OF_TASK = {
    "image": "image",
    "inpaint": "image",
    "controlnet": "image",
    "video": "video",
    "audio": "audio",
    "music": "audio",
    "sound": "audio",
    "speech": "audio",
    "3d": "3D",
}


def _modalities(tasks: list[str]) -> list[str]:
    found = {_MODALITY_OF_TASK[task.rsplit("-", 1)[-1]] for task in tasks}
    return [m for m in ("image", "video", "audio", "3D") if m in found]


def _backend_rows() -> list[dict[str, Any]]:
    """One row per registered provider: usable here or why not, what it serves, where it runs."""
    from ._config import load_config
    from ._registry import available_providers, get_backend_class

    settings = load_config().providers
    rows = []
    for name in available_providers():
        row: dict[str, Any] = {"provider": name, "usable": False, "tasks": [], "reason": "", "state": {}}
        try:
            cls = get_backend_class(name)
        except Exception as exc:  # an import failure is exactly what this command reports
            row["reason"] = str(exc).splitlines()[0]
            rows.append(row)
            continue
        row["tasks"] = sorted(cls.tasks)
        reason = cls.availability()
        row["usable"] = reason is None
        row["reason"] = reason or ""
        if reason is None:
            try:
                row["state"] = cls(**{k: v for k, v in settings.get(name, {}).items() if k != "policy"}).describe()
            except Exception as exc:  # a bad [providers.x] table is worth showing, not crashing on
                row["usable"], row["reason"] = False, f"settings in mediagen.toml: {exc}"
        rows.append(row)
    return rows


def _state_line(state: dict[str, Any]) -> str:
    parts = []
    if "device" in state:
        parts.append(f"device {state['device']}" + (f" ({state['dtype']})" if state.get("dtype") else ""))
    if "loaded" in state:
        parts.append(f"{len(state['loaded'])} model(s) loaded in this process")
    return "; ".join(parts)


def main() -> None:
    """Entry point of the `mediagen` script."""
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - interactive
        sys.exit(130)
