"""Tiny random-weight pipelines for the diffusers families beyond Stable Diffusion 1.x.

Each builder follows the `get_dummy_components` recipe of the family's own test in diffusers
(`tests/pipelines/<family>/test_*.py`), with two changes: tokenizers come from an in-memory
vocabulary (no hub download), and the sizes are cut further where the recipe allows, so that a
2-step generation at 16-32 px takes well under a second on a CPU. Every builder writes a standard
directory with `save_pretrained`, atomically (see `tiny._build_atomically`).

torch, diffusers and transformers are imported inside the functions only.
"""

# diffusers and transformers are mostly unannotated; calling into them is expected here.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable
from typing import Any

from .tiny_recipes import (
    _PIPELINE_MARKER,
    _build_atomically,
    _clip_image_processor,
    _t5_tokenizer,
    build_controlnet,
    build_sd,
    clip_tokenizer,
    wan_text_encoder,
    wan_transformer,
    wan_vae,
)

__all__ = ["FAMILY_BUILDERS", "family_builders"]

Path = str | os.PathLike[str]


# -- shared parts ------------------------------------------------------------------------------------


def _clip_text(hidden: int = 32, *, projection: bool = False, layers: int = 2, positions: int = 77) -> Any:
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,  # not 2: see tiny.build_sd (legacy argmax pooling)
        pad_token_id=1,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_attention_heads=2,
        num_hidden_layers=layers,
        projection_dim=hidden,
        vocab_size=1000,
        max_position_embeddings=positions,
        hidden_act="gelu",
    )
    torch.manual_seed(0)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def _t5(tokenizer: Any, d_model: int = 32) -> Any:
    import torch
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    return T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=d_model,
            d_kv=8,
            d_ff=2 * d_model,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
        )
    ).eval()


