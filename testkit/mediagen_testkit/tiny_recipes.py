"""Tiny random-weight pipelines, one recipe each: the building blocks behind `mediagen_testkit.tiny`.

Each `build_*` writes a real pipeline directory (`save_pretrained`) with small configs and seeded
weights. `mediagen_testkit.tiny` names them, caches them and builds them on demand, together with
the other families' recipes in `mediagen_testkit.tiny_families`.
"""

# diffusers and transformers are mostly unannotated; calling into them is expected here.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import uuid
from collections.abc import Callable, Iterator
from typing import Any

__all__ = [
    "clip_tokenizer",
    "sd_scheduler",
    "MUSICGEN_SAMPLING_RATE",
    "STABLE_AUDIO_SAMPLING_RATE",
    "TINY_MODELS_VERSION",
    "wan_text_encoder",
    "wan_transformer",
    "wan_vae",
    "VITS_SAMPLING_RATE",
    "build_audioldm2",
    "build_controlnet",
    "build_lora",
    "build_musicgen",
    "build_sd",
    "build_shap_e",
    "build_shap_e_img2img",
    "build_stable_audio",
    "build_svd",
    "build_vits",
    "build_wan_t2v",
    "marching_cubes_table",
]

#: Bumped whenever a recipe changes, so that caches built by an older recipe are not reused.
TINY_MODELS_VERSION = 3


_PIPELINE_MARKER = "model_index.json"
_MODEL_MARKER = "config.json"
_LORA_MARKER = "pytorch_lora_weights.safetensors"

# Output sampling rates. Stable Audio and MusicGen run far below their real 44.1/32 kHz: tests care about
# shapes and plumbing, and short arrays keep the decoders fast. VITS keeps MMS-TTS's 16 kHz, which costs
# nothing since its length follows the (random) predicted durations anyway.
STABLE_AUDIO_SAMPLING_RATE = 4000
MUSICGEN_SAMPLING_RATE = 8000
VITS_SAMPLING_RATE = 16000


# --------------------------------------------------------------------------------------------------------
# Directory handling
# --------------------------------------------------------------------------------------------------------


def _build_atomically(path: str | os.PathLike[str], marker: str, write: Callable[[pathlib.Path], None]) -> pathlib.Path:
    """Run ``write`` into a temporary sibling directory and rename it to ``path``.

    Args:
        path: The final directory.
        marker: A file whose presence in ``path`` means the model is complete.
        write: Writes the model into the directory it is given.

    Returns:
        The final directory.

    Raises:
        FileExistsError: ``path`` exists, is not empty and has no ``marker`` (refusing to overwrite it).
    """
    target = pathlib.Path(path).expanduser().absolute()
    if (target / marker).is_file():
        return target
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} exists and does not hold a model ({marker} missing); not overwriting it")
    target.parent.mkdir(parents=True, exist_ok=True)
    # A unique name per attempt, so concurrent builders never write into each other's directory.
    tmp = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        write(tmp)
        if not (tmp / marker).is_file():
            raise RuntimeError(f"builder for {target.name} did not write {marker}")
        with contextlib.suppress(OSError):
            target.rmdir()  # only succeeds for an empty directory, e.g. one made by the caller
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished first: its complete model is as good as ours.
            if (target / marker).is_file():
                return target
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def _build_lock(lock_path: pathlib.Path) -> Iterator[None]:
    """Hold an advisory inter-process lock, where the platform has one.

    The lock only avoids duplicated work; correctness comes from the atomic rename in
    :func:`_build_atomically`, so platforms without ``fcntl`` simply skip it.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------------------
# Tokenizers from an in-memory vocabulary (no hub download)
# --------------------------------------------------------------------------------------------------------

# Characters the T5 vocabulary knows; anything else maps to <unk>, which is fine for tests.
_TEXT_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"-()/&+"


def sd_scheduler() -> Any:
    """The DDIM schedule of Stable Diffusion 1.x (with `steps_offset=1`, which the test recipes omit)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def clip_tokenizer() -> Any:
    """A CLIP tokenizer that encodes any text byte by byte.

    Every byte-level character is in the vocabulary (alone and as a word end ``</w>``), so no merges are
    needed and no text is ever unknown. Ids: ``<|startoftext|>`` 0, ``<|endoftext|>`` 1, 514 ids in all.
    """
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in sorted(ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    for char in sorted(ByteLevel.alphabet()):
        vocab[char + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _t5_tokenizer(model_max_length: int = 512) -> Any:
    """A T5 (Unigram) tokenizer over single characters, with T5's special ids ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2."""
    from transformers import T5Tokenizer

    vocab: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(char, -3.0) for char in _TEXT_CHARS]
    vocab += [("\u2581" + char, -3.5) for char in _TEXT_CHARS]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=model_max_length)


def _clip_image_processor(**kwargs: Any) -> Any:
    """A CLIP image processor, preferring the PIL backend that works without torchvision.

    transformers 5 falls back to the PIL backend anyway when torchvision is missing, with a warning and a
    different class name in ``model_index.json`` depending on the machine; asking for it directly keeps
    the saved directory the same everywhere.
    """
    import transformers

    processor_class = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return processor_class(**kwargs)


def _vits_vocab() -> dict[str, int]:
    """A character vocabulary in the shape MMS-TTS checkpoints ship (lower-case letters, digits, punctuation)."""
    vocab = {"<pad>": 0, "<unk>": 1, " ": 2}
    for char in "abcdefghijklmnopqrstuvwxyz0123456789'-.,!?":
        vocab[char] = len(vocab)
    return vocab


