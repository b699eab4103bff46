"""The Conformer's sinusoidal position encoding constants (framework-free: the JAX model reads
them, the converter writes the PyTorch model's `inv_timescales` buffer from them)."""

from __future__ import annotations

import functools
import math

import numpy as np


@functools.cache
def inv_timescales(dim: int = 512, max_timescale: float = 10_000.0) -> np.ndarray:
    """(dim / 2,) float32: 1 / 10000^(i / (dim/2 - 1)).

    The exponent is formed in float32 and the exponential taken in float64, then rounded: a table
    that does not depend on a framework's float32 `exp` (PyTorch's and XLA's each differ from it
    in a few entries by one float32 ulp, which moves a 25th frame's angle by ~1e-6).
    """
    half = dim // 2
    exponent = np.arange(half, dtype=np.float32) * np.float32(-(math.log(max_timescale) / (half - 1)))
    table = np.exp(exponent.astype(np.float64)).astype(np.float32)
    table.setflags(write=False)
    return table