def _vae(latent_channels: int = 4, *, levels: int = 2, channels: int = 4, flow: bool = False) -> Any:
    """An `AutoencoderKL` that downsamples by 2**(levels-1); `flow` gives Flux/SD3's layout (no quant convs)."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    extra: dict[str, Any] = {}
    if flow:
        extra = {
            "use_quant_conv": False,
            "use_post_quant_conv": False,
            "shift_factor": 0.0609,
            "scaling_factor": 1.5035,
        }
    return AutoencoderKL(
        block_out_channels=(channels,) * levels,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        latent_channels=latent_channels,
        layers_per_block=1,
        norm_num_groups=2 if channels % 2 == 0 else 1,
        sample_size=32,
        **extra,
    )


def _save(pipe: Any, out: pathlib.Path) -> None:
    pipe.save_pretrained(out)


def _pipeline(path: Path, make: Callable[[], Any]) -> pathlib.Path:
    return _build_atomically(path, _PIPELINE_MARKER, lambda out: _save(make(), out))


# -- image -------------------------------------------------------------------------------------------


def build_sd_controlnet(path: Path, sd_path: Path, controlnet_path: Path) -> pathlib.Path:
    """A `StableDiffusionControlNetPipeline` directory holding its own ControlNet (the tiny SD and ControlNet)."""

    def make() -> Any:
        from diffusers import ControlNetModel, StableDiffusionControlNetPipeline, StableDiffusionPipeline

        base = StableDiffusionPipeline.from_pretrained(build_sd(sd_path))
        controlnet = ControlNetModel.from_pretrained(build_controlnet(controlnet_path, sd_path))
        return StableDiffusionControlNetPipeline(**base.components, controlnet=controlnet)

    return _pipeline(path, make)


def build_sd_safety(path: Path, sd_path: Path) -> pathlib.Path:
    """The tiny SD with a safety checker that flags every image (its concept thresholds are below any score).

    The pipeline then reports `nsfw_content_detected=[True, ...]` and blanks the images, as a real
    checker does for a flagged one.
    """

    def make() -> Any:
        import torch
        from diffusers import StableDiffusionPipeline
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPConfig

        base = StableDiffusionPipeline.from_pretrained(build_sd(sd_path))
        torch.manual_seed(0)
        config = CLIPConfig(
            text_config={"hidden_size": 8, "intermediate_size": 16, "num_attention_heads": 2, "num_hidden_layers": 1},
            vision_config={
                "hidden_size": 8,
                "intermediate_size": 16,
                "num_attention_heads": 2,
                "num_hidden_layers": 1,
                "image_size": 32,
                "patch_size": 8,
            },
            projection_dim=8,
        )
        checker = StableDiffusionSafetyChecker(config).eval()
        with torch.no_grad():
            # cosine distance >= -1 > threshold: every concept fires.
            checker.concept_embeds_weights.fill_(-2.0)
            checker.special_care_embeds_weights.fill_(-2.0)
        components = dict(base.components)
        components["safety_checker"] = checker
        components["feature_extractor"] = _clip_image_processor(crop_size=32, size={"shortest_edge": 32})
        return StableDiffusionPipeline(**components, requires_safety_checker=True)

    return _pipeline(path, make)


def _flux_parts(in_channels: int, out_channels: int | None, latent_channels: int) -> dict[str, Any]:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=in_channels,
        out_channels=out_channels,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    tokenizer_2 = _t5_tokenizer(model_max_length=512)
    return {
        "transformer": transformer,
        "text_encoder": _clip_text(32),
        "tokenizer": clip_tokenizer(),
        "text_encoder_2": _t5(tokenizer_2),
        "tokenizer_2": tokenizer_2,
        "vae": _vae(latent_channels, flow=True),
        "scheduler": FlowMatchEulerDiscreteScheduler(),
    }


def build_flux(path: Path) -> pathlib.Path:
    """FLUX.1 text-to-image (`FluxPipeline`): 1+1 transformer layers, CLIP + T5, a 2x VAE (32 px default... sizes in multiples of 4)."""

    def make() -> Any:
        from diffusers import FluxPipeline

        return FluxPipeline(**_flux_parts(4, None, 1))

    return _pipeline(path, make)


def build_flux_fill(path: Path) -> pathlib.Path:
    """FLUX.1 Fill (`FluxFillPipeline`): inpainting and outpainting; the transformer also reads the masked image."""

    def make() -> Any:
        from diffusers import FluxFillPipeline

        # Packed 2x2: noisy latents (2 * 4) + masked image latents (2 * 4) + the mask, one channel per
        # pixel of a packed patch (2x VAE: 4 * 2 * 2), 32 in all; the output is the latents (8).
        return FluxFillPipeline(**_flux_parts(32, 8, 2))

    return _pipeline(path, make)


def build_flux_kontext(path: Path) -> pathlib.Path:
    """FLUX.1 Kontext (`FluxKontextPipeline`): instruction editing of an input image (or text-to-image)."""

    def make() -> Any:
        from diffusers import FluxKontextPipeline

        return FluxKontextPipeline(**_flux_parts(4, None, 1), image_encoder=None, feature_extractor=None)

    return _pipeline(path, make)


def build_flux_control(path: Path) -> pathlib.Path:
    """FLUX.1 Canny/Depth (`FluxControlPipeline`): control built into the checkpoint, no ControlNet.

    The control image's latents are concatenated to the transformer's input.
    """

    def make() -> Any:
        from diffusers import FluxControlPipeline

        # Packed 2x2: noisy latents (4) + control image latents (4); the output is the latents (4).
        return FluxControlPipeline(**_flux_parts(8, 4, 1))

    return _pipeline(path, make)


def build_sd3(path: Path) -> pathlib.Path:
    """Stable Diffusion 3 (`StableDiffusion3Pipeline`): MMDiT, two CLIPs and a T5."""

    def make() -> Any:
        import torch
        from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

        torch.manual_seed(0)
        transformer = SD3Transformer2DModel(
            sample_size=16,
            patch_size=1,
            in_channels=4,
            num_layers=1,
            attention_head_dim=8,
            num_attention_heads=4,
            caption_projection_dim=32,
            joint_attention_dim=32,
            pooled_projection_dim=64,
            out_channels=4,
        )
        tokenizer_3 = _t5_tokenizer(model_max_length=256)
        return StableDiffusion3Pipeline(
            transformer=transformer,
            text_encoder=_clip_text(32, projection=True),
            tokenizer=clip_tokenizer(),
            text_encoder_2=_clip_text(32, projection=True),
            tokenizer_2=clip_tokenizer(),
            text_encoder_3=_t5(tokenizer_3),
            tokenizer_3=tokenizer_3,
            vae=_vae(4, flow=True),
            scheduler=FlowMatchEulerDiscreteScheduler(),
        )

    return _pipeline(path, make)


def _sdxl_unet(cross_attention_dim: int, time_ids: int) -> Any:
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=time_ids * 8 + 32,
        cross_attention_dim=cross_attention_dim,
        norm_num_groups=2,
    )


def _euler() -> Any:
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear", timestep_spacing="leading"
    )


def build_sdxl(path: Path) -> pathlib.Path:
    """Stable Diffusion XL base (`StableDiffusionXLPipeline`): two CLIP text encoders, size/crop conditioning."""

    def make() -> Any:
        from diffusers import StableDiffusionXLPipeline

        return StableDiffusionXLPipeline(
            unet=_sdxl_unet(64, time_ids=6),
            scheduler=_euler(),
            vae=_vae(4),
            text_encoder=_clip_text(32),
            tokenizer=clip_tokenizer(),
            text_encoder_2=_clip_text(32, projection=True),
            tokenizer_2=clip_tokenizer(),
            image_encoder=None,
            feature_extractor=None,
        )

    return _pipeline(path, make)


def build_sdxl_refiner(path: Path) -> pathlib.Path:
    """An SDXL refiner (`StableDiffusionXLImg2ImgPipeline`, `requires_aesthetics_score`): image-to-image only."""

    def make() -> Any:
        from diffusers import StableDiffusionXLImg2ImgPipeline

        return StableDiffusionXLImg2ImgPipeline(
            unet=_sdxl_unet(32, time_ids=5),
            scheduler=_euler(),
            vae=_vae(4),
            text_encoder=None,
            tokenizer=None,
            text_encoder_2=_clip_text(32, projection=True),
            tokenizer_2=clip_tokenizer(),
            requires_aesthetics_score=True,
            force_zeros_for_empty_prompt=False,
        )

    return _pipeline(path, make)


def build_pixart(path: Path) -> pathlib.Path:
    """PixArt-Sigma (`PixArtSigmaPipeline`): a DiT with a T5.

    Its resolution binning knows real sizes only: requests pass `options={"use_resolution_binning": False}`.
    """

    def make() -> Any:
        import torch
        from diffusers import DDIMScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

        torch.manual_seed(0)
        transformer: Any = PixArtTransformer2DModel(
            sample_size=16,
            num_layers=2,
            patch_size=2,
            attention_head_dim=8,
            num_attention_heads=3,
            caption_channels=32,
            in_channels=4,
            cross_attention_dim=24,
            out_channels=8,
            attention_bias=True,
            activation_fn="gelu-approximate",
            num_embeds_ada_norm=1000,
            norm_type="ada_norm_single",
            norm_elementwise_affine=False,
            norm_eps=1e-6,
        )
        tokenizer = _t5_tokenizer(model_max_length=300)
        return PixArtSigmaPipeline(
            transformer=transformer.eval(),
            vae=_vae(4),
            scheduler=DDIMScheduler(),
            text_encoder=_t5(tokenizer),
            tokenizer=tokenizer,
        )

    return _pipeline(path, make)


def _gemma_tokenizer(*, bos: bool = False) -> Any:
    """A Gemma tokenizer over single characters; `bos` starts every text with `<bos>`, as Gemma's own does.

    Lumina needs `bos`: its empty negative prompt must keep one token, or its attention reads no key at all.
    """
    from transformers import GemmaTokenizer

    from .tiny_recipes import _TEXT_CHARS

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4, "\u2581": 5}
    for char in _TEXT_CHARS:
        vocab.setdefault(char, len(vocab))
        vocab.setdefault("\u2581" + char, len(vocab))
    return GemmaTokenizer(vocab=vocab, merges=[], add_bos_token=bos)


def build_sana(path: Path) -> pathlib.Path:
    """Sana (`SanaPipeline`): a linear DiT, the DC autoencoder and a Gemma-2 text encoder.

    Like PixArt, its resolution binning knows real sizes only (`options={"use_resolution_binning": False}`).
    """

    def make() -> Any:
        import torch
        from diffusers import AutoencoderDC, FlowMatchEulerDiscreteScheduler, SanaPipeline, SanaTransformer2DModel
        from transformers import Gemma2Config, Gemma2Model

        torch.manual_seed(0)
        transformer = SanaTransformer2DModel(
            patch_size=1,
            in_channels=4,
            out_channels=4,
            num_layers=1,
            num_attention_heads=2,
            attention_head_dim=4,
            num_cross_attention_heads=2,
            cross_attention_head_dim=4,
            cross_attention_dim=8,
            caption_channels=8,
            sample_size=16,
        )
        torch.manual_seed(0)
        vae = AutoencoderDC(
            in_channels=3,
            latent_channels=4,
            attention_head_dim=2,
            encoder_block_types=("ResBlock", "EfficientViTBlock"),
            decoder_block_types=("ResBlock", "EfficientViTBlock"),
            encoder_block_out_channels=(8, 8),
            decoder_block_out_channels=(8, 8),
            encoder_qkv_multiscales=((), (5,)),
            decoder_qkv_multiscales=((), (5,)),
            encoder_layers_per_block=(1, 1),
            decoder_layers_per_block=[1, 1],
            downsample_block_type="conv",
            upsample_block_type="interpolate",
            decoder_norm_types="rms_norm",
            decoder_act_fns="silu",
            scaling_factor=0.41407,
        )
        tokenizer = _gemma_tokenizer()
        torch.manual_seed(0)
        text_encoder = Gemma2Model(
            Gemma2Config(
                head_dim=16,
                hidden_size=8,
                intermediate_size=16,
                max_position_embeddings=8192,
                num_attention_heads=2,
                num_hidden_layers=1,
                num_key_value_heads=2,
                vocab_size=len(tokenizer),
                pad_token_id=0,
                eos_token_id=1,
                bos_token_id=2,
            )
        ).eval()
        return SanaPipeline(
            transformer=transformer,
            vae=vae,
            scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
        )

    return _pipeline(path, make)


def _chatglm_tokenizer(directory: pathlib.Path) -> Any:
    """Kolors' ChatGLM tokenizer over a tiny SentencePiece model trained here, in memory, on a few sentences."""
    import io

    import sentencepiece
    from diffusers.pipelines.kolors.tokenizer import ChatGLMTokenizer

    from .tiny_recipes import _TEXT_CHARS

    model = io.BytesIO()
    sentences = ["a red fox in the snow", "make it night", "waves on a beach", _TEXT_CHARS, " ".join(_TEXT_CHARS)]
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        model_type="char",
        vocab_size=len(set("".join(sentences))) + 4,
        character_coverage=1.0,
        byte_fallback=False,
        minloglevel=2,
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.model").write_bytes(model.getvalue())
    return ChatGLMTokenizer(str(directory / "tokenizer.model"))