# --------------------------------------------------------------------------------------------------------
# Image: Stable Diffusion 1.x, ControlNet, LoRA
# --------------------------------------------------------------------------------------------------------


def build_sd(path: str | os.PathLike[str]) -> pathlib.Path:
    """Build a tiny Stable Diffusion 1.x-style pipeline.

    UNet (4/8 channels, one cross-attention block), a 2-block VAE (scale factor 2, so 32x32 px images use
    16x16 latents), a 2-layer CLIP text encoder with a byte-level tokenizer and DDIM. No safety checker.
    The UNet's ``sample_size`` of 16 makes 32x32 px the default size. Works with
    ``AutoPipelineForText2Image``, ``AutoPipelineForImage2Image`` and ``AutoPipelineForInpainting``
    (directly or through ``from_pipe``).

    Args:
        path: Directory to write (parents are created). Left as is if it already holds a pipeline.

    Returns:
        The pipeline directory.
    """

    def write(out: pathlib.Path) -> None:
        import torch
        from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            block_out_channels=(4, 8),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=8,
            attention_head_dim=2,
            norm_num_groups=2,
        )
        torch.manual_seed(0)
        vae = AutoencoderKL(
            block_out_channels=(4, 8),
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            latent_channels=4,
            norm_num_groups=2,
            sample_size=32,
        )
        torch.manual_seed(0)
        # eos_token_id must not be 2: that value switches CLIP to legacy "argmax id" pooling, which is
        # wrong for this vocabulary where <|endoftext|> is id 1.
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=1,
                hidden_size=8,
                intermediate_size=16,
                num_attention_heads=2,
                num_hidden_layers=2,
                projection_dim=8,
                vocab_size=1000,
                max_position_embeddings=77,
            )
        ).eval()
        scheduler = sd_scheduler()
        pipe: Any = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=clip_tokenizer(),
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(out)

    return _build_atomically(path, _PIPELINE_MARKER, write)


def _load_sd_unet(sd_path: str | os.PathLike[str]) -> Any:
    """Load the UNet of the tiny SD pipeline at ``sd_path``, building the pipeline first if it is missing."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(build_sd(sd_path), subfolder="unet")


def build_controlnet(path: str | os.PathLike[str], sd_path: str | os.PathLike[str]) -> pathlib.Path:
    """Build a tiny ``ControlNetModel`` that matches the tiny SD UNet at ``sd_path``.

    The conditioning embedding downsamples by 2 (two channel stages), matching the VAE scale factor of the
    tiny SD, so control images have the size of the generated image. ControlNet's zero-initialised
    convolutions (conditioning embedding output and residual outputs) get random weights instead, large
    enough that the control image visibly changes a 2-step output (a test can check that it is used).

    Args:
        path: Directory to write (``config.json`` + weights).
        sd_path: The tiny SD pipeline (built there first if missing).

    Returns:
        The ControlNet model directory.
    """

    def write(out: pathlib.Path) -> None:
        import torch
        from diffusers import ControlNetModel

        unet = _load_sd_unet(sd_path)
        torch.manual_seed(0)
        controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8))
        torch.manual_seed(0)
        with torch.no_grad():
            zero_initialised = [
                controlnet.controlnet_cond_embedding.conv_out,
                *controlnet.controlnet_down_blocks,
                controlnet.controlnet_mid_block,
            ]
            for block in zero_initialised:
                block.weight.normal_(std=1.0)
                block.bias.zero_()
        controlnet.save_pretrained(out)

    return _build_atomically(path, _MODEL_MARKER, write)


def build_lora(path: str | os.PathLike[str], sd_path: str | os.PathLike[str]) -> pathlib.Path:
    """Build a LoRA for the tiny SD UNet at ``sd_path``.

    Rank-4 adapters on the attention projections (``to_q``, ``to_k``, ``to_v``, ``to_out.0``). peft
    initialises the B matrices to zero (a no-op adapter); here they are random, so loading the LoRA
    changes the output and tests can see it. Saved with ``StableDiffusionPipeline.save_lora_weights`` as
    ``pytorch_lora_weights.safetensors``, loadable with ``pipe.load_lora_weights(path, adapter_name=...)``.

    Args:
        path: Directory to write.
        sd_path: The tiny SD pipeline (built there first if missing).

    Returns:
        The LoRA directory.
    """

    def write(out: pathlib.Path) -> None:
        import torch
        from diffusers import StableDiffusionPipeline
        from diffusers.utils.state_dict_utils import convert_state_dict_to_diffusers
        from peft import LoraConfig, get_peft_model_state_dict

        unet = _load_sd_unet(sd_path)
        config = LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
        torch.manual_seed(0)
        unet.add_adapter(config)
        torch.manual_seed(0)
        with torch.no_grad():
            for name, param in unet.named_parameters():
                if "lora_B" in name:
                    param.normal_(std=0.5)
        layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
        StableDiffusionPipeline.save_lora_weights(out, unet_lora_layers=layers, safe_serialization=True)

    return _build_atomically(path, _LORA_MARKER, write)


# --------------------------------------------------------------------------------------------------------
# Video: Wan 2.1 text-to-video, Stable Video Diffusion image-to-video
# --------------------------------------------------------------------------------------------------------


def wan_text_encoder(tokenizer: Any) -> Any:
    """A 2-layer UMT5 encoder, as the Wan checkpoints use, reading `tokenizer`'s ids."""
    import torch
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    return UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=32,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    ).eval()


