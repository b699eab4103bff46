"""The Transformer's fixed sinusoidal position table (framework-free: the JAX model reads it, the
converter writes the PyTorch model's `pos_encoder.pe` buffer from it)."""

from __future__ import annotations

import functools
import math

import numpy as np


@functools.cache
def sinusoids(max_len: int, d: int) -> np.ndarray:
    """(max_len, d): sin of position / 10000^(i / (d/2 - 1)) on the first half, cos on the second
    (the reference's table)."""
    half = d // 2
    position = np.arange(max_len)[:, None]
    div = np.exp(np.arange(half) * (-math.log(10000.0) / (half - 1)))
    table = np.zeros((max_len, d), np.float32)
    table[:, :half] = np.sin(position * div)
    table[:, half : 2 * half] = np.cos(position * div)
    table.setflags(write=False)
    return table