def build_kolors(path: Path) -> pathlib.Path:
    """Kolors (`KolorsPipeline`): an SDXL-style UNet with a ChatGLM3 text encoder (needs `sentencepiece`)."""

    def write(out: pathlib.Path) -> None:
        import tempfile

        import torch
        from diffusers import KolorsPipeline
        from diffusers.pipelines.kolors.text_encoder import ChatGLMConfig, ChatGLMModel

        # The tokenizer copies its SentencePiece file when saved, so the file outlives the save.
        with tempfile.TemporaryDirectory() as scratch:
            tokenizer = _chatglm_tokenizer(pathlib.Path(scratch))
            torch.manual_seed(0)
            text_encoder = ChatGLMModel(
                ChatGLMConfig(
                    num_layers=2,
                    padded_vocab_size=len(tokenizer) + 16,
                    hidden_size=32,
                    ffn_hidden_size=32,
                    kv_channels=8,
                    num_attention_heads=4,
                    seq_length=256,
                    multi_query_attention=True,
                    multi_query_group_num=2,
                    original_rope=True,  # in every ChatGLM3 config.json; the model reads it
                )
            ).eval()
            # ChatGLM builds its layers with `skip_init` (uninitialised memory, NaN as often as not):
            # give every weight matrix small random values and every norm weight ones.
            torch.manual_seed(0)
            with torch.no_grad():
                for param in text_encoder.parameters():
                    if param.ndim >= 2:
                        param.normal_(std=0.02)
                    else:
                        param.fill_(1.0)
            pipe: Any = KolorsPipeline(
                vae=_vae(4),
                text_encoder=text_encoder,
                tokenizer=tokenizer,
                unet=_sdxl_unet(32, time_ids=6),
                scheduler=_euler(),
            )
            pipe.save_pretrained(out)

    return _build_atomically(path, _PIPELINE_MARKER, write)