def wan_vae() -> Any:
    """A Wan VAE of width 3: 8x spatial and 4x temporal compression to 16 channels."""
    import torch
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    return AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )


def wan_transformer(in_channels: int, image_dim: int | None = None, *, seed: int = 0) -> Any:
    """A 2-layer Wan transformer; `image_dim` is the width of CLIP image embeddings it reads, if any."""
    import torch
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=in_channels,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
        image_dim=image_dim,
    )


def build_wan_t2v(path: str | os.PathLike[str]) -> pathlib.Path:
    """Build a tiny Wan 2.1 text-to-video pipeline (``WanPipeline``).

    A 2-layer ``WanTransformer3DModel``, a small ``AutoencoderKLWan`` (8x spatial and 4x temporal
    compression, so ``num_frames`` must be ``4k+1``, e.g. 5 or 9, and sizes multiples of 16), a tiny
    ``UMT5EncoderModel`` (as the real checkpoints use) with a character-level T5 tokenizer, and the
    flow-matching Euler scheduler.

    Args:
        path: Directory to write.

    Returns:
        The pipeline directory.
    """

    def write(out: pathlib.Path) -> None:
        from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

        tokenizer = _t5_tokenizer(model_max_length=512)
        pipe: Any = WanPipeline(
            tokenizer=tokenizer,
            text_encoder=wan_text_encoder(tokenizer),
            vae=wan_vae(),
            scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
            transformer=wan_transformer(16),
        )
        pipe.save_pretrained(out)

    return _build_atomically(path, _PIPELINE_MARKER, write)


def build_svd(path: str | os.PathLike[str]) -> pathlib.Path:
    """Build a tiny Stable Video Diffusion image-to-video pipeline.

    ``UNetSpatioTemporalConditionModel`` and ``AutoencoderKLTemporalDecoder`` (32 channels: their
    group norms are fixed at 32 groups), a 2-layer ``CLIPVisionModelWithProjection`` at CLIP's 224 px input
    (the pipeline always resizes PIL images to 224) with 32 px patches, and the Karras Euler scheduler of
    the real checkpoints. No tokenizer. Default ``num_frames`` is 4; sizes must be multiples of 4.

    Args:
        path: Directory to write.

    Returns:
        The pipeline directory.
    """

    def write(out: pathlib.Path) -> None:
        import torch
        from diffusers import (
            AutoencoderKLTemporalDecoder,
            EulerDiscreteScheduler,
            StableVideoDiffusionPipeline,
            UNetSpatioTemporalConditionModel,
        )
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        torch.manual_seed(0)
        unet = UNetSpatioTemporalConditionModel(
            sample_size=16,
            in_channels=8,
            out_channels=4,
            block_out_channels=(32, 32),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
            up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
            cross_attention_dim=32,
            num_attention_heads=(4, 4),
            projection_class_embeddings_input_dim=3 * 32,
            addition_time_embed_dim=32,
            num_frames=4,
        )
        torch.manual_seed(0)
        vae = AutoencoderKLTemporalDecoder(
            block_out_channels=(32, 32),
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            latent_channels=4,
            layers_per_block=1,
            sample_size=32,
        )
        torch.manual_seed(0)
        image_encoder = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=32,
                projection_dim=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=37,
                image_size=224,
                patch_size=32,
            )
        ).eval()
        feature_extractor = _clip_image_processor(crop_size=224, size={"shortest_edge": 224})
        scheduler = EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            interpolation_type="linear",
            num_train_timesteps=1000,
            prediction_type="v_prediction",
            sigma_max=700.0,
            sigma_min=0.002,
            steps_offset=1,
            timestep_spacing="leading",
            timestep_type="continuous",
            use_karras_sigmas=True,
        )
        pipe: Any = StableVideoDiffusionPipeline(
            vae=vae,
            image_encoder=image_encoder,
            unet=unet,
            scheduler=scheduler,
            feature_extractor=feature_extractor,
        )
        pipe.save_pretrained(out)

    return _build_atomically(path, _PIPELINE_MARKER, write)


# --------------------------------------------------------------------------------------------------------
# 3D: Shap-E (text-to-3D, image-to-3D)
# --------------------------------------------------------------------------------------------------------

# Corner ``i`` of a marching-cubes cell sits at offset (i & 1, i >> 1 & 1, i >> 2 & 1): bit 0 is x, bit 1 is
# y, bit 2 is z. This is the bit layout diffusers' MeshDecoder uses for its per-cell bitmask.
_CUBE_CORNERS: tuple[tuple[int, int, int], ...] = tuple((i & 1, (i >> 1) & 1, (i >> 2) & 1) for i in range(8))


def _cube_edge_index(a: int, b: int) -> int:
    """Number the cell edge between corners ``a`` and ``b`` as diffusers' ``_create_flat_edge_indices`` does.

    Edges 0-3 run along x (ordered by y, then z), 4-7 along y (by x, then z), 8-11 along z (by x, then y).
    """
    pa, pb = _CUBE_CORNERS[a], _CUBE_CORNERS[b]
    axis = next(k for k in range(3) if pa[k] != pb[k])
    x, y, z = pa
    if axis == 0:
        return y + 2 * z
    if axis == 1:
        return 4 + x + 2 * z
    return 8 + x + 2 * y


