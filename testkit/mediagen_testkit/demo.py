"""`mediagen demo`: tiny random-weight models, one real file per modality, no network.

The models are random, so the pictures are noise; what the demo shows is the whole path working
on this machine: a pipeline directory loaded by the real loaders, run on the local device, written
as a file that other programs open.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["run_demo"]


def run_demo(
    out_dir: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Build the tiny models once (in the cache), then generate one artifact per modality.

    Args:
        out_dir: Where the files go.
        cache_dir: Where tiny models are kept (default: the mediagen cache directory).
        echo: Where progress lines go.

    Returns:
        Modality (and "video+audio") → the file written. A modality whose backend is not
        installed here is skipped with a line saying why.
    """
    import mediagen as mg
    from mediagen_testkit.tiny import ensure_tiny_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    def model(name: str, provider: str = "diffusers") -> str:
        echo(f"  preparing tiny model {name!r} ...")
        return f"{provider}:{ensure_tiny_model(name, cache_dir)}"

    def step(label: str, make: Callable[[mg.SyncClient], Any], filename: str) -> Any:
        try:
            artifact = make(client)
        except (ImportError, mg.MediagenError) as exc:
            echo(f"{label}: skipped ({type(exc).__name__}: {str(exc).splitlines()[0]})")
            return None
        path = artifact.save(out / filename, overwrite=True)  # the demo remakes its own files
        written[label] = path
        echo(f"{label}: {path}")
        return artifact

    with mg.SyncClient() as client:
        step(
            "image",
            lambda c: c.image("a red fox in snow", model=model("sd"), width=32, height=32, steps=2, seed=7).artifacts[
                0
            ],
            "fox.png",
        )
        video = step(
            "video",
            lambda c: c.video(
                "waves on a beach", model=model("wan-t2v"), width=16, height=16, frames=9, fps=8, steps=2, seed=7
            ).artifacts[0],
            "waves.mp4",
        )
        step(
            "mesh",
            lambda c: c.mesh("a wooden chair", model=model("shap-e"), steps=2, seed=7, format="glb").artifacts[0],
            "chair.glb",
        )
        audio = step(
            "audio",
            lambda c: c.audio(
                "calm piano", kind="music", duration_s=1.0, seed=7, model=model("musicgen", "transformers")
            ).artifacts[0],
            "piano.wav",
        )
        step(
            "speech",
            lambda c: c.audio(
                "hello from mediagen", kind="speech", seed=7, model=model("vits", "transformers")
            ).artifacts[0],
            "hello.wav",
        )
        if video is not None and audio is not None and hasattr(mg, "mux"):
            muxed = mg.mux(video, audio)
            written["video+audio"] = muxed.save(out / "waves-with-sound.mp4", overwrite=True)
            echo(f"video+audio: {written['video+audio']}")
    return written
