"""CIFAR-10 with ResNet-18, a development workload (WORKLOADS.md).

Data: the uint8 arrays `algoperf datasets prepare cifar` writes (`train_images.npy`, ...), or the
CIFAR-10 python-pickle batches (`data_batch_1` ... `data_batch_5`, `test_batch`, as in
`cifar-10-batches-py/`): train = the first 45,000 training images, validation = the last 5,000,
test = the 10,000 test images; eval-train = 5,120 training images drawn at random (the
reference rounds the validation size up to whole eval batches of 1,024). Training batches get
the reference's augmentation: a random 32 x 32 crop of the image zero-padded by 4 on each side,
and a horizontal flip with probability 1/2; every image is scaled to [0, 1] and normalised by the
reference's channel means and standard deviations.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from algoperf.spec import LossType
from workloads.input_pipeline import ArrayBatchStream, prepared_dir, teacher_labels
from workloads.registry import WorkloadInfo

MEAN = np.array([0.49139968, 0.48215827, 0.44653124], dtype=np.float32)
STDDEV = np.array([0.24703233, 0.24348505, 0.26158768], dtype=np.float32)
NUM_TRAIN = 45_000
NUM_VALIDATION = 5_000
EVAL_BATCH_SIZE = 1_024
# The reference: the validation size rounded up to a multiple of the eval batch size.
NUM_EVAL_TRAIN = math.ceil(NUM_VALIDATION / EVAL_BATCH_SIZE) * EVAL_BATCH_SIZE
EVAL_TRAIN_SEED = 0
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]

WORKLOADS = [
    WorkloadInfo(
        name="cifar",
        dataset="CIFAR-10 45,000 / 5,000 (from train) / 10,000",
        model="ResNet-18 (3x3 stem, no max-pool, 4 stages of 2 basic blocks, last BN scale 0)",
        target_metric_name="accuracy",
        higher_is_better=True,
        validation_target=0.85,
        test_target=0.85,
        max_allowed_runtime_sec=3600,
        step_hint=4883,
        eval_period_time_sec=600,
        eval_batch_size=EVAL_BATCH_SIZE,
        num_train_examples=NUM_TRAIN,
        num_eval_train_examples=NUM_EVAL_TRAIN,
        num_validation_examples=NUM_VALIDATION,
        num_test_examples=10_000,
        loss_type=LossType.SOFTMAX_CROSS_ENTROPY,
        n_params={"pytorch": 11_173_962, "jax": 11_173_962},
        implementations={
            "pytorch": "workloads.cifar.torch_workload:CifarWorkload",
            "jax": "workloads.cifar.jax_workload:CifarWorkload",
        },
        development=True,
        default_batch_size=128,
    )
]


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickle batch: (N, 32, 32, 3) uint8 images and (N,) int64 labels."""
    with open(path, "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    data = raw.get(b"data", raw.get("data"))
    labels = raw.get(b"labels", raw.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"{path} is not a CIFAR-10 python batch (no data/labels entries)")
    images = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, np.asarray(labels, dtype=np.int64)


def normalise(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW, normalised per channel."""
    x = (images.astype(np.float32) / 255.0 - MEAN) / STDDEV
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random crop of the 4-pixel zero-padded image and a random horizontal flip (uint8 NHWC)."""
    n = len(images)
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    dy, dx = rng.integers(0, 9, n), rng.integers(0, 9, n)
    flip = rng.random(n) < 0.5
    # (n, 9, 9, C, 32, 32): every 32 x 32 window of every padded image, without a copy.
    windows = np.lib.stride_tricks.sliding_window_view(padded, (32, 32), axis=(1, 2))
    out = windows[np.arange(n), dy, dx].transpose(0, 2, 3, 1)  # (n, 32, 32, C)
    out = np.where(flip[:, None, None, None], out[:, :, ::-1], out)
    return np.ascontiguousarray(out)


class AugmentedStream:
    """Shuffled uint8 batches, augmented with randomness fixed by (seed, epoch, offset)."""

    def __init__(self, arrays: dict[str, np.ndarray], batch_size: int, seed: int) -> None:
        self.inner = ArrayBatchStream(arrays, batch_size, seed)
        self.seed = seed

    def __iter__(self) -> AugmentedStream:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = next(self.inner)
        rng = np.random.default_rng([self.seed, self.inner.epoch, self.inner.offset, 1])
        return {"inputs": normalise(augment(batch["images"], rng)), "targets": batch["targets"]}

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)


class CifarData:
    data: str
    data_dir: str | None
    synthetic_sizes: dict[str, int]

    @property
    def train_mean(self) -> np.ndarray:
        return MEAN

    @property
    def train_stddev(self) -> np.ndarray:
        return STDDEV

    def _folder(self) -> Path:
        if not self.data_dir:
            raise FileNotFoundError(
                "cifar reads the arrays of `algoperf datasets prepare cifar` (or the CIFAR-10 python "
                "batches, cifar-10-batches-py/) from --data-dir, or use --data synthetic."
            )
        root = prepared_dir(self.data_dir, "cifar")
        return root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root

    def _read(self, part: str) -> tuple[np.ndarray, np.ndarray]:
        """'train' or 'test' images (N, 32, 32, 3) uint8 and labels: prepared arrays, else pickles."""
        folder = self._folder()
        if (folder / f"{part}_images.npy").exists():
            return (
                np.load(folder / f"{part}_images.npy", mmap_mode="r"),
                np.load(folder / f"{part}_labels.npy"),
            )
        if part == "test":
            if not (folder / "test_batch").exists():
                raise FileNotFoundError(
                    f"No CIFAR-10 test split in {folder}: expected test_images.npy (algoperf "
                    "datasets prepare cifar) or the python batch test_batch."
                )
            return read_batch(folder / "test_batch")
        parts = [read_batch(folder / name) for name in TRAIN_FILES if (folder / name).exists()]
        if not parts:
            raise FileNotFoundError(
                f"No CIFAR-10 training split in {folder}: expected train_images.npy (algoperf "
                "datasets prepare cifar) or the python batches data_batch_1 ..."
            )
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _uint8_split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if split == "test":
            return self._read("test")
        images, labels = self._read("train")
        # 45,000 / 5,000 of the real 50,000; a smaller folder (a fixture) is cut 9 : 1 alike.
        cut = min(NUM_TRAIN, len(images) * 9 // 10)
        if split == "validation":
            return images[cut:], labels[cut:]
        images, labels = images[:cut], labels[:cut]
        if split == "eval_train":
            # As the reference: a seeded random subset of the training images (not augmented).
            order = np.random.default_rng(EVAL_TRAIN_SEED).permutation(cut)[:NUM_EVAL_TRAIN]
            return images[order], labels[order]
        return images, labels

    def real_split(self, split: str) -> dict[str, np.ndarray]:
        images, labels = self._uint8_split(split)
        return {"inputs": normalise(images), "targets": labels}

    def train_batches(self, global_batch_size: int, seed: int) -> Any:
        if self.data == "synthetic":
            return ArrayBatchStream(self.split_arrays("train"), global_batch_size, seed)  # type: ignore[attr-defined]
        images, labels = self._uint8_split("train")
        return AugmentedStream({"images": images, "targets": labels}, global_batch_size, seed)

    def synthetic_split(self, split: str) -> dict[str, np.ndarray]:
        n = self.synthetic_sizes[split]
        offset = {"train": 0, "eval_train": 0, "validation": 1, "test": 2}[split]
        x = np.random.default_rng(500 + offset).standard_normal((n, 3, 32, 32)).astype(np.float32)
        return {"inputs": x, "targets": teacher_labels(x, 10, seed=0)}
