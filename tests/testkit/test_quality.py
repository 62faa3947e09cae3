"""PSNR and SSIM of the test kit, against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

import mediagen as mg
from mediagen_testkit.quality import psnr, ssim


def test_psnr_of_a_uniform_difference_is_20_log10_peak_over_it() -> None:
    a = np.full((16, 16, 3), 100, np.uint8)
    assert psnr(a, a) == math.inf
    assert psnr(a, a + 5) == pytest.approx(20 * math.log10(255 / 5))


def test_ssim_of_two_flat_images_is_the_luminance_term() -> None:
    # No variance and no covariance: only (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1) is left.
    a, b = np.full((20, 20), 100.0), np.full((20, 20), 140.0)
    c1 = (0.01 * 255) ** 2
    assert ssim(a, b) == pytest.approx((2 * 100 * 140 + c1) / (100**2 + 140**2 + c1))


def test_ssim_falls_with_noise_and_accepts_mediagen_images() -> None:
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
    scores = []
    for sigma in (2, 10, 40):
        noisy = np.clip(clean + rng.normal(0, sigma, clean.shape), 0, 255).astype(np.uint8)
        scores.append(ssim(mg.Image.from_array(clean), mg.Image.from_array(noisy)))
    assert ssim(clean, clean) == pytest.approx(1.0)
    assert 1.0 > scores[0] > scores[1] > scores[2] > 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        ssim(clean, clean[:16])