def _cube_faces() -> list[list[int]]:
    """The six cell faces, each as its four corners counter-clockwise seen from outside the cell."""
    faces = []
    for axis in range(3):
        u, v = (axis + 1) % 3, (axis + 2) % 3
        for side in (0, 1):
            ring = []
            for du, dv in ((0, 0), (1, 0), (1, 1), (0, 1)):
                point = [0, 0, 0]
                point[axis], point[u], point[v] = side, du, dv
                ring.append(point[0] | point[1] << 1 | point[2] << 2)
            # (u, v) counter-clockwise has normal +axis; the low face's outward normal is -axis.
            faces.append(ring if side == 1 else ring[::-1])
    return faces


def _polygon_triangulations(polygon: list[int]) -> Iterator[list[tuple[int, int, int]]]:
    """Yield every triangulation of a polygon (given as its vertex cycle), each triangle wound like it."""
    if len(polygon) < 3:
        yield []
        return
    first, last = polygon[0], polygon[-1]
    for k in range(1, len(polygon) - 1):
        for left in _polygon_triangulations(polygon[: k + 1]):
            for right in _polygon_triangulations(polygon[k:]):
                yield [(first, polygon[k], last), *left, *right]


def _triangulate_loop(loop: list[int], face_edge_sets: list[frozenset[int]]) -> list[tuple[int, int, int]]:
    """Triangulate one surface loop without any diagonal that lies in a cell face.

    A diagonal between two vertices on the same cell face could be chosen by the neighbouring cell as
    well, giving an edge shared by four triangles (non-manifold). Diagonals through the cell's interior
    belong to this cell alone, so avoiding face diagonals keeps the mesh a closed 2-manifold.
    """
    ring = {frozenset((loop[i], loop[(i + 1) % len(loop)])) for i in range(len(loop))}

    def face_diagonals(triangles: list[tuple[int, int, int]]) -> int:
        sides = {frozenset(pair) for t in triangles for pair in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0]))}
        return sum(1 for side in sides - ring for face in face_edge_sets if side <= face)

    best = min(_polygon_triangulations(loop), key=face_diagonals)
    if face_diagonals(best):  # pragma: no cover - cannot happen for cube cells; kept as a guard
        raise AssertionError(f"no manifold triangulation for loop {loop}")
    return best


def marching_cubes_table() -> tuple[Any, Any]:
    """Derive the 256-case marching-cubes lookup table in the exact format of diffusers' ``MeshDecoder``.

    Why this exists: ``MeshDecoder`` registers its lookup tables as zero buffers; the real values only
    ship inside the pretrained Shap-E weights. A randomly initialised Shap-E therefore cannot produce a
    mesh (``output_type="mesh"`` fails on an empty ``torch.cat``). The tiny Shap-E builders copy this
    table into the decoder before saving, and the buffers persist through ``save_pretrained``. The table
    is derived from the cube's topology rather than pasted in:

    1. For each of the 256 inside/outside corner patterns (bit ``i`` set: corner ``i`` is inside, i.e. the
       field is > 0 there), walk each cell face counter-clockwise (seen from outside). Every run of inside
       corners on a face is cut off by one segment from the edge where the run is left ("exit" edge) to the
       edge where it was entered. On an ambiguous face (two diagonal inside corners) the two inside
       corners are therefore always separated. The rule depends only on the face's own corners, so the
       two cells sharing a face cut it identically: the mesh has no cracks.
    2. Every edge with a sign change is the exit edge of exactly one face and the entry edge of the other,
       so the segments chain into closed, consistently oriented loops (the boundary of the inside region
       on the cell surface).
    3. Each loop is reversed, so that faces wind counter-clockwise seen from outside the surface (normals
       point out of the shape, ``trimesh`` reports a positive volume), and triangulated without
       diagonals in cell faces (see :func:`_triangulate_loop`), which keeps the mesh a closed manifold.

    Every case needs at most 5 triangles, which is what the buffer shape allows.

    Returns:
        ``(cases, masks)``: ``cases`` is a ``(256, 5, 3)`` long tensor of cell-edge indices (0-11, numbered
        as in diffusers' ``_create_flat_edge_indices``) per triangle slot, ``masks`` a ``(256, 5)`` bool
        tensor marking the slots in use.
    """
    import torch

    cases = torch.zeros(256, 5, 3, dtype=torch.long)
    masks = torch.zeros(256, 5, dtype=torch.bool)
    for case, triangles in enumerate(_marching_cubes_triangles()):
        if len(triangles) > cases.shape[1]:  # pragma: no cover - cannot happen with this construction
            raise AssertionError(f"case {case} needs {len(triangles)} triangles")
        for slot, triangle in enumerate(triangles):
            cases[case, slot] = torch.tensor(triangle, dtype=torch.long)
            masks[case, slot] = True
    return cases, masks


