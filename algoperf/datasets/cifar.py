"""CIFAR-10: the binary tarball -> uint8 arrays the cifar workload memory-maps.

`cifar-10-binary.tar.gz` holds `data_batch_1.bin` ... `data_batch_5.bin` and `test_batch.bin`,
10,000 records each: one label byte, then the red, green and blue 32 x 32 planes. The prepared
files are `train_images.npy` (50,000 x 32 x 32 x 3, the batches in order, as torchvision and TFDS
concatenate them), `train_labels.npy`, `test_images.npy`, `test_labels.npy`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from algoperf.datasets.archives import tar_members
from algoperf.datasets.base import DatasetUnavailableError, Recipe, load_manifest
from algoperf.datasets.prepare import Job

ARCHIVE = "cifar-10-binary.tar.gz"
RECORD = 1 + 3 * 32 * 32
TRAIN = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST = ["test_batch.bin"]


def decode_records(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Binary records -> (N, 32, 32, 3) uint8 images (HWC) and (N,) int64 labels."""
    if len(data) % RECORD:
        raise DatasetUnavailableError(f"{name} has {len(data)} bytes, not a whole number of {RECORD}-byte CIFAR-10 records")
    rows = np.frombuffer(data, np.uint8).reshape(-1, RECORD)
    images = rows[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), rows[:, 0].astype(np.int64)


def convert(job: Job) -> None:
    if not job.needs("arrays"):
        return
    found: dict[str, bytes] = {}
    for name, f in tar_members(job.source(ARCHIVE)):
        base = Path(name).name
        if base in TRAIN + TEST:
            found[base] = f.read()
    missing = [n for n in TRAIN + TEST if n not in found]
    if missing:
        raise DatasetUnavailableError(f"{ARCHIVE} lacks {', '.join(missing)}: not the CIFAR-10 binary version")
    outputs = []
    for split, names in (("train", TRAIN), ("test", TEST)):
        parts = [decode_records(found[n], n) for n in names]
        for kind, array in (("images", np.concatenate([p[0] for p in parts])), ("labels", np.concatenate([p[1] for p in parts]))):
            path = job.out / f"{split}_{kind}.npy"
            np.save(path, array)
            outputs.append(path)
    job.done("arrays", outputs)


RECIPE = Recipe(
    name="cifar",
    convert=convert,
    scratch_per_source_byte=0.0,  # read from the tarball, never extracted
    # 60,000 records x 3,073 bytes = 184.4 MB of arrays from a 170.1 MB tarball.
    prepared_per_source_byte=1.09,
    manifest=load_manifest("cifar"),
)
