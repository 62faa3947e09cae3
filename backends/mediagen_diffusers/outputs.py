"""Outputs: what a pipeline call returns becomes `mg.Image`, `mg.Video` and `mg.Mesh` artifacts.

Two halves. `collect` runs on the device worker right after the call: it turns the pipeline's output
object into plain per-output values (PIL images, frame arrays, mesh arrays) with no torch tensors left,
so that nothing on the event loop touches the device. `to_artifacts` then wraps them, on the event
loop or (for meshes, whose encoding takes a while) in a helper thread.

Shap-E meshes come out lying on their side (the diffusers docs show them "from the bottom
viewpoint"); they are turned upright, with their vertex colours, and encoded in the request's format.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from mediagen import Artifact, Image, Mesh, Video

from .plan import Output

__all__ = ["collect", "safety_flags", "to_artifacts", "MESH_MEDIA_TYPES", "IMAGE_FORMATS"]

MESH_MEDIA_TYPES = {"glb": "model/gltf-binary", "obj": "model/obj", "ply": "model/ply"}
IMAGE_FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp")}


def collect(result: Any, kind: str) -> list[Any]:
    """The pipeline's outputs as plain values, one per output, in order (on the device worker).

    Args:
        result: What the pipeline returned (`return_dict=True`).
        kind: `"image"`, `"video"` or `"mesh"`.

    Returns:
        PIL images; `T x H x W x 3` float arrays in [0, 1]; or `(vertices, faces, colours)` arrays.
    """
    if kind == "image":
        return list(result.images)
    if kind == "audio":
        from .audio import collect_audio

        return collect_audio(result)
    if kind == "video":
        frames = result.frames
        if hasattr(frames, "detach"):  # a tensor (output_type="pt"), channels first
            frames = frames.detach().float().cpu().permute(0, 1, 3, 4, 2).numpy()
        return [_frame_array(video) for video in frames]
    return [_mesh_arrays(mesh) for mesh in result.images]


def _frame_array(video: Any) -> Any:
    import numpy as np

    if isinstance(video, list):  # a list of PIL frames
        return np.stack([np.asarray(frame) for frame in video])
    return np.asarray(video)


def _mesh_arrays(mesh: Any) -> tuple[Any, Any, Any | None]:
    import numpy as np

    vertices = mesh.verts.detach().float().cpu().numpy()
    faces = mesh.faces.detach().cpu().numpy().astype(np.int64)
    channels = getattr(mesh, "vertex_channels", None) or {}
    colours = None
    if all(c in channels for c in "RGB"):
        colours = np.stack([channels[c].detach().float().cpu().numpy() for c in "RGB"], axis=1)
    return vertices, faces, colours


def safety_flags(result: Any, count: int) -> list[bool | None]:
    """Per output, whether the pipeline's safety checker flagged it; None where it has no checker.

    Stable Diffusion-style pipelines with a `safety_checker` return `nsfw_content_detected` (and a
    blank image in place of each flagged one); the flags are kept, never dropped.
    """
    flags = getattr(result, "nsfw_content_detected", None)
    if not isinstance(flags, (list, tuple)) or len(flags) != count:
        return [None] * count
    return [None if flag is None else bool(flag) for flag in flags]


def to_artifacts(
    values: Sequence[Any], output: Output, seeds: Sequence[int], *, nsfw: Sequence[bool | None] | None = None
) -> list[Artifact]:
    """Wrap collected values as artifacts, each tagged with its seed (meshes: blocking, use a thread).

    Args:
        values: What `collect` returned for one request.
        output: What the request asked the outputs to be.
        seeds: The seed of each output.
        nsfw: The safety checker's flag of each output (`safety_flags`); kept as
            `metadata["nsfw_content_detected"]` where the pipeline has a checker.
    """
    artifacts: list[Artifact] = []
    flags = list(nsfw) if nsfw is not None else [None] * len(values)
    for value, seed, flag in zip(values, seeds, flags, strict=True):
        metadata: dict[str, Any] = {"seed": seed}
        if flag is not None:
            metadata["nsfw_content_detected"] = flag
        if output.kind == "image":
            artifacts.append(_image(value, output.format, metadata))
        elif output.kind == "video":
            artifacts.append(Video.from_frames(value, fps=output.fps or 8.0, metadata=metadata))
        elif output.kind == "audio":
            from .audio import audio_artifact

            artifacts.append(audio_artifact(value, output, metadata))
        else:
            artifacts.append(_mesh(value, output.format or "glb", metadata))
    return artifacts


def _image(pil: Any, fmt: str | None, metadata: dict[str, Any]) -> Image:
    if fmt is None:
        return Image.from_pil(pil, metadata=metadata)
    codec, media_type = IMAGE_FORMATS[fmt]
    buffer = io.BytesIO()
    (pil.convert("RGB") if codec == "JPEG" else pil).save(buffer, format=codec)
    return Image(buffer.getvalue(), media_type=media_type, metadata=metadata)


def _mesh(arrays: tuple[Any, Any, Any | None], fmt: str, metadata: dict[str, Any]) -> Mesh:
    import numpy as np
    import trimesh

    transformations: Any = trimesh.transformations
    vertices, faces, colours = arrays
    # Shap-E's frame has z up and looks from below; turn it so that +y is up, as viewers expect.
    upright = transformations.rotation_matrix(-np.pi / 2, [1, 0, 0])[:3, :3]
    vertices = vertices @ upright.T
    vertex_colors = None
    if colours is not None:
        vertex_colors = (np.clip(colours, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, vertex_colors=vertex_colors, process=False)
    data = mesh.export(file_type=fmt)
    payload = data.encode() if isinstance(data, str) else bytes(data)
    return Mesh(payload, media_type=MESH_MEDIA_TYPES[fmt], metadata=metadata)
