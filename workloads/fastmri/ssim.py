"""fastMRI's SSIM in plain numpy: the framework-free metric both frameworks' evals call.

The reference scores fastMRI with the SSIM of Wang et al. (2004) as scikit-image computes it with
its defaults: a uniform 7 x 7 window, sample (co)variances, K1 = 0.01, K2 = 0.03, edges mirrored
for the filter (scipy's 'reflect', numpy's 'symmetric') and the mean taken over the image without
a 3-pixel border. Per example, the images are de-normalised with the slice's mean and std and the
data range is the max of the slice's volume (1 for padding, whose volume max is 0); values are
clipped to [-1, 1].
"""

from __future__ import annotations

import numpy as np


def uniform_filter(x: np.ndarray, size: int) -> np.ndarray:
    """Mean over a size x size window around each pixel of (N, H, W) images, edges mirrored."""
    p = size // 2
    padded = np.pad(x, ((0, 0), (p, p), (p, p)), mode="symmetric")
    # Box sums from 2-D cumulative sums (with a leading zero row and column).
    c = np.pad(padded.cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))
    h, w = x.shape[1:]
    sums = c[:, size:, size:] - c[:, :h, size:] - c[:, size:, :w] + c[:, :h, :w]
    return sums / size**2


def structural_similarity(
    x: np.ndarray,
    y: np.ndarray,
    data_range: np.ndarray,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
) -> np.ndarray:
    """Mean SSIM of each pair of (N, H, W) images (float64), one data range per image."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = win_size**2
    cov_norm = n / (n - 1)
    ux, uy = uniform_filter(x, win_size), uniform_filter(y, win_size)
    vx = cov_norm * (uniform_filter(x * x, win_size) - ux * ux)
    vy = cov_norm * (uniform_filter(y * y, win_size) - uy * uy)
    vxy = cov_norm * (uniform_filter(x * y, win_size) - ux * uy)
    r = np.asarray(data_range, np.float64).reshape(-1, 1, 1)
    c1, c2 = (k1 * r) ** 2, (k2 * r) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (win_size - 1) // 2
    return s[:, pad:-pad, pad:-pad].mean(axis=(1, 2))


def ssim(
    outputs: np.ndarray,
    targets: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    volume_max: np.ndarray,
) -> np.ndarray:
    """Per-example SSIM of normalised outputs and targets, scored as the reference does."""
    volume_max = np.where(volume_max == 0, 1.0, volume_max)
    m, s = np.reshape(mean, (-1, 1, 1)), np.reshape(std, (-1, 1, 1))
    return np.clip(structural_similarity(outputs * s + m, targets * s + m, volume_max), -1.0, 1.0)


def ssim_sum(
    outputs: np.ndarray,
    targets: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    volume_max: np.ndarray,
    weights: np.ndarray,
) -> float:
    """The SSIM summed over the real (weight 1) examples of an eval batch, in float64.

    Both frameworks' evals hand their outputs to this; the split's SSIM is the sum over its
    batches divided by the number of real examples (the reference's aggregation)."""
    values = ssim(np.asarray(outputs, np.float64), targets, mean, std, volume_max)
    return float(np.sum(values * np.asarray(weights, np.float64).reshape(len(values), -1)[:, 0]))