def _marching_cubes_triangles() -> list[list[tuple[int, int, int]]]:
    """The triangles of each of the 256 cases, as triples of cell-edge indices (see :func:`marching_cubes_table`)."""
    faces = _cube_faces()
    face_edge_sets = [frozenset(_cube_edge_index(r[i], r[(i + 1) % 4]) for i in range(4)) for r in faces]
    table: list[list[tuple[int, int, int]]] = []
    for case in range(256):
        inside = [bool(case >> i & 1) for i in range(8)]
        next_edge: dict[int, int] = {}
        for ring in faces:
            for i in range(4):
                a, b = ring[i], ring[(i + 1) % 4]
                if inside[a] and not inside[b]:
                    j = i
                    while inside[ring[(j - 1) % 4]]:
                        j -= 1
                    next_edge[_cube_edge_index(a, b)] = _cube_edge_index(ring[(j - 1) % 4], ring[j % 4])
        triangles: list[tuple[int, int, int]] = []
        visited: set[int] = set()
        for start in sorted(next_edge):
            if start in visited:
                continue
            loop = [start]
            visited.add(start)
            edge = next_edge[start]
            while edge != start:
                loop.append(edge)
                visited.add(edge)
                edge = next_edge[edge]
            # The loop runs counter-clockwise around the inside region seen from outside the cell, which
            # puts its right-hand normal towards the inside; reverse it for outward normals.
            loop.reverse()
            triangles.extend(_triangulate_loop(loop, face_edge_sets))
        table.append(triangles)
    return table


def _install_marching_cubes_table(mesh_decoder: Any) -> None:
    """Copy :func:`marching_cubes_table` into a ``MeshDecoder``'s ``cases``/``masks`` buffers."""
    import torch

    cases, masks = marching_cubes_table()
    with torch.no_grad():
        mesh_decoder.cases.copy_(cases)
        mesh_decoder.masks.copy_(masks)


# Shap-E encodes a position as [x, y, z, sin(2^k x_d) for k, d, cos(2^k x_d) for k, d] with k in 0..14:
# cos(x), cos(y), cos(z) sit right after the 3 raw coordinates and the 45 sines.
_SHAP_E_COS_COLUMNS = (48, 49, 50)
# Inside the shape where cos(x) + cos(y) + cos(z) > 2.8: a blob of radius ~0.63 in the [-1, 1]^3 volume.
_SHAP_E_BLOB_THRESHOLD = 2.8
# How much the generated latent may perturb the designed weights (relative to a unit-scale projection).
_SHAP_E_LATENT_INFLUENCE = 1e-3


def _shape_renderer_field(renderer: Any) -> None:
    """Give the random renderer a smooth signed-distance field: a slightly latent-dependent blob.

    With random weights the renderer's SDF is high-frequency noise, and marching cubes on diffusers'
    fixed 128^3 grid turns it into ~2 million vertices (hundreds of MB, slow to export). Channel 0 of
    the MLP is wired instead to carry ``cos x + cos y + cos z - 2.8`` through SiLU layers (monotonic and
    sign-preserving on this range), so the surface is one closed blob of a few thousand faces. The
    first layers' weights are predicted from the latent as ``LayerNorm(W z) * gamma + beta + b``: the
    design goes into ``b`` and ``gamma`` is tiny, so the mesh still depends (a little) on the prompt.
    The other output channels (density, colours) keep their random weights.
    """
    import torch

    mlp = renderer.mlp.mlp
    projections = renderer.params_proj.projections
    with torch.no_grad():
        for index, name in enumerate(renderer.params_proj.config.param_names):
            projection = projections[name.replace(".", "__")]
            designed = projection.proj.bias.view(projection.vectors, projection.channels)
            designed[0].zero_()
            if index == 0:
                designed[0, list(_SHAP_E_COS_COLUMNS)] = 1.0
            else:
                designed[0, 0] = 1.0
            projection.norm.weight.fill_(_SHAP_E_LATENT_INFLUENCE)
            projection.norm.bias.zero_()
            mlp[index].weight.copy_(designed)
            mlp[index].bias[0] = -_SHAP_E_BLOB_THRESHOLD if index == 0 else 0.0
        # The remaining layers are not predicted from the latent: pass channel 0 through to the SDF
        # output (index 0 of the final layer), scaled up so tanh does not flatten it near the surface.
        for layer in mlp[len(renderer.params_proj.config.param_names) :]:
            layer.weight[0].zero_()
            layer.weight[0, 0] = 8.0 if layer is mlp[-1] else 1.0
            layer.bias[0] = 0.0


def _shap_e_prior_and_renderer() -> tuple[Any, Any, Any]:
    """The prior, renderer (with a real marching-cubes table) and scheduler shared by both Shap-E builders."""
    import torch
    from diffusers import HeunDiscreteScheduler, PriorTransformer
    from diffusers.pipelines.shap_e.renderer import ShapERenderer

    torch.manual_seed(0)
    prior = PriorTransformer(
        num_attention_heads=2,
        attention_head_dim=16,
        embedding_dim=16,
        num_embeddings=32,
        embedding_proj_dim=16,
        time_embed_dim=64,
        num_layers=1,
        clip_embed_dim=32,
        additional_embeddings=0,
        time_embed_act_fn="gelu",
        norm_in_type="layer",
        embedding_proj_norm_type="layer",
        encoder_hid_proj_type=None,
        added_emb_type=None,
    )
    torch.manual_seed(0)
    # The MLP's first four weight matrices are predicted from the latent (param_shapes); the decoder
    # queries it on a fixed 128^3 grid for meshes, so it is kept as small as its layout allows.
    renderer = ShapERenderer(
        param_shapes=((8, 93), (8, 8), (8, 8), (8, 8)),
        d_latent=16,
        d_hidden=8,
        n_output=12,
        n_hidden_layers=4,
        background=(0.1, 0.1, 0.1),
    )
    _install_marching_cubes_table(renderer.mesh_decoder)
    _shape_renderer_field(renderer)
    scheduler = HeunDiscreteScheduler(
        beta_schedule="exp",
        num_train_timesteps=1024,
        prediction_type="sample",
        use_karras_sigmas=True,
        clip_sample=True,
        clip_sample_range=1.0,
    )
    return prior, renderer, scheduler