def _qwen_tokenizer() -> Any:
    """A byte-level Qwen2 tokenizer over single bytes (no merges), with the chat template's special tokens."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2Tokenizer

    vocab = {char: i for i, char in enumerate(sorted(ByteLevel.alphabet()))}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return tokenizer


def build_flux2_klein(path: Path) -> pathlib.Path:
    """FLUX.2 [klein] (`Flux2KleinPipeline`): text-to-image and editing from one or several reference images.

    The Qwen3 text encoder has 28 tiny layers because the pipeline reads hidden states 9, 18 and 27.
    """

    def make() -> Any:
        import torch
        from diffusers import (
            AutoencoderKLFlux2,
            FlowMatchEulerDiscreteScheduler,
            Flux2KleinPipeline,
            Flux2Transformer2DModel,
        )
        from transformers import Qwen3Config, Qwen3ForCausalLM

        tokenizer = _qwen_tokenizer()
        torch.manual_seed(0)
        transformer = Flux2Transformer2DModel(
            patch_size=1,
            in_channels=4,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=48,
            timestep_guidance_channels=256,
            axes_dims_rope=[4, 4, 4, 4],
            guidance_embeds=False,
        )
        torch.manual_seed(0)
        text_encoder = Qwen3ForCausalLM(
            Qwen3Config(
                intermediate_size=16,
                hidden_size=16,
                num_hidden_layers=28,
                num_attention_heads=2,
                num_key_value_heads=2,
                head_dim=8,
                vocab_size=len(tokenizer),
                max_position_embeddings=1024,
            )
        ).eval()
        torch.manual_seed(0)
        vae = AutoencoderKLFlux2(
            sample_size=32,
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(4, 4),
            layers_per_block=1,
            latent_channels=1,
            norm_num_groups=1,
            use_quant_conv=False,
            use_post_quant_conv=False,
        )
        return Flux2KleinPipeline(
            transformer=transformer,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            vae=vae,
            scheduler=FlowMatchEulerDiscreteScheduler(),
        )

    return _pipeline(path, make)


def _qwen_vl_tokenizer(*, video: bool = False) -> Any:
    """The byte-level Qwen tokenizer with the vision tokens of the Qwen2.5-VL chat template."""
    tokenizer = _qwen_tokenizer()
    extra = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>"] + (["<|video_pad|>"] if video else [])
    tokenizer.add_special_tokens({"additional_special_tokens": extra})
    return tokenizer


def _qwen_image_transformer() -> Any:
    import torch
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(0)
    return QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )


def _qwen_image_vae(base_dim: int, dim_mult: list[int], temporal_downsample: list[bool]) -> Any:
    import torch
    from diffusers import AutoencoderKLQwenImage

    torch.manual_seed(0)
    return AutoencoderKLQwenImage(
        base_dim=base_dim,
        z_dim=4,
        dim_mult=dim_mult,
        num_res_blocks=1,
        temperal_downsample=temporal_downsample,
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    )


def _qwen_vl_text_encoder(tokenizer: Any) -> Any:
    """A two-layer Qwen2.5-VL (text and vision towers) reading `tokenizer`'s ids."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = tokenizer.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|im_end|>"])
    video = (
        {"video_token_id": tokenizer.convert_tokens_to_ids("<|video_pad|>")}
        if "<|video_pad|>" in tokenizer.get_vocab()
        else {}
    )
    torch.manual_seed(0)
    return Qwen2_5_VLForConditionalGeneration(
        Qwen2_5_VLConfig(
            text_config={
                "hidden_size": 16,
                "intermediate_size": 16,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
                "rope_theta": 1000000.0,
                "vocab_size": len(tokenizer),
                "bos_token_id": ids[3],
                "eos_token_id": ids[3],
            },
            vision_config={
                "depth": 2,
                "hidden_size": 16,
                "intermediate_size": 16,
                "num_heads": 2,
                "out_hidden_size": 16,
            },
            vision_start_token_id=ids[0],
            vision_end_token_id=ids[1],
            image_token_id=ids[2],
            **video,
        )
    ).eval()


