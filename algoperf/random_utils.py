"""Seeds and random keys without a framework.

Keys are JAX-style: a numpy uint32 array of shape (2,). Derivation folds data into a key through
`numpy.random.SeedSequence` (a documented, platform-independent hash), never Python's `hash()`,
which changes between processes.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

KeyArray = np.ndarray


def _as_entropy(data: Any) -> list[int]:
    if isinstance(data, str):
        return [zlib.crc32(data.encode("utf-8")), len(data)]
    if isinstance(data, (int, np.integer)):
        value = int(data)
        return [value & 0xFFFFFFFF, (value >> 32) & 0xFFFFFFFF, 1 if value < 0 else 0]
    if isinstance(data, np.ndarray):
        return [int(v) for v in data.astype(np.uint32).ravel()]
    raise TypeError(f"cannot fold {type(data).__name__} into a random key; use an int or a str.")


def prng_key(seed: int) -> KeyArray:
    """The root key of an integer seed."""
    return fold_in(np.zeros(2, dtype=np.uint32), seed)


# The reference's names (`algoperf.random_utils.PRNGKey(seed)`, `split`, `fold_in`): the same
# uint32[2] keys, which jax.random accepts as raw keys in a JAX submission.
PRNGKey = prng_key


def fold_in(key: KeyArray, data: Any) -> KeyArray:
    """A new key determined by `key` and `data` (an int, a str or a uint32 array)."""
    entropy = [int(v) for v in np.asarray(key, dtype=np.uint32).ravel()] + _as_entropy(data)
    return np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)


def split(key: KeyArray, num: int = 2) -> np.ndarray:
    """`num` independent keys from one, shape (num, 2)."""
    return np.stack([fold_in(key, f"split/{i}") for i in range(num)])


def to_seed(key: KeyArray) -> int:
    """A 31-bit integer seed for libraries that take ints (torch.manual_seed, numpy)."""
    k = np.asarray(key, dtype=np.uint32).ravel()
    return int((int(k[0]) << 32 | int(k[-1])) % (2**31 - 1))


def derive_seed(seed: int, *path: Any) -> int:
    """An integer seed for a place in an experiment, e.g. derive_seed(seed, workload, study, trial)."""
    key = prng_key(seed)
    for item in path:
        key = fold_in(key, item)
    return to_seed(key)


_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def step_keys(key: KeyArray, step: int, num: int) -> list[KeyArray]:
    """`num` keys for one training step: fold_in(key, step) then split, via SplitMix64.

    The per-step derivation runs inside the timed loop, so it is a few integer operations
    (about a microsecond) rather than a SeedSequence (tens of microseconds per key).
    """
    base = _splitmix64(((int(key[0]) << 32) | int(key[1])) ^ _splitmix64(step))
    keys = []
    for i in range(num):
        v = _splitmix64(base + i + 1)
        keys.append(np.array([v >> 32, v & 0xFFFFFFFF], dtype=np.uint32))
    return keys