def build_shap_e(path: str | os.PathLike[str]) -> pathlib.Path:
    """Build a tiny Shap-E text-to-3D pipeline (``ShapEPipeline``) that can output meshes.

    Mesh decoding still evaluates the renderer on diffusers' fixed 128^3 grid (a few seconds on a CPU);
    ``output_type="latent"`` is instant and ``"np"`` renders 20 views of ``frame_size`` px.

    Args:
        path: Directory to write.

    Returns:
        The pipeline directory.
    """

    def write(out: pathlib.Path) -> None:
        import torch
        from diffusers import ShapEPipeline
        from transformers import CLIPTextConfig, CLIPTextModelWithProjection

        prior, renderer, scheduler = _shap_e_prior_and_renderer()
        torch.manual_seed(0)
        text_encoder = CLIPTextModelWithProjection(
            CLIPTextConfig(
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=1,
                hidden_size=16,
                projection_dim=16,
                intermediate_size=32,
                num_attention_heads=2,
                num_hidden_layers=2,
                vocab_size=1000,
                max_position_embeddings=77,
            )
        ).eval()
        pipe: Any = ShapEPipeline(
            prior=prior,
            text_encoder=text_encoder,
            tokenizer=clip_tokenizer(),
            shap_e_renderer=renderer,
            scheduler=scheduler,
        )
        pipe.save_pretrained(out)

    return _build_atomically(path, _PIPELINE_MARKER, write)


def build_shap_e_img2img(path: str | os.PathLike[str]) -> pathlib.Path:
    """Build a tiny Shap-E image-to-3D pipeline (``ShapEImg2ImgPipeline``) that can output meshes.

    The image encoder is a 2-layer ``CLIPVisionModel`` at 224 px (the processor's size) with 32 px patches.

    Args:
        path: Directory to write.

    Returns:
        The pipeline directory.
    """

    def write(out: pathlib.Path) -> None:
        import torch
        from diffusers import ShapEImg2ImgPipeline
        from transformers import CLIPVisionConfig, CLIPVisionModel

        prior, renderer, scheduler = _shap_e_prior_and_renderer()
        torch.manual_seed(0)
        image_encoder = CLIPVisionModel(
            CLIPVisionConfig(
                hidden_size=16,
                projection_dim=16,
                intermediate_size=32,
                num_attention_heads=2,
                num_hidden_layers=2,
                num_channels=3,
                image_size=224,
                patch_size=32,
            )
        ).eval()
        image_processor = _clip_image_processor(
            crop_size=224,
            size={"shortest_edge": 224},
            do_center_crop=True,
            do_normalize=True,
            do_resize=True,
            resample=3,
        )
        pipe: Any = ShapEImg2ImgPipeline(
            prior=prior,
            image_encoder=image_encoder,
            image_processor=image_processor,
            shap_e_renderer=renderer,
            scheduler=scheduler,
        )
        pipe.save_pretrained(out)

    return _build_atomically(path, _PIPELINE_MARKER, write)


# --------------------------------------------------------------------------------------------------------
# Audio: Stable Audio Open and AudioLDM2 (diffusers), MusicGen and VITS / MMS-TTS (transformers)
# --------------------------------------------------------------------------------------------------------


def build_stable_audio(path: str | os.PathLike[str]) -> pathlib.Path:
    """Build a tiny Stable Audio Open pipeline (``StableAudioPipeline``, needs ``torchsde``).

    Stereo at 4 kHz: the Oobleck VAE's hop is 32 samples and the DiT's ``sample_size`` 256 latent frames,
    so clips of up to 2.048 s can be asked for (``audio_end_in_s``); the output is
    ``(batch, 2, round(audio_end_in_s * 4000))``.

    Args:
        path: Directory to write.

    Returns:
        The pipeline directory.
    """

    def write(out: pathlib.Path) -> None:
        import torch
        from diffusers import (
            AutoencoderOobleck,
            CosineDPMSolverMultistepScheduler,
            StableAudioDiTModel,
            StableAudioPipeline,
            StableAudioProjectionModel,
        )
        from transformers import T5Config, T5EncoderModel

        tokenizer = _t5_tokenizer(model_max_length=128)
        torch.manual_seed(0)
        text_encoder = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer),
                d_model=16,
                d_kv=4,
                d_ff=32,
                num_layers=2,
                num_heads=4,
                relative_attention_num_buckets=8,
                pad_token_id=0,
                eos_token_id=1,
            )
        ).eval()
        torch.manual_seed(0)
        transformer = StableAudioDiTModel(
            sample_size=256,
            in_channels=3,
            out_channels=3,
            num_layers=2,
            attention_head_dim=4,
            num_attention_heads=2,
            num_key_value_attention_heads=2,
            cross_attention_dim=4,
            time_proj_dim=8,
            global_states_input_dim=8,
            cross_attention_input_dim=4,
        )
        torch.manual_seed(0)
        vae = AutoencoderOobleck(
            encoder_hidden_size=6,
            downsampling_ratios=[4, 8],
            decoder_channels=3,
            decoder_input_channels=3,
            audio_channels=2,
            channel_multiples=[2, 4],
            sampling_rate=STABLE_AUDIO_SAMPLING_RATE,
        )
        torch.manual_seed(0)
        projection_model = StableAudioProjectionModel(
            text_encoder_dim=16,
            conditioning_dim=4,
            min_value=0,
            max_value=32,
        )
        scheduler = CosineDPMSolverMultistepScheduler(
            solver_order=2,
            prediction_type="v_prediction",
            sigma_data=1.0,
            sigma_schedule="exponential",
        )
        pipe: Any = StableAudioPipeline(
            vae=vae,
            text_encoder=text_encoder,
            projection_model=projection_model,
            tokenizer=tokenizer,
            transformer=transformer,
            scheduler=scheduler,
        )
        pipe.save_pretrained(out)

    return _build_atomically(path, _PIPELINE_MARKER, write)