def build_qwen_image(path: Path) -> pathlib.Path:
    """Qwen-Image text-to-image (`QwenImagePipeline`): an MMDiT, a Qwen2.5-VL text encoder, a Wan-style VAE."""

    def make() -> Any:
        from diffusers import FlowMatchEulerDiscreteScheduler, QwenImagePipeline

        tokenizer = _qwen_vl_tokenizer()
        return QwenImagePipeline(
            transformer=_qwen_image_transformer(),
            vae=_qwen_image_vae(24, [1, 2, 4], [False, True]),
            scheduler=FlowMatchEulerDiscreteScheduler(),
            text_encoder=_qwen_vl_text_encoder(tokenizer),
            tokenizer=tokenizer,
        )

    return _pipeline(path, make)


def _build_qwen_image_edit(path: Path, pipeline_class: str) -> pathlib.Path:
    def make() -> Any:
        import diffusers
        from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

        tokenizer = _qwen_vl_tokenizer(video=True)
        # The text encoder sees the picture at the smallest size the processor allows (4 merged patches).
        processor = Qwen2VLProcessor(
            image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=56 * 56),
            tokenizer=tokenizer,
            video_processor=Qwen2VLVideoProcessor(),
        )
        return getattr(diffusers, pipeline_class)(
            transformer=_qwen_image_transformer(),
            # 16x down (four levels, base width 4): the pipeline VAE-encodes the input at about 1 MP
            # whatever the output size, and this keeps that encode and its 1024 tokens cheap.
            vae=_qwen_image_vae(4, [1, 2, 4, 4, 4], [False, False, True, True]),
            scheduler=diffusers.FlowMatchEulerDiscreteScheduler(),
            text_encoder=_qwen_vl_text_encoder(tokenizer),
            tokenizer=tokenizer,
            processor=processor,
        )

    return _pipeline(path, make)


def build_qwen_image_edit(path: Path) -> pathlib.Path:
    """Qwen-Image-Edit (`QwenImageEditPipeline`): an instruction edit of one picture, read by Qwen2.5-VL.

    Its `Qwen2VLProcessor` needs torchvision (transformers builds the video processor even for
    pictures), so this model is not in :data:`~mediagen_testkit.tiny.TINY_MODEL_NAMES`.
    """
    return _build_qwen_image_edit(path, "QwenImageEditPipeline")


def build_qwen_image_edit_plus(path: Path) -> pathlib.Path:
    """Qwen-Image-Edit Plus (`QwenImageEditPlusPipeline`): an edit from several reference pictures; needs torchvision."""
    return _build_qwen_image_edit(path, "QwenImageEditPlusPipeline")


def build_hidream(path: Path) -> pathlib.Path:
    """HiDream-I1 (`HiDreamImagePipeline`): a mixture-of-experts DiT read by two CLIPs, a T5 and Llama layers.

    The pipeline renders at a fixed area (its `default_sample_size` 128 latents a side, times the
    VAE's scale), keeping only the aspect ratio asked for; with this 1-level VAE that is 128 x 128 px.
    The transformer's patches are 8 latents wide (the recipe's are 2) to keep the call well under a
    second; the pipeline rounds latent sides to multiples of 2 only, so this model makes square
    pictures only.
    """

    def make() -> Any:
        import torch
        from diffusers import (
            AutoencoderKL,
            FlowMatchEulerDiscreteScheduler,
            HiDreamImagePipeline,
            HiDreamImageTransformer2DModel,
        )
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        transformer = HiDreamImageTransformer2DModel(
            patch_size=8,  # the recipe has 2, but the pipeline always makes 128 x 128 latents: 256 tokens here
            in_channels=4,
            out_channels=4,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=8,
            num_attention_heads=4,
            caption_channels=[32, 16],
            text_emb_dim=64,
            num_routed_experts=4,
            num_activated_experts=2,
            axes_dims_rope=(4, 2, 2),
            max_resolution=(128, 128),  # room for every aspect ratio at 128 x 128 latents (patch 8)
            llama_layers=(0, 1),
        )
        torch.manual_seed(0)
        vae = AutoencoderKL(
            block_out_channels=(4,),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=2,
            sample_size=32,
            scaling_factor=0.3611,
            shift_factor=0.1159,
        )
        t5_tokenizer = _t5_tokenizer(model_max_length=128)
        llama_tokenizer = _llama_tokenizer()
        torch.manual_seed(0)
        llama = LlamaForCausalLM(
            LlamaConfig(
                bos_token_id=1,
                eos_token_id=2,
                pad_token_id=2,
                hidden_size=16,
                intermediate_size=32,
                num_attention_heads=4,
                num_key_value_heads=4,
                num_hidden_layers=2,
                vocab_size=len(llama_tokenizer),
            )
        ).eval()
        return HiDreamImagePipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(),
            vae=vae,
            text_encoder=_clip_text(32, projection=True, positions=128),
            tokenizer=clip_tokenizer(),
            text_encoder_2=_clip_text(32, projection=True, positions=128),
            tokenizer_2=clip_tokenizer(),
            text_encoder_3=_t5(t5_tokenizer),
            tokenizer_3=t5_tokenizer,
            text_encoder_4=llama,
            tokenizer_4=llama_tokenizer,
            transformer=transformer,
        )

    return _pipeline(path, make)


