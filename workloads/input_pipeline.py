"""Framework-free input pipelines: numpy batches both frameworks share.

`ArrayBatchStream` serves shuffled, repeated training batches from in-memory arrays. Its whole
position is two integers (epoch, offset), so a checkpoint restores it exactly. It gathers a
batch with one fancy-index per array instead of one Python call per example, which is what makes
small workloads (MNIST, MNIST-1D) step at the speed of their model. File-backed workloads use
`grain` (checkpointable too) behind the same `state_dict()/load_state_dict()` interface.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

Batch = dict[str, np.ndarray]


class ArrayBatchStream:
    """Endless shuffled batches from arrays of equal length; each epoch a fresh permutation."""

    def __init__(
        self, arrays: dict[str, np.ndarray], batch_size: int, seed: int, shuffle: bool = True
    ) -> None:
        lengths = {len(a) for a in arrays.values()}
        if len(lengths) != 1:
            raise ValueError(f"arrays of different lengths {sorted(lengths)} cannot be batched together")
        self.arrays = arrays
        self.num_examples = lengths.pop()
        if batch_size > self.num_examples:
            raise ValueError(
                f"batch size {batch_size} is larger than the split ({self.num_examples} examples)"
            )
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.offset = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_examples)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        # Batches never straddle epochs: the tail of a permutation shorter than a batch is dropped,
        # as the reference's drop_remainder does.
        if self.offset + self.batch_size > self.num_examples:
            self.epoch += 1
            self.offset = 0
            self._order = self._permutation(self.epoch)
        idx = self._order[self.offset : self.offset + self.batch_size]
        self.offset += self.batch_size
        return {k: a[idx] for k, a in self.arrays.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.offset = int(state["offset"])
        self._order = self._permutation(self.epoch)


def eval_batches(arrays: dict[str, np.ndarray], num_examples: int, batch_size: int) -> Iterator[Batch]:
    """The first `num_examples` in order, in batches of `batch_size`; the last one padded.

    Each batch carries `weights` (1 for a real example, 0 for padding), so summed metrics over
    the batches count every example exactly once, as the reference's padded eval does.
    """
    n = min(num_examples, len(next(iter(arrays.values()))))
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        pad = batch_size - (stop - start)
        batch = {}
        for k, a in arrays.items():
            part = a[start:stop]
            if pad:
                part = np.concatenate([part, np.zeros((pad, *part.shape[1:]), dtype=part.dtype)])
            batch[k] = part
        weights = np.ones(batch_size, dtype=np.float32)
        if pad:
            weights[batch_size - pad :] = 0.0
        if "weights" in arrays:
            batch["weights"] = batch["weights"] * weights.reshape((-1,) + (1,) * (batch["weights"].ndim - 1))
        else:
            batch["weights"] = weights
        yield batch


def teacher_labels(inputs: np.ndarray, num_classes: int, seed: int, hidden: int = 64) -> np.ndarray:
    """Class labels from a fixed random two-layer network on the flattened inputs.

    Synthetic data with these labels is learnable (a deterministic function of the input) but
    not trivially so, which lets a smoke test tell a working optimizer from a broken one.
    """
    rng = np.random.default_rng(seed)
    x = inputs.reshape(len(inputs), -1).astype(np.float64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    w1 = rng.standard_normal((x.shape[1], hidden)) / np.sqrt(x.shape[1])
    w2 = rng.standard_normal((hidden, num_classes)) / np.sqrt(hidden)
    logits = np.tanh(x @ w1) @ w2
    # Centre the logits per class so that every class occurs: a random net is otherwise lopsided.
    logits -= logits.mean(0)
    return logits.argmax(1).astype(np.int64)
