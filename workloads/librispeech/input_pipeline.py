"""LibriSpeech batches from the reference's preprocessed files (numpy, both frameworks).

Layout of a data folder, as `datasets/librispeech_preprocess.py` of the reference writes it (and
`workloads/librispeech/preparation.py` here): per subset (`train-clean-100`, `dev-clean`, ...) a
listing `<subset>.csv` written by pandas (`,id` header, then `<row>,<utterance id>`) and a folder
`<subset>/` with `<id>_audio.npy` (the 16 kHz samples as integers) and `<id>_targets.npy` (token
ids of the transcript, ending with </s>). Splits: train and eval_train = train-clean-100 +
train-clean-360 + train-other-500; validation = dev-clean + dev-other; test = test-clean.

Every example is padded to 320,000 samples and 256 tokens (the reference's maxima), with 0/1
paddings arrays (1 = padding). A batch is the dict {inputs, input_paddings, targets,
target_paddings}; the PyTorch workload turns it into the reference's
{inputs: (audio, paddings), targets: (ids, paddings)}.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from workloads.input_pipeline import ArrayBatchStream

MAX_AUDIO_LENGTH = 320_000
MAX_TARGET_LENGTH = 256
TRAIN_SUBSETS = ("train-clean-100", "train-clean-360", "train-other-500")
SPLIT_SUBSETS = {
    "train": TRAIN_SUBSETS,
    "eval_train": TRAIN_SUBSETS,
    "validation": ("dev-clean", "dev-other"),
    "test": ("test-clean",),
}
EVAL_TRAIN_SEED = 0  # the fixed random subset of the training set that eval_train measures

Batch = dict[str, np.ndarray]


def read_listing(path: Path) -> list[str]:
    """Utterance ids of a subset listing: the `id` column (the reference's CSV has it second)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or "id" not in rows[0]:
        raise ValueError(
            f"{path} has no `id` column: expected the reference's listing (`,id` header)."
        )
    column = rows[0].index("id")
    return [row[column] for row in rows[1:] if row]


def utterance_files(data_dir: str | Path, split: str) -> list[tuple[Path, Path]]:
    """(audio .npy, targets .npy) of every utterance of a split, subsets and listings in order."""
    data_dir = Path(data_dir)
    subsets = SPLIT_SUBSETS[split]
    files = []
    for subset in subsets:
        listing = data_dir / f"{subset}.csv"
        if listing.exists():
            folder = data_dir / subset
            files += [
                (folder / f"{u}_audio.npy", folder / f"{u}_targets.npy")
                for u in read_listing(listing)
            ]
    if not files:
        raise FileNotFoundError(
            f"No LibriSpeech {split} utterances in {data_dir}: expected "
            f"{' and/or '.join(f'{s}.csv' for s in subsets)} with their folders. Write them with "
            "`algoperf datasets prepare librispeech_conformer --data-dir DIR --source LibriSpeech/`."
        )
    return files


def pad_examples(
    audio: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    audio_length: int = MAX_AUDIO_LENGTH,
    target_length: int = MAX_TARGET_LENGTH,
) -> Batch:
    """Pads utterances to fixed lengths; an utterance longer than the maximum is an error."""
    n = len(audio)
    batch: Batch = {
        "inputs": np.zeros((n, audio_length), np.float32),
        "input_paddings": np.ones((n, audio_length), np.float32),
        "targets": np.zeros((n, target_length), np.int64),
        "target_paddings": np.ones((n, target_length), np.float32),
    }
    for i, (a, t) in enumerate(zip(audio, targets)):
        if len(a) > audio_length or len(t) > target_length:
            raise ValueError(
                f"utterance {i} has {len(a)} samples and {len(t)} tokens; the maxima are "
                f"{audio_length} and {target_length} (the preparation step drops longer ones)"
            )
        batch["inputs"][i, : len(a)] = a
        batch["input_paddings"][i, : len(a)] = 0.0
        batch["targets"][i, : len(t)] = t
        batch["target_paddings"][i, : len(t)] = 0.0
    return batch


def load_examples(files: Sequence[tuple[Path, Path]]) -> Batch:
    return pad_examples([np.load(a) for a, _ in files], [np.load(t) for _, t in files])


class UtteranceStream:
    """Endless shuffled training batches read from the .npy files.

    Each epoch is a fresh permutation seeded by (seed, epoch); the last partial batch of an epoch
    is dropped, as the reference's loader does. The position is (epoch, offset), so a restored
    stream gives exactly the batches the original would have given next.
    """

    def __init__(self, files: Sequence[tuple[Path, Path]], batch_size: int, seed: int) -> None:
        self.files = list(files)
        self.order = ArrayBatchStream({"index": np.arange(len(self.files))}, batch_size, seed)

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        return load_examples([self.files[i] for i in next(self.order)["index"]])

    def state_dict(self) -> dict[str, Any]:
        return self.order.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order.load_state_dict(state)


def eval_files(data_dir: str | Path, split: str, num_examples: int) -> list[tuple[Path, Path]]:
    """The utterances an eval reads: the split in order; for eval_train a fixed random subset."""
    files = utterance_files(data_dir, split)
    if split == "eval_train":
        keep = np.random.default_rng(EVAL_TRAIN_SEED).permutation(len(files))[:num_examples]
        return [files[i] for i in keep]
    return files[:num_examples]


def eval_batches(files: Sequence[tuple[Path, Path]], batch_size: int) -> Iterator[Batch]:
    """In-order batches of `batch_size`, the last one filled with all-padding rows of weight 0."""
    for start in range(0, len(files), batch_size):
        part = files[start : start + batch_size]
        batch = load_examples(part)
        fill = batch_size - len(part)
        if fill:
            empty = pad_examples([np.zeros(0)] * fill, [np.zeros(0)] * fill)
            batch = {k: np.concatenate([batch[k], empty[k]]) for k in batch}
        batch["weights"] = (np.arange(batch_size) < len(part)).astype(np.float32)
        yield batch


# ---- synthetic speech ----------------------------------------------------------------------------
SYNTHETIC_TOKENS = 16  # token ids 3..18 (0-2 are <unk>/blank, <s>, </s> as in the real vocabulary)
SYNTHETIC_SEGMENT = 3_200  # samples per token: 0.2 s
SYNTHETIC_MAX_TOKENS = 5


def synthetic_examples(n: int, seed: int) -> Batch:
    """Utterances of 2-5 tones, 0.2 s each, whose transcript is the sequence of their pitches.

    The label is a fixed function of the audio (a random "teacher" mapping 16 pitches between
    250 Hz and 4 kHz to 16 tokens), so a model can learn it; each utterance is padded to 1 s and
    5 tokens (+ </s>), so paddings are exercised.
    """
    rng = np.random.default_rng(seed)
    pitches = np.geomspace(250.0, 4000.0, SYNTHETIC_TOKENS)
    teacher = np.random.default_rng(1234).permutation(SYNTHETIC_TOKENS) + 3
    t = np.arange(SYNTHETIC_SEGMENT) / 16_000
    audio, targets = [], []
    for _ in range(n):
        k = rng.integers(0, SYNTHETIC_TOKENS, rng.integers(2, SYNTHETIC_MAX_TOKENS + 1))
        wave = np.concatenate(
            [np.sin(2 * np.pi * pitches[j] * t + rng.uniform(0, 2 * np.pi)) for j in k]
        )
        noise = rng.normal(0.0, 300.0, len(wave))
        audio.append(np.round(wave * 8_000 + noise))
        targets.append(np.append(teacher[k], 2))  # </s>
    return pad_examples(
        audio, targets, SYNTHETIC_SEGMENT * SYNTHETIC_MAX_TOKENS, SYNTHETIC_MAX_TOKENS + 1
    )


def synthetic_detokenize(ids: Sequence[int]) -> str:
    """Synthetic transcripts: one word per token, control ids (0-2) dropped."""
    return " ".join(f"w{int(i)}" for i in ids if int(i) > 2)