def build_lumina2(path: Path) -> pathlib.Path:
    """Lumina-Image 2.0 (`Lumina2Pipeline`): a flow DiT with a Gemma-2 text encoder.

    Lumina's pipelines take the VAE's scale to be 8, so the tiny VAE has 4 levels (few channels).
    """

    def make() -> Any:
        import torch
        from diffusers import FlowMatchEulerDiscreteScheduler, Lumina2Pipeline, Lumina2Transformer2DModel
        from transformers import Gemma2Config, Gemma2Model

        torch.manual_seed(0)
        transformer = Lumina2Transformer2DModel(
            sample_size=4,
            patch_size=2,
            in_channels=4,
            hidden_size=8,
            num_layers=2,
            num_attention_heads=1,
            num_kv_heads=1,
            multiple_of=16,
            ffn_dim_multiplier=None,
            norm_eps=1e-5,
            scaling_factor=1.0,
            axes_dim_rope=[4, 2, 2],
            cap_feat_dim=8,
        )
        tokenizer = _gemma_tokenizer()
        torch.manual_seed(0)
        text_encoder = Gemma2Model(
            Gemma2Config(
                head_dim=4,
                hidden_size=8,
                intermediate_size=8,
                num_attention_heads=2,
                num_hidden_layers=2,
                num_key_value_heads=2,
                sliding_window=2,
                vocab_size=len(tokenizer),
                pad_token_id=0,
                eos_token_id=1,
                bos_token_id=2,
            )
        ).eval()
        return Lumina2Pipeline(
            transformer=transformer,
            vae=_vae(4, levels=4, flow=True).eval(),
            scheduler=FlowMatchEulerDiscreteScheduler(),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
        )

    return _pipeline(path, make)


def build_lumina(path: Path) -> pathlib.Path:
    """Lumina-Next (`LuminaPipeline`): a next-DiT with a Gemma text encoder (a scale-8 VAE, like Lumina 2)."""

    def make() -> Any:
        import torch
        from diffusers import FlowMatchEulerDiscreteScheduler, LuminaNextDiT2DModel, LuminaPipeline
        from transformers import GemmaConfig, GemmaForCausalLM

        torch.manual_seed(0)
        transformer = LuminaNextDiT2DModel(
            sample_size=4,
            patch_size=2,
            in_channels=4,
            hidden_size=4,
            num_layers=2,
            num_attention_heads=1,
            num_kv_heads=1,
            multiple_of=16,
            ffn_dim_multiplier=None,
            norm_eps=1e-5,
            learn_sigma=True,
            qk_norm=True,
            cross_attention_dim=8,
            scaling_factor=1.0,
        )
        tokenizer = _gemma_tokenizer(bos=True)
        torch.manual_seed(0)
        text_encoder = GemmaForCausalLM(
            GemmaConfig(
                head_dim=2,
                hidden_size=8,
                intermediate_size=37,
                num_attention_heads=4,
                num_hidden_layers=2,
                num_key_value_heads=4,
                vocab_size=len(tokenizer),
                pad_token_id=0,
                eos_token_id=1,
                bos_token_id=2,
            )
        ).eval()
        return LuminaPipeline(
            transformer=transformer,
            vae=_vae(4, levels=4).eval(),
            scheduler=FlowMatchEulerDiscreteScheduler(),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
        )

    return _pipeline(path, make)


# -- video -------------------------------------------------------------------------------------------


def build_wan_i2v(path: Path) -> pathlib.Path:
    """Wan 2.1 image-to-video (`WanImageToVideoPipeline`) with its CLIP image encoder."""

    def make() -> Any:
        import torch
        from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline
        from transformers import CLIPVisionConfig, CLIPVisionModel

        tokenizer = _t5_tokenizer(model_max_length=512)
        torch.manual_seed(0)
        # The class Wan's checkpoints (and the pipeline's signature) use; diffusers' test recipe has
        # the projection variant, which makes the pipeline log a type mismatch on every load.
        image_encoder = CLIPVisionModel(
            CLIPVisionConfig(
                hidden_size=4,
                num_hidden_layers=2,
                num_attention_heads=2,
                image_size=32,
                intermediate_size=16,
                patch_size=8,
            )
        ).eval()
        # Input: noisy latents (16) + the image's latents (16) + the frame mask (4).
        return WanImageToVideoPipeline(
            tokenizer=tokenizer,
            text_encoder=wan_text_encoder(tokenizer),
            vae=wan_vae(),
            scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
            transformer=wan_transformer(36, image_dim=4),
            image_encoder=image_encoder,
            image_processor=_clip_image_processor(crop_size=32, size={"shortest_edge": 32}),
        )

    return _pipeline(path, make)


def _build_wan22(path: Path, pipeline_class: str, in_channels: int) -> pathlib.Path:
    def make() -> Any:
        import diffusers

        tokenizer = _t5_tokenizer(model_max_length=512)
        extra = {"image_encoder": None, "image_processor": None} if in_channels != 16 else {}
        return getattr(diffusers, pipeline_class)(
            tokenizer=tokenizer,
            text_encoder=wan_text_encoder(tokenizer),
            vae=wan_vae(),
            scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0),
            transformer=wan_transformer(in_channels),
            # Other weights than the first expert's, so a call that skipped it would show.
            transformer_2=wan_transformer(in_channels, seed=1),
            boundary_ratio=0.875 if in_channels == 16 else 0.9,
            **extra,
        )

    return _pipeline(path, make)


