"""WMT numpy input pipeline: tokenised sentence pairs, the reference's packing, eval batches.

Facts kept from the reference pipeline (AlgoPerf `workloads/wmt/input_pipeline.py`):

- every split drops pairs whose longer side exceeds `max_length` (256) tokens, before shuffling;
- the train and eval-train splits are shuffled through a buffer of 1,024 examples (reshuffled
  every epoch), the train split repeats endlessly;
- training examples are packed: consecutive chunks of `max_length` (256) shuffled examples are
  packed greedily, in order, into rows of `max_length` tokens; an example joins the current row
  when both its sides still fit, otherwise the row is written and a new one starts; the last row
  of a chunk is written at the end of the chunk. Each side of an example is first cut to as many
  tokens as it has non-zero tokens (the reference's quirk; it only matters for <unk> = 0). Rows
  carry `<key>_position` (0, 1, ... within each example) and `<key>_segmentation`
  (1, 2, ... per example, 0 on padding), and batches also carry per-token `weights`
  (targets > 0), as the reference's queue adds them;
- eval batches are padded to `max_length`, in file order, not packed.

Our shuffle buffer is the textbook one (numpy), not TensorFlow's, so the order differs from the
reference's while the distribution is the same. `PackedTrainStream.state_dict()` is the whole
position (epoch, read cursor, buffer, random state, rows of the current chunk not yet served), so a
restored stream serves exactly the batches the original would have.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

SHUFFLE_BUFFER = 1024
PACK_KEYS = (
    "inputs",
    "inputs_position",
    "inputs_segmentation",
    "targets",
    "targets_position",
    "targets_segmentation",
)


class TokenizedPairs:
    """Sentence pairs as flat token arrays with offsets (what `prepare` stores as .npy files)."""

    def __init__(
        self, src: np.ndarray, src_offsets: np.ndarray, tgt: np.ndarray, tgt_offsets: np.ndarray
    ) -> None:
        if len(src_offsets) != len(tgt_offsets):
            raise ValueError(
                f"{len(src_offsets) - 1} source sentences but {len(tgt_offsets) - 1} target sentences"
            )
        self.src, self.src_offsets = src, src_offsets
        self.tgt, self.tgt_offsets = tgt, tgt_offsets

    @classmethod
    def from_lists(cls, pairs: list[tuple[np.ndarray, np.ndarray]]) -> TokenizedPairs:
        def flat(seqs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
            offsets = np.zeros(len(seqs) + 1, np.int64)
            offsets[1:] = np.cumsum([len(s) for s in seqs])
            data = (
                np.concatenate([np.asarray(s, np.int32) for s in seqs])
                if seqs
                else np.zeros(0, np.int32)
            )
            return data, offsets

        src, src_off = flat([p[0] for p in pairs])
        tgt, tgt_off = flat([p[1] for p in pairs])
        return cls(src, src_off, tgt, tgt_off)

    @classmethod
    def concatenate(cls, parts: list[TokenizedPairs]) -> TokenizedPairs:
        def join(
            datas: list[np.ndarray], offsets: list[np.ndarray]
        ) -> tuple[np.ndarray, np.ndarray]:
            starts = np.cumsum([0] + [int(o[-1]) for o in offsets[:-1]])
            joined = [np.zeros(1, np.int64)] + [o[1:] + s for o, s in zip(offsets, starts)]
            return np.concatenate([np.zeros(0, np.int32), *datas]), np.concatenate(joined)

        src, src_off = join([p.src for p in parts], [p.src_offsets for p in parts])
        tgt, tgt_off = join([p.tgt for p in parts], [p.tgt_offsets for p in parts])
        return cls(src, src_off, tgt, tgt_off)

    def __len__(self) -> int:
        return len(self.src_offsets) - 1

    def source(self, i: int) -> np.ndarray:
        return np.asarray(self.src[self.src_offsets[i] : self.src_offsets[i + 1]])

    def target(self, i: int) -> np.ndarray:
        return np.asarray(self.tgt[self.tgt_offsets[i] : self.tgt_offsets[i + 1]])

    def kept(self, max_length: int) -> np.ndarray:
        """Indices of the pairs whose longer side has at most `max_length` tokens (in order)."""
        longest = np.maximum(np.diff(self.src_offsets), np.diff(self.tgt_offsets))
        return np.flatnonzero(longest <= max_length)


def _nonzero_prefix(seq: np.ndarray) -> np.ndarray:
    """The reference keeps the first (number of non-zero tokens) tokens of each side."""
    return seq[: int(np.count_nonzero(seq))]


def pack_rows(examples: list[tuple[np.ndarray, np.ndarray]], length: int) -> list[list[int]]:
    """Which examples (indices into `examples`) share each packed row, greedily and in order."""
    rows: list[list[int]] = []
    current: list[int] = []
    used_src = used_tgt = 0
    for i, (src, tgt) in enumerate(examples):
        n_src, n_tgt = min(len(src), length), min(len(tgt), length)
        if current and (used_src + n_src > length or used_tgt + n_tgt > length):
            rows.append(current)
            current, used_src, used_tgt = [], 0, 0
        current.append(i)
        used_src += n_src
        used_tgt += n_tgt
    if current:
        rows.append(current)
    return rows


def write_rows(
    rows: list[list[tuple[np.ndarray, np.ndarray]]], length: int
) -> dict[str, np.ndarray]:
    """Packed arrays (tokens, positions, segmentations) of rows of (source, target) examples."""
    out = {k: np.zeros((len(rows), length), np.int32) for k in PACK_KEYS}
    for r, row in enumerate(rows):
        for side, key in ((0, "inputs"), (1, "targets")):
            at = 0
            for example in row:
                seq = example[side][:length]
                out[key][r, at : at + len(seq)] = seq
                out[f"{key}_position"][r, at : at + len(seq)] = np.arange(len(seq))
                at += len(seq)
            # The reference numbers segments by counting position-0 entries (padding included,
            # positions there are 0 too) and zeroes them where the token is padding.
            starts = np.cumsum(out[f"{key}_position"][r] == 0)
            out[f"{key}_segmentation"][r] = starts * (out[key][r] != 0)
    return out


def pack(examples: list[tuple[np.ndarray, np.ndarray]], length: int) -> dict[str, np.ndarray]:
    """One chunk of examples packed as the reference packs it (see the module docstring)."""
    cut = [
        (_nonzero_prefix(np.asarray(s))[:length], _nonzero_prefix(np.asarray(t))[:length])
        for s, t in examples
    ]
    rows = pack_rows(cut, length)
    return write_rows([[cut[i] for i in row] for row in rows], length)


class ShuffleBuffer:
    """Endless epochs over `indices`, each shuffled through a buffer of `buffer_size` items."""

    def __init__(
        self, indices: np.ndarray, buffer_size: int, seed: int, repeat: bool = True
    ) -> None:
        if len(indices) == 0:
            raise ValueError("no examples to read: every pair is longer than the maximum length")
        self.indices = indices
        self.buffer_size = buffer_size
        self.seed = seed
        self.repeat = repeat
        self._start_epoch(0)

    def _start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.cursor = 0
        self.buffer: list[int] = []
        self.rng = np.random.default_rng([self.seed, epoch])

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        while len(self.buffer) < self.buffer_size and self.cursor < len(self.indices):
            self.buffer.append(int(self.indices[self.cursor]))
            self.cursor += 1
        if not self.buffer:
            if not self.repeat:
                raise StopIteration
            self._start_epoch(self.epoch + 1)
            return next(self)
        j = int(self.rng.integers(len(self.buffer)))
        item = self.buffer[j]
        self.buffer[j] = self.buffer[-1]
        self.buffer.pop()
        return item

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "cursor": self.cursor,
            "buffer": list(self.buffer),
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._start_epoch(int(state["epoch"]))
        self.cursor = int(state["cursor"])
        self.buffer = [int(i) for i in state["buffer"]]
        self.rng.bit_generator.state = state["rng"]


class PackedTrainStream:
    """Endless batches of packed training rows (the reference's train pipeline); checkpointable."""

    def __init__(
        self,
        pairs: TokenizedPairs,
        batch_size: int,
        seed: int,
        max_length: int = 256,
        shuffle_buffer: int = SHUFFLE_BUFFER,
    ) -> None:
        self.pairs = pairs
        self.batch_size = batch_size
        self.max_length = max_length
        self.examples = ShuffleBuffer(pairs.kept(max_length), shuffle_buffer, seed)
        self.pending: list[
            list[int]
        ] = []  # rows (pair indices) of the current chunk not yet served

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def _pack_next_chunk(self) -> None:
        # The reference groups `max_length` consecutive examples before packing each group.
        ids = [next(self.examples) for _ in range(self.max_length)]
        cut = [
            (_nonzero_prefix(self.pairs.source(i)), _nonzero_prefix(self.pairs.target(i)))
            for i in ids
        ]
        self.pending.extend([ids[j] for j in row] for row in pack_rows(cut, self.max_length))

    def __next__(self) -> dict[str, np.ndarray]:
        while len(self.pending) < self.batch_size:
            self._pack_next_chunk()
        rows, self.pending = self.pending[: self.batch_size], self.pending[self.batch_size :]
        examples = [
            [
                (_nonzero_prefix(self.pairs.source(i)), _nonzero_prefix(self.pairs.target(i)))
                for i in row
            ]
            for row in rows
        ]
        batch: dict[str, np.ndarray] = write_rows(examples, self.max_length)
        batch["weights"] = (batch["targets"] > 0).astype(np.float32)
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"examples": self.examples.state_dict(), "pending": [list(r) for r in self.pending]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.examples.load_state_dict(state["examples"])
        self.pending = [[int(i) for i in r] for r in state["pending"]]


def pad_batch(seqs: list[np.ndarray], batch_size: int, length: int) -> np.ndarray:
    out = np.zeros((batch_size, length), np.int32)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s[:length]
    return out


def eval_batches(
    pairs: TokenizedPairs, order: np.ndarray, num_examples: int, batch_size: int, length: int
) -> Iterator[dict[str, np.ndarray]]:
    """Padded batches of the pairs `order[:num_examples]`; the last batch filled with padding.

    `weights` is per token: 1 where the target is a real token of a real example.
    """
    order = order[:num_examples]
    for start in range(0, len(order), batch_size):
        part = order[start : start + batch_size]
        src = pad_batch([pairs.source(i) for i in part], batch_size, length)
        tgt = pad_batch([pairs.target(i) for i in part], batch_size, length)
        real = np.zeros((batch_size, 1), np.float32)
        real[: len(part)] = 1.0
        yield {"inputs": src, "targets": tgt, "weights": (tgt > 0) * real}
