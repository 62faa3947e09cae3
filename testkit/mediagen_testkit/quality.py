"""Image quality numbers against a reference: PSNR and SSIM, in numpy (no image library needed).

Used to put a number on an approximate speed-up (a step cache, fp8 weights): the same seeds made
exactly and approximately, compared pairwise. SSIM follows Wang et al. 2004 (Gaussian window 11,
sigma 1.5, K1 0.01, K2 0.03), per channel and averaged, like scikit-image's
`structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=255)`; borders use edge padding rather than cropping.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["as_array", "psnr", "ssim"]

Array = npt.NDArray[np.float64]


def as_array(image: Any) -> Array:
    """An image (mediagen `Image`, PIL image or array) as a float64 H x W x C array in 0..255."""
    if hasattr(image, "to_pil"):
        image = image.to_pil()
    if hasattr(image, "convert"):
        image = image.convert("RGB")
    array = np.asarray(image, dtype=np.float64)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"expected an H x W (x C) image, got shape {array.shape}")
    return array


def _pair(a: Any, b: Any) -> tuple[Array, Array]:
    x, y = as_array(a), as_array(b)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {x.shape} vs {y.shape}")
    return x, y


def psnr(a: Any, b: Any, *, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB (`inf` for identical images)."""
    x, y = _pair(a, b)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(peak * peak / mse)


def _gaussian(size: int = 11, sigma: float = 1.5) -> Array:
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2
    kernel: Array = np.exp(-(offsets**2) / (2 * sigma * sigma))
    return kernel / float(kernel.sum())


def _blur(plane: Array, kernel: Array) -> Array:
    """Separable Gaussian filter of a 2-D plane, edges padded (shifted sums: fast on 1024 px too)."""
    taps = len(kernel)
    pad = taps // 2
    padded = np.pad(plane, pad, mode="edge")
    height, width = plane.shape
    rows: Array = sum((kernel[i] * padded[:, i : i + width] for i in range(taps)), np.zeros((height + 2 * pad, width)))
    out: Array = sum((kernel[i] * rows[i : i + height, :] for i in range(taps)), np.zeros((height, width)))
    return out


def ssim(a: Any, b: Any, *, peak: float = 255.0) -> float:
    """Mean structural similarity (1.0 for identical images), averaged over channels."""
    x, y = _pair(a, b)
    kernel = _gaussian()
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    scores = []
    for channel in range(x.shape[2]):
        p, q = x[:, :, channel], y[:, :, channel]
        mu_p, mu_q = _blur(p, kernel), _blur(q, kernel)
        var_p = _blur(p * p, kernel) - mu_p**2
        var_q = _blur(q * q, kernel) - mu_q**2
        cov = _blur(p * q, kernel) - mu_p * mu_q
        numerator = (2 * mu_p * mu_q + c1) * (2 * cov + c2)
        denominator = (mu_p**2 + mu_q**2 + c1) * (var_p + var_q + c2)
        scores.append(float(np.mean(numerator / denominator)))
    return float(np.mean(scores))