def build_wan22_t2v(path: Path) -> pathlib.Path:
    """Wan 2.2 text-to-video A14B (`WanPipeline` with two experts).

    `transformer` denoises the high-noise steps, `transformer_2` those below `boundary_ratio`.
    """
    return _build_wan22(path, "WanPipeline", 16)


def build_wan22_i2v(path: Path) -> pathlib.Path:
    """Wan 2.2 image-to-video A14B (`WanImageToVideoPipeline`, two experts, no CLIP image encoder).

    Its input: noisy latents (16) + the image's latents (16) + the frame mask (4).
    """
    return _build_wan22(path, "WanImageToVideoPipeline", 36)


def build_ltx(path: Path) -> pathlib.Path:
    """LTX-Video (`LTXPipeline`; image-to-video through `LTXImageToVideoPipeline` on the same weights)."""

    def make() -> Any:
        import torch
        from diffusers import (
            AutoencoderKLLTXVideo,
            FlowMatchEulerDiscreteScheduler,
            LTXPipeline,
            LTXVideoTransformer3DModel,
        )

        torch.manual_seed(0)
        transformer = LTXVideoTransformer3DModel(
            in_channels=8,
            out_channels=8,
            patch_size=1,
            patch_size_t=1,
            num_attention_heads=4,
            attention_head_dim=8,
            cross_attention_dim=32,
            num_layers=1,
            caption_channels=32,
        )
        torch.manual_seed(0)
        vae = AutoencoderKLLTXVideo(
            in_channels=3,
            out_channels=3,
            latent_channels=8,
            block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8),
            layers_per_block=(1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 1, 1, 1),
            spatio_temporal_scaling=(True, True, False, False),
            decoder_spatio_temporal_scaling=(True, True, False, False),
            decoder_inject_noise=(False, False, False, False, False),
            upsample_residual=(False, False, False, False),
            upsample_factor=(1, 1, 1, 1),
            timestep_conditioning=False,
            patch_size=1,
            patch_size_t=1,
            encoder_causal=True,
            decoder_causal=False,
        )
        tokenizer = _t5_tokenizer(model_max_length=128)
        return LTXPipeline(
            transformer=transformer,
            vae=vae,
            scheduler=FlowMatchEulerDiscreteScheduler(),
            text_encoder=_t5(tokenizer),
            tokenizer=tokenizer,
        )

    return _pipeline(path, make)


def build_cogvideox(path: Path) -> pathlib.Path:
    """CogVideoX text-to-video (`CogVideoXPipeline`)."""

    def make() -> Any:
        import torch
        from diffusers import AutoencoderKLCogVideoX, CogVideoXPipeline, CogVideoXTransformer3DModel, DDIMScheduler

        torch.manual_seed(0)
        transformer = CogVideoXTransformer3DModel(
            num_attention_heads=4,
            attention_head_dim=8,
            in_channels=4,
            out_channels=4,
            time_embed_dim=2,
            text_embed_dim=32,
            num_layers=1,
            sample_width=2,
            sample_height=2,
            sample_frames=9,
            patch_size=2,
            temporal_compression_ratio=4,
            max_text_seq_length=226,
        )
        torch.manual_seed(0)
        vae = AutoencoderKLCogVideoX(
            in_channels=3,
            out_channels=3,
            down_block_types=("CogVideoXDownBlock3D",) * 4,
            up_block_types=("CogVideoXUpBlock3D",) * 4,
            block_out_channels=(8, 8, 8, 8),
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=2,
            temporal_compression_ratio=4,
        )
        tokenizer = _t5_tokenizer(model_max_length=226)
        return CogVideoXPipeline(
            transformer=transformer,
            vae=vae,
            scheduler=DDIMScheduler(),
            text_encoder=_t5(tokenizer),
            tokenizer=tokenizer,
        )

    return _pipeline(path, make)


def build_mochi(path: Path) -> pathlib.Path:
    """Mochi 1 (`MochiPipeline`): an asymmetric DiT and a 6x temporal VAE (6k+1 frames)."""

    def make() -> Any:
        import torch
        from diffusers import (
            AutoencoderKLMochi,
            FlowMatchEulerDiscreteScheduler,
            MochiPipeline,
            MochiTransformer3DModel,
        )

        torch.manual_seed(0)
        transformer: Any = MochiTransformer3DModel(
            patch_size=2,
            num_attention_heads=2,
            attention_head_dim=8,
            num_layers=2,
            pooled_projection_dim=16,
            in_channels=12,
            out_channels=None,
            qk_norm="rms_norm",
            text_embed_dim=32,
            time_embed_dim=4,
            activation_fn="swiglu",
            max_sequence_length=16,
        )
        transformer.pos_frequencies.data = transformer.pos_frequencies.new_full(transformer.pos_frequencies.shape, 0)
        torch.manual_seed(0)
        vae = AutoencoderKLMochi(
            latent_channels=12,
            out_channels=3,
            encoder_block_out_channels=(32, 32, 32, 32),
            decoder_block_out_channels=(32, 32, 32, 32),
            layers_per_block=(1, 1, 1, 1, 1),
        )
        tokenizer = _t5_tokenizer(model_max_length=256)
        return MochiPipeline(
            transformer=transformer,
            vae=vae,
            scheduler=FlowMatchEulerDiscreteScheduler(),
            text_encoder=_t5(tokenizer),
            tokenizer=tokenizer,
        )

    return _pipeline(path, make)