def build_audioldm2(path: str | os.PathLike[str]) -> pathlib.Path:
    """Build a tiny AudioLDM2 pipeline (``AudioLDM2Pipeline``).

    Mono at 16 kHz; the vocoder's hop of 64 samples keeps the spectrogram short. The CLAP tokenizer is
    byte-level, so any text encodes character by character.

    Args:
        path: Directory to write.

    Returns:
        The pipeline directory.
    """

    def write(out: pathlib.Path) -> None:
        import torch
        from diffusers import (
            AudioLDM2Pipeline,
            AudioLDM2ProjectionModel,
            AudioLDM2UNet2DConditionModel,
            AutoencoderKL,
            DDIMScheduler,
        )
        from tokenizers.pre_tokenizers import ByteLevel
        from transformers import (
            ClapAudioConfig,
            ClapConfig,
            ClapFeatureExtractor,
            ClapModel,
            ClapTextConfig,
            GPT2Config,
            GPT2LMHeadModel,
            RobertaTokenizer,
            SpeechT5HifiGan,
            SpeechT5HifiGanConfig,
            T5Config,
            T5EncoderModel,
        )

        # A byte-level vocabulary needs no merges: any text encodes character by character.
        vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
        for char in sorted(ByteLevel.alphabet()):
            vocab[char] = len(vocab)
        tokenizer = RobertaTokenizer(vocab=vocab, merges=[], model_max_length=77)
        tokenizer_2 = _t5_tokenizer(model_max_length=77)
        torch.manual_seed(0)
        unet = AudioLDM2UNet2DConditionModel(
            block_out_channels=(8, 16),
            layers_per_block=1,
            sample_size=16,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=([None, 16, 32], [None, 16, 32]),
            norm_num_groups=4,
            attention_head_dim=2,
        )
        torch.manual_seed(0)
        vae = AutoencoderKL(
            block_out_channels=[8, 16],
            in_channels=1,
            out_channels=1,
            down_block_types=["DownEncoderBlock2D"] * 2,
            up_block_types=["UpDecoderBlock2D"] * 2,
            latent_channels=4,
            norm_num_groups=4,
        )
        torch.manual_seed(0)
        text = ClapTextConfig(
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            num_hidden_layers=2,
            vocab_size=len(vocab),
            projection_dim=16,
        )
        # `intermediate_size` is no ClapAudioConfig field; it is kept so that config.json stays as it was.
        audio = ClapAudioConfig(  # type: ignore[call-arg]
            spec_size=64,
            window_size=4,
            num_mel_bins=64,
            intermediate_size=32,
            depths=[2, 2],
            num_attention_heads=[2, 2],
            num_hidden_layers=2,
            hidden_size=32,
            patch_embeds_hidden_size=16,
            projection_dim=16,
            patch_size=2,
            patch_stride=2,
            patch_embed_input_channels=4,
        )
        text_encoder = ClapModel(
            ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=16)
        )
        torch.manual_seed(0)
        text_encoder_2 = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer_2), d_model=32, d_ff=32, d_kv=8, num_heads=2, num_layers=2, pad_token_id=0
            )
        )
        torch.manual_seed(0)
        # GPT-2's default bos/eos ids (50256) lie outside this vocabulary; the pipeline feeds the model
        # embeddings and never reads them, but transformers warns about them on every load.
        language_model = GPT2LMHeadModel(
            GPT2Config(n_embd=16, n_head=2, n_layer=2, vocab_size=64, n_positions=99, bos_token_id=0, eos_token_id=0)
        )
        language_model.config.max_new_tokens = 8
        torch.manual_seed(0)
        projection_model = AudioLDM2ProjectionModel(text_encoder_dim=16, text_encoder_1_dim=32, langauge_model_dim=16)
        vocoder = SpeechT5HifiGan(
            SpeechT5HifiGanConfig(
                model_in_dim=8,
                sampling_rate=16000,
                upsample_initial_channel=16,
                upsample_rates=[8, 8],
                upsample_kernel_sizes=[16, 16],
                resblock_kernel_sizes=[3, 7],
                resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]],
                normalize_before=False,
            )
        )
        scheduler = DDIMScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False
        )
        pipe: Any = AudioLDM2Pipeline(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            projection_model=projection_model,
            language_model=language_model,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            feature_extractor=ClapFeatureExtractor(),
            unet=unet,
            scheduler=scheduler,
            vocoder=vocoder,
        )
        pipe.save_pretrained(out)

    return _build_atomically(path, _PIPELINE_MARKER, write)


