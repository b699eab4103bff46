"""Framework-free input pipelines: numpy batches both frameworks share, made ahead in the background.

The contract every workload keeps: `train_batches(global_batch_size, seed)` returns an endless
stream of numpy batches (dicts of arrays, nested dicts for graphs) with `state_dict()` and
`load_state_dict()`; the state is the exact position, so a restored stream serves the very batches
the original would have served next. Streams are deterministic functions of the seed.

Running ahead of the step: one mechanism, grain. Per-example work that parallelises (JPEG
decoding, k-space FFTs) runs in grain's read threads (`grain.ReadOptions(num_threads=...)`) inside
the streams that need it; every training stream is then wrapped by `Prefetcher`, grain's
`ThreadPrefetchDatasetIterator` over the stream plus the framework's device placement, so that
batch assembly and the host-to-device copy of the next batches happen in a background thread
while the current step runs. Threads rather than processes: the heavy parts (decoding, numpy,
torch copies) release the GIL, the streams' state stays in one process (so checkpoints are exact
and cheap), and on a 2-core machine there is nothing to gain from more processes than cores.
The prefetcher's state is the stream's position after the last batch it *handed out* (grain
records the state with every prefetched element), so prefetching never moves a checkpoint.

`ArrayBatchStream` serves shuffled, repeated training batches from in-memory arrays. Its whole
position is two integers (epoch, offset). It gathers a batch with one fancy-index per array
instead of one Python call per example, which is what makes small workloads (MNIST, MNIST-1D)
step at the speed of their model.

Data parallelism: `shard(batch, rank, world_size, layout)` is one process's share of a global
batch: consecutive rows (`"rows"`: images, packed WMT rows, ...) or its own per-device batch
(`"devices"`: OGBG's graph batches, packed per device and stacked on a leading axis).
"""

from __future__ import annotations

import atexit
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

Batch = dict[str, np.ndarray]

# Batches made ahead of the step. Two hide a step-to-step jitter of one batch's production time;
# more only hold memory (an ImageNet batch of 1,024 is 600 MB of float32).
PREFETCH_BATCHES = 2
PREPARED_MANIFEST = "algoperf_manifest.json"  # written by `algoperf datasets prepare`


def prepared_dir(data_dir: str | Path, dataset: str) -> Path:
    """`<data_dir>/<dataset>` when `algoperf datasets prepare` made it there, else `data_dir`.

    `prepare <dataset> --data-dir DIR` writes into DIR/<dataset>/; a run may be given either.
    """
    root = Path(data_dir)
    nested = root / dataset
    return nested if (nested / PREPARED_MANIFEST).exists() else root


class _Converted:
    """A stream seen through `convert` (device placement), with grain's get_state/set_state."""

    def __init__(self, stream: Any, convert: Callable[[Any], Any] | None) -> None:
        self.stream, self.convert = stream, convert

    def __iter__(self) -> _Converted:
        return self

    def __next__(self) -> Any:
        batch = next(self.stream)
        return batch if self.convert is None else self.convert(batch)

    def get_state(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def set_state(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)


_LIVE: weakref.WeakSet[Prefetcher] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    # Stop the threads before the interpreter tears modules down under them.
    for prefetcher in list(_LIVE):
        prefetcher.close()


class Prefetcher:
    """Batches of a checkpointable stream, made (and converted) ahead in a background thread.

    `convert` runs in that thread too: for a framework it is the host-to-device copy, which then
    overlaps the step. Production starts at once, so the first batches are ready by the time the
    first step asks (the runner builds the queue before it initialises the model). Errors in the
    stream are raised by the `next()` that would have returned the failed batch.
    """

    def __init__(
        self,
        stream: Any,
        convert: Callable[[Any], Any] | None = None,
        buffer_size: int = PREFETCH_BATCHES,
    ) -> None:
        from grain.experimental import ThreadPrefetchDatasetIterator

        self.stream = stream
        self._iterator = ThreadPrefetchDatasetIterator(_Converted(stream, convert), buffer_size)
        if buffer_size > 0:
            self._iterator.start_prefetch()
        _LIVE.add(self)

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> Any:
        return next(self._iterator)

    def state_dict(self) -> dict[str, Any]:
        """The stream's position after the last batch handed out (not the last one made)."""
        return self._iterator.get_state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._iterator.set_state(state)

    def close(self) -> None:
        self._iterator.close()


def shard(batch: Any, rank: int, world_size: int, layout: str = "rows") -> Any:
    """Process `rank`'s share of a global numpy batch among `world_size` processes.

    `"rows"`: every array's rows [rank * n / w, (rank + 1) * n / w). When the rows do not divide
    evenly, a batch with `weights` is padded with zero rows of weight 0 first (nothing is lost or
    counted twice); any other batch is an error, since dropping rows would change what is trained.
    `"devices"`: every array carries a leading axis of one batch per process (OGBG packs each
    device's graphs separately, as the reference does); the process takes its own.
    Nested dicts (OGBG's graph arrays) are sharded alike; values that are not arrays pass through.
    """
    if world_size == 1:
        return batch
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not one of the {world_size} processes")
    if layout == "devices":
        return _map_arrays(batch, lambda a: _own_device(a, rank, world_size))
    if layout != "rows":
        raise ValueError(f"unknown batch layout {layout!r}: expected 'rows' or 'devices'")
    rows = {len(a) for a in _arrays(batch)}
    if len(rows) != 1:
        raise ValueError(f"a batch's arrays have different numbers of rows {sorted(rows)}; cannot shard by rows")
    n = rows.pop()
    if n % world_size:
        if not (isinstance(batch, dict) and "weights" in batch):
            raise ValueError(
                f"a global batch of {n} rows cannot be split evenly over {world_size} processes; "
                f"choose a batch size divisible by {world_size}"
            )
        pad = world_size - n % world_size
        batch = _map_arrays(batch, lambda a: np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)]))
        n += pad
    per = n // world_size
    return _map_arrays(batch, lambda a: a[rank * per : (rank + 1) * per])


def _own_device(array: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    if len(array) != world_size:
        raise ValueError(
            f"a per-device batch has a leading axis of {len(array)}, expected one batch per "
            f"process ({world_size})"
        )
    return array[rank]


def _arrays(tree: Any) -> Iterator[np.ndarray]:
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _arrays(v)
    elif isinstance(tree, np.ndarray):
        yield tree


def _map_arrays(tree: Any, fn: Callable[[np.ndarray], np.ndarray]) -> Any:
    if isinstance(tree, dict):
        return {k: _map_arrays(v, fn) for k, v in tree.items()}
    return fn(tree) if isinstance(tree, np.ndarray) else tree


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
    batch_size = min(batch_size, max(n, 1))  # a split smaller than a batch: no padding to compute
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