def _llama_tokenizer() -> Any:
    from transformers import LlamaTokenizer

    from .tiny_recipes import _TEXT_CHARS

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "\u2581": 3}
    for char in _TEXT_CHARS + "<>|_{}[]\n":
        vocab.setdefault(char, len(vocab))
        vocab.setdefault("\u2581" + char, len(vocab))
    return LlamaTokenizer(vocab=vocab, merges=[], pad_token="</s>")


def build_hunyuan_video(path: Path) -> pathlib.Path:
    """HunyuanVideo (`HunyuanVideoPipeline`): a Llama text encoder plus CLIP, a 3D VAE (4k+1 frames)."""

    def make() -> Any:
        import torch
        from diffusers import (
            AutoencoderKLHunyuanVideo,
            FlowMatchEulerDiscreteScheduler,
            HunyuanVideoPipeline,
            HunyuanVideoTransformer3DModel,
        )
        from transformers import LlamaConfig, LlamaModel

        torch.manual_seed(0)
        transformer = HunyuanVideoTransformer3DModel(
            in_channels=4,
            out_channels=4,
            num_attention_heads=2,
            attention_head_dim=10,
            num_layers=1,
            num_single_layers=1,
            num_refiner_layers=1,
            patch_size=1,
            patch_size_t=1,
            guidance_embeds=True,
            text_embed_dim=16,
            pooled_projection_dim=8,
            rope_axes_dim=(2, 4, 4),
        )
        torch.manual_seed(0)
        vae = AutoencoderKLHunyuanVideo(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            down_block_types=("HunyuanVideoDownBlock3D",) * 4,
            up_block_types=("HunyuanVideoUpBlock3D",) * 4,
            block_out_channels=(8, 8, 8, 8),
            layers_per_block=1,
            act_fn="silu",
            norm_num_groups=4,
            scaling_factor=0.476986,
            spatial_compression_ratio=8,
            temporal_compression_ratio=4,
            mid_block_add_attention=True,
        )
        tokenizer = _llama_tokenizer()
        torch.manual_seed(0)
        text_encoder = LlamaModel(
            LlamaConfig(
                bos_token_id=1,
                eos_token_id=2,
                pad_token_id=2,
                hidden_size=16,
                intermediate_size=32,
                num_attention_heads=4,
                num_hidden_layers=2,
                vocab_size=len(tokenizer),
                hidden_act="gelu",
            )
        ).eval()
        return HunyuanVideoPipeline(
            transformer=transformer,
            vae=vae,
            scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            text_encoder_2=_clip_text(8),
            tokenizer_2=clip_tokenizer(),
        )

    return _pipeline(path, make)


def build_animatediff(path: Path) -> pathlib.Path:
    """AnimateDiff (`AnimateDiffPipeline`): an SD 1.x UNet with a motion adapter."""

    def make() -> Any:
        import torch
        from diffusers import AnimateDiffPipeline, DDIMScheduler, MotionAdapter, UNet2DConditionModel

        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            block_out_channels=(8, 8),
            layers_per_block=1,
            sample_size=16,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=8,
            norm_num_groups=2,
        )
        torch.manual_seed(0)
        adapter = MotionAdapter(
            block_out_channels=(8, 8), motion_layers_per_block=1, motion_norm_num_groups=2, motion_num_attention_heads=2
        )
        return AnimateDiffPipeline(
            unet=unet,
            scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="linear", clip_sample=False),
            vae=_vae(4, channels=8),
            motion_adapter=adapter,
            text_encoder=_clip_text(8),
            tokenizer=clip_tokenizer(),
            feature_extractor=None,
            image_encoder=None,
        )

    return _pipeline(path, make)


def family_builders(root: pathlib.Path) -> dict[str, Callable[[pathlib.Path], pathlib.Path]]:
    """Every builder of this module by tiny-model name, those built on the tiny SD reading it from `root`."""
    return {
        "sd-controlnet": lambda p: build_sd_controlnet(p, root / "sd", root / "controlnet"),
        "sd-safety": lambda p: build_sd_safety(p, root / "sd"),
        **FAMILY_BUILDERS,
    }


FAMILY_BUILDERS: dict[str, Callable[[Path], pathlib.Path]] = {
    "flux": build_flux,
    "flux-fill": build_flux_fill,
    "flux-kontext": build_flux_kontext,
    "flux-control": build_flux_control,
    "sd3": build_sd3,
    "sdxl": build_sdxl,
    "sdxl-refiner": build_sdxl_refiner,
    "pixart": build_pixart,
    "sana": build_sana,
    "flux2-klein": build_flux2_klein,
    "kolors": build_kolors,
    "qwen-image": build_qwen_image,
    "qwen-image-edit": build_qwen_image_edit,
    "qwen-image-edit-plus": build_qwen_image_edit_plus,
    "hidream": build_hidream,
    "lumina2": build_lumina2,
    "lumina": build_lumina,
    "wan-i2v": build_wan_i2v,
    "wan22-t2v": build_wan22_t2v,
    "wan22-i2v": build_wan22_i2v,
    "ltx": build_ltx,
    "cogvideox": build_cogvideox,
    "mochi": build_mochi,
    "hunyuan-video": build_hunyuan_video,
    "animatediff": build_animatediff,
}
"""Builders of the family pipelines, by tiny-model name."""