def build_musicgen(path: str | os.PathLike[str]) -> pathlib.Path:
    """Build a tiny MusicGen (``MusicgenForConditionalGeneration``) with its processor.

    Mono 8 kHz EnCodec with a hop of 320 samples: 25 audio tokens per second, 4 codebooks of 64 entries.
    The directory loads with ``MusicgenForConditionalGeneration.from_pretrained``,
    ``AutoProcessor``/``AutoTokenizer.from_pretrained`` and ``pipeline("text-to-audio", model=dir)``.
    ``generate(max_new_tokens=n)`` returns ``(batch, 1, 320 * (n - 3))`` samples: the codebook delay
    pattern spends ``num_codebooks - 1 = 3`` of the steps.

    Args:
        path: Directory to write.

    Returns:
        The model directory.
    """

    def write(out: pathlib.Path) -> None:
        import torch
        from transformers import (
            EncodecConfig,
            EncodecFeatureExtractor,
            MusicgenConfig,
            MusicgenDecoderConfig,
            MusicgenForConditionalGeneration,
            MusicgenProcessor,
            T5Config,
        )

        tokenizer = _t5_tokenizer(model_max_length=128)
        text_config = T5Config(
            vocab_size=len(tokenizer),
            d_model=16,
            d_kv=4,
            d_ff=32,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
        )
        codebook_size = 64
        audio_config = EncodecConfig(
            sampling_rate=MUSICGEN_SAMPLING_RATE,
            audio_channels=1,
            hidden_size=16,
            num_filters=4,
            num_residual_layers=1,
            upsampling_ratios=[8, 5, 4, 2],
            num_lstm_layers=1,
            codebook_size=codebook_size,
            codebook_dim=16,
            compress=2,
            # 25 frames/s x 6 bits/codebook x 4 codebooks = 600 bit/s: 4 quantizers, as many as the decoder.
            target_bandwidths=[0.6],
        )
        decoder_config = MusicgenDecoderConfig(
            vocab_size=codebook_size,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=4,
            ffn_dim=32,
            max_position_embeddings=512,
            num_codebooks=4,
            pad_token_id=codebook_size,
            bos_token_id=codebook_size,
            tie_word_embeddings=False,
        )
        # Not a declared field of the decoder config (mypy would reject the keyword), but the model reads it to
        # shift labels; real checkpoints carry it.
        decoder_config.decoder_start_token_id = codebook_size
        config = MusicgenConfig(text_encoder=text_config, audio_encoder=audio_config, decoder=decoder_config)
        torch.manual_seed(0)
        model = MusicgenForConditionalGeneration(config).eval()
        # EnCodec's codebooks start as zeros (trained ones hold the code vectors), which would make every
        # code decode to the same sound: give them values, so that the audio depends on the codes sampled.
        with torch.no_grad():
            for layer in model.audio_encoder.quantizer.layers:
                layer.codebook.embed.normal_()
                layer.codebook.embed_avg.copy_(layer.codebook.embed)
        # Real checkpoints sample with classifier-free guidance; keep that so tests run the same code path.
        model.generation_config.do_sample = True
        model.generation_config.guidance_scale = 3.0
        model.generation_config.max_length = 256
        model.save_pretrained(out)
        feature_extractor = EncodecFeatureExtractor(feature_size=1, sampling_rate=MUSICGEN_SAMPLING_RATE)
        MusicgenProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(out)

    return _build_atomically(path, _MODEL_MARKER, write)


def build_vits(path: str | os.PathLike[str], speakers: int = 1) -> pathlib.Path:
    """Build a tiny VITS text-to-speech model (MMS-TTS style) with a character tokenizer.

    16 kHz mono; the HiFi-GAN upsamples by 16, so each predicted spectrogram frame is 16 samples. The
    tokenizer does not phonemize (``phonemize=False``), lower-cases text and inserts blanks like MMS-TTS.
    ``VitsModel.from_pretrained`` + ``AutoTokenizer.from_pretrained`` and
    ``pipeline("text-to-speech", model=dir)`` load it.

    Args:
        path: Directory to write.
        speakers: Number of voices; above 1 the model takes ``speaker_id`` (0 ... speakers-1).

    Returns:
        The model directory.
    """

    def write(out: pathlib.Path) -> None:
        import json
        import tempfile

        import torch
        from transformers import VitsConfig, VitsModel, VitsTokenizer

        vocab = _vits_vocab()
        with tempfile.TemporaryDirectory() as scratch:
            vocab_file = pathlib.Path(scratch) / "vocab.json"
            vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
            tokenizer = VitsTokenizer(str(vocab_file), phonemize=False, add_blank=True, normalize=True)
            tokenizer.save_pretrained(out)
        config = VitsConfig(
            vocab_size=len(vocab),
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            ffn_dim=32,
            flow_size=16,
            spectrogram_bins=8,
            duration_predictor_num_flows=2,
            duration_predictor_filter_channels=16,
            prior_encoder_num_flows=2,
            posterior_encoder_num_wavenet_layers=2,
            upsample_initial_channel=16,
            upsample_rates=[8, 2],
            upsample_kernel_sizes=[16, 4],
            resblock_kernel_sizes=[3, 7],
            resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]],
            num_speakers=speakers,
            speaker_embedding_size=8 if speakers > 1 else 0,
            sampling_rate=VITS_SAMPLING_RATE,
            pad_token_id=vocab["<pad>"],
        )
        torch.manual_seed(0)
        VitsModel(config).eval().save_pretrained(out)

    return _build_atomically(path, _MODEL_MARKER, write)


# --------------------------------------------------------------------------------------------------------
# A shared cache of all of the above
# --------------------------------------------------------------------------------------------------------
