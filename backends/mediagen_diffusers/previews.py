"""Previews: a rough picture of each output while it is denoised, from the latents alone.

Decoding with the VAE every few steps would cost as much as the final decode; a linear map from the
latent channels to RGB costs next to nothing and shows composition and colour well enough. The map
is fitted per model, once, from the model's own autoencoder (`fit_rgb`): a palette of colours is
encoded, scaled as the pipeline scales its latents, and a least-squares fit maps latent channels to
the colours. That works for every image `AutoencoderKL` (SD 1.x/2.x, SDXL, SD3, FLUX, Kolors ...)
and for tiny test models alike; other autoencoders (video VAEs, DC-AE) show their first three latent
channels, normalised. The picture has the latent's resolution (the output size over the VAE's scale).

Latents come in three layouts, all handled: `C x H x W` (UNets, most DiTs), packed
`tokens x (C * 4)` (FLUX, Qwen-Image: 2x2 patches), and video `C x F x H x W` or `F x C x H x W`
(the middle frame is shown).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import PIL.Image

__all__ = ["RGBFit", "fit_rgb", "latent_preview"]

RGBFit = tuple[Any, Any]
"""`(weights C x 3, bias 3)` tensors mapping latent channels to RGB in [0, 1]."""

# Colours of the palette `fit_rgb` encodes: the corners of the RGB cube and mid grey.
_PALETTE = (
    (0, 0, 0), (255, 255, 255), (255, 0, 0), (0, 255, 0),
    (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255), (128, 128, 128),
)  # fmt: skip


def fit_rgb(vae: Any) -> RGBFit | None:
    """Fit latent channels -> RGB for an image `AutoencoderKL` by encoding a palette (on the device worker).

    Returns:
        The fit, or None for an autoencoder this does not handle (then previews normalise channels).
    """
    import torch

    if type(vae).__name__ != "AutoencoderKL":
        return None
    config = vae.config
    scale = 2 ** (len(config.block_out_channels) - 1)
    block = max(2 * scale, 8)
    # Solid blocks of each colour, big enough that most latent pixels see one colour only.
    colours = torch.tensor(_PALETTE, dtype=torch.float32) / 255.0
    image = colours[:, :, None, None].expand(-1, -1, block, block)
    image = torch.cat(list(image), dim=2)[None]  # 1 x 3 x block x (block * colours)
    param = next(vae.parameters())
    with torch.inference_mode():
        z = vae.encode((image * 2.0 - 1.0).to(param.device, param.dtype)).latent_dist.mean.float().cpu()
    shift = getattr(config, "shift_factor", None) or 0.0
    z = (z - shift) * (getattr(config, "scaling_factor", None) or 1.0)
    target = torch.nn.functional.avg_pool2d(image, scale)
    if target.shape[-2:] != z.shape[-2:]:
        return None
    x = z[0].flatten(1).T  # pixels x C
    y = target[0].flatten(1).T  # pixels x 3
    ones = torch.ones(x.shape[0], 1)
    solution = torch.linalg.lstsq(torch.cat([x, ones], dim=1), y).solution
    return solution[:-1], solution[-1]


def latent_preview(
    latents: Any,
    index: int,
    *,
    size: tuple[int, int] | None,
    latent_channels: int | None,
    fit: RGBFit | None = None,
) -> PIL.Image.Image | None:
    """A small RGB picture of output `index` of a batch of latents, or None for an unknown layout.

    Args:
        latents: The batch's latents, as the pipeline's step callback sees them.
        index: Which output of the batch.
        size: Width and height of the outputs, to unpack packed latents (None: assume square).
        latent_channels: The VAE's latent channels, to tell a video's channel axis from its frames.
        fit: The model's latent -> RGB fit (`fit_rgb`); None normalises the first three channels.
    """
    import numpy as np
    import PIL.Image
    import torch

    if not isinstance(latents, torch.Tensor) or latents.ndim < 3 or index >= latents.shape[0]:
        return None
    x = latents[index].detach().float().cpu()
    if x.ndim == 2:
        x = _unpack(x, size)
        if x is None:
            return None
    elif x.ndim == 4:
        channel_axis = 1 if latent_channels is not None and x.shape[1] == latent_channels != x.shape[0] else 0
        x = x[:, x.shape[1] // 2] if channel_axis == 0 else x[x.shape[0] // 2]
    if x.ndim != 3:
        return None
    channels = x.shape[0]
    if fit is not None and fit[0].shape[0] == channels:
        weights, bias = fit
        rgb = (torch.einsum("chw,cr->rhw", x, weights) + bias[:, None, None]).clamp(0.0, 1.0)
    else:
        picked = x[[i % channels for i in range(3)]]
        low = picked.amin(dim=(1, 2), keepdim=True)
        high = picked.amax(dim=(1, 2), keepdim=True)
        rgb = (picked - low) / (high - low).clamp_min(1e-6)
    pixels = (rgb.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    return PIL.Image.fromarray(pixels, mode="RGB")


def _unpack(x: Any, size: tuple[int, int] | None) -> Any:
    """Packed `tokens x (C * 4)` latents (2x2 patches) back to `C x H x W`, or None if they do not fit."""
    tokens, packed = x.shape
    if packed % 4:
        return None
    ratio = size[0] / size[1] if size else 1.0
    rows = max(1, round(math.sqrt(tokens / ratio)))
    cols = tokens // rows
    if rows * cols != tokens:
        return None
    channels = packed // 4
    return x.reshape(rows, cols, channels, 2, 2).permute(2, 0, 3, 1, 4).reshape(channels, rows * 2, cols * 2)
