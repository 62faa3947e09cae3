"""Provenance: what made a file, written into the file itself.

The client puts a small dict on each artifact it returns, `artifact.metadata["provenance"]`:
prompt, negative prompt, model, provider, seed, steps, guidance and the mediagen version (turn it
off with `Client(provenance=False)` or per call). `Artifact.save()` writes it into the file, by
inserting bytes into the container where the format has a place for text (nothing is decoded or
re-encoded, so the pixels and samples stay bit for bit what the model made):

| format | where |
|---|---|
| PNG | a `tEXt` chunk with keyword `mediagen` (JSON) |
| JPEG | a `COM` segment `mediagen:<JSON>` |
| MP4, M4A, MOV | the `comment` tag, set by remuxing with ffmpeg (`-c copy`, streams untouched) |
| WAV | `ICMT` in a `LIST/INFO` chunk |
| GLB | `asset.extras.mediagen` in the JSON chunk |
| OBJ, PLY | a comment line |
| anything else | a sidecar file `<file>.mediagen.json` |

`read_provenance(path)` reads it back from any of these.

Examples:
    >>> res.artifacts[0].save("fox.png")  # doctest: +SKIP
    >>> mg.read_provenance("fox.png")["prompt"]  # doctest: +SKIP
    'a red fox in snow'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._embedding import SIDECAR_SUFFIX, embed, extract, read_provenance, sidecar_json, sidecar_path
from ._version import __version__

if TYPE_CHECKING:
    from .requests import Request
    from .results import Result

__all__ = [
    "SIDECAR_SUFFIX",
    "build_provenance",
    "stamp",
    "embed",
    "extract",
    "read_provenance",
    "sidecar_path",
    "sidecar_json",
]


def build_provenance(request: Request, provider: str, model: str, seed: int | None) -> dict[str, Any]:
    """The provenance of one output: what was asked, of which model, with which seed.

    Args:
        request: The request as the caller made it.
        provider: The provider that served it.
        model: The model that served it.
        seed: The seed of this output (`request.seed + i` for output `i`), if known.
    """
    return {
        "generator": "mediagen",
        "mediagen_version": __version__,
        "provider": provider,
        "model": model,
        "task": request.task,
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "seed": seed,
        "steps": request.steps,
        "guidance": request.guidance,
    }


def stamp(result: Result, request: Request) -> None:
    """Set `metadata["provenance"]` on each artifact of `result` (output `i` gets `result.seeds[i]`)."""
    for index, artifact in enumerate(result.artifacts):
        seed = result.seeds[index] if index < len(result.seeds) else artifact.metadata.get("seed")
        artifact.metadata["provenance"] = build_provenance(
            request, result.provider, result.model, seed if isinstance(seed, int) else None
        )
