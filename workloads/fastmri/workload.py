"""fastMRI knee single-coil reconstruction with a U-Net, and its three variants (WORKLOADS.md).

Data (`--data-dir`): the fastMRI HDF5 volumes, `knee_singlecoil_train/*.h5` (the train and
eval-train splits) and `knee_singlecoil_val/*.h5` (sorted by name: the first 100 files are the
validation split, the rest the test split, as the reference splits them). Each volume holds
`kspace` (slices x 640 x W, complex64), `reconstruction_esc` (slices x 320 x 320, float32) and the
attribute `max` (the volume's maximum, SSIM's data range). Every slice is one example.

Preprocessing, as the reference's `_process_example`: a column undersampling mask (the central
8% of the W columns, plus every other column with the probability that makes 4x acceleration),
the centred orthonormal inverse 2-D FFT of the masked k-space, the central crop to the target's
320 x 320, its magnitude; input and target are normalised by the magnitude image's mean and
(population) standard deviation and clipped to [-6, 6]. A batch carries `inputs`, `targets`
(N, 320, 320) float32 and `mean`, `std`, `volume_max` (N,) float32; eval batches add `weights`.

Randomness: in training each slice has its own mask, drawn from (seed, slice index) and so the
same in every epoch, as in the reference (which folds the example index into the data seed).
Validation and test use one fixed mask seed for every slice (the reference's fixed eval
randomness). The random draws are numpy's, not TensorFlow's, so individual masks differ from the
reference's; their distribution is the same. Eval-train: the first `num_eval_train_examples`
slices of a fixed shuffle of the training slices, with training-style masks (the reference takes
them from a seeded shuffle of the train files too).

The training stream is a `grain` MapDataset (global shuffle, reshuffled every epoch, batches of
consecutive shuffled slices, reading and FFTs in background threads); its position is grain's
iterator state, so a restored run gets exactly the batch it would have got. The reference uses a
shuffle buffer of 16 x batch size over interleaved files; a global shuffle is a better shuffle of
the same data.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from algoperf.spec import LossType
from workloads.input_pipeline import ArrayBatchStream, prepared_dir
from workloads.registry import WorkloadInfo

TRAIN_DIR, VAL_DIR = "knee_singlecoil_train", "knee_singlecoil_val"
NUM_VALIDATION_FILES = 100
CENTER_FRACTION, ACCELERATION = 0.08, 4.0
CLIP = 6.0
EVAL_SEED = 0  # the mask seed of every validation and test slice (the reference's _EVAL_SEED)
EVAL_TRAIN_SEED = 1  # the shuffle and mask seed of the eval-train subset
SIZE = 320
# Background reading: threads and batches read ahead (the machine's cores are shared).
READ_THREADS, PREFETCH_BATCHES = 2, 2

BASE = WorkloadInfo(
    name="fastmri",
    dataset="fastMRI knee singlecoil: 34,742 slices / first 100 val files (3,554) / rest of val (3,581)",
    model="U-Net, 32 channels, 4 pool layers, instance norm, dropout 0",
    target_metric_name="ssim",
    higher_is_better=True,
    validation_target=0.723653,
    test_target=0.740633,
    max_allowed_runtime_sec=4430,
    step_hint=18_094,
    eval_period_time_sec=80,
    eval_batch_size=256,
    num_train_examples=34_742,
    # The reference rounds num_validation_examples up to a multiple of the eval batch size
    # (ceil(3,554 / 256) * 256), so that eval-train is whole batches of training slices.
    num_eval_train_examples=3_584,
    num_validation_examples=3_554,
    num_test_examples=3_581,
    loss_type=LossType.MEAN_ABSOLUTE_ERROR,
    default_dropout=0.0,
    n_params={"pytorch": 7_756_097, "jax": 7_756_097},
    implementations={
        "pytorch": "workloads.fastmri.torch_workload:FastMriWorkload",
        "jax": "workloads.fastmri.jax_workload:FastMriWorkload",
    },
    model_options={
        "num_channels": 32,
        "num_pool_layers": 4,
        "use_tanh": False,
        "use_layer_norm": False,
    },
)

WORKLOADS = [
    BASE,
    BASE.variant(
        name="fastmri_model_size",
        change="3 pool layers, 64 channels",
        validation_target=0.723559,
        test_target=0.740726,
        model_options={**BASE.model_options, "num_pool_layers": 3, "num_channels": 64},
        n_params={"pytorch": 7_692_929, "jax": 7_692_929},
    ),
    BASE.variant(
        name="fastmri_tanh",
        change="tanh activations",
        validation_target=0.717840,
        test_target=0.734505,
        model_options={**BASE.model_options, "use_tanh": True},
    ),
    BASE.variant(
        name="fastmri_layernorm",
        change="layer norm instead of instance norm",
        validation_target=0.723284,
        test_target=0.739996,
        model_options={**BASE.model_options, "use_layer_norm": True},
        n_params={"pytorch": 7_761_985, "jax": 7_761_985},
    ),
]


# ---- preprocessing -----------------------------------------------------------------------------


def undersampling_mask(num_cols: int, rng: np.random.Generator) -> np.ndarray:
    """The reference's column mask (num_cols,) float32: the centre 8% plus random columns for 4x."""
    num_low = int(np.float32(num_cols) * np.float32(CENTER_FRACTION))
    mask = np.zeros(num_cols, dtype=np.float32)
    start = (num_cols - num_low + 1) // 2
    mask[start : start + num_low] = 1.0
    prob = (num_cols / ACCELERATION - num_low) / (num_cols - num_low)
    random = (rng.random(num_cols, dtype=np.float32) < prob).astype(np.float32)
    return np.maximum(mask, random)


def process_slice(
    kspace: np.ndarray, target: np.ndarray, volume_max: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """One k-space slice (H, W) and its target (h, w) -> a normalised example (see the module doc)."""
    masked = kspace * undersampling_mask(kspace.shape[1], rng)[None, :]
    image = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(masked), norm="ortho"))
    h, w = target.shape
    top, left = (kspace.shape[0] - h) // 2, (kspace.shape[1] - w) // 2
    magnitude = np.abs(image[top : top + h, left : left + w]).astype(np.float32)
    mean = np.float32(magnitude.mean(dtype=np.float64))
    std = np.float32(magnitude.std(dtype=np.float64))
    return {
        "inputs": np.clip((magnitude - mean) / std, -CLIP, CLIP).astype(np.float32),
        "targets": np.clip((target.astype(np.float32) - mean) / std, -CLIP, CLIP).astype(
            np.float32
        ),
        "mean": mean,
        "std": std,
        "volume_max": np.float32(volume_max),
    }


# ---- files -------------------------------------------------------------------------------------


def split_files(data_dir: str | Path, split: str) -> list[Path]:
    """The volumes of a split: train/eval_train = all training files; validation = the first 100
    validation files by name; test = the other validation files."""
    sub = TRAIN_DIR if split in ("train", "eval_train") else VAL_DIR
    folder = Path(data_dir) / sub
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} does not exist: the fastmri workload reads the fastMRI knee single-coil "
            f"volumes from {TRAIN_DIR}/ and {VAL_DIR}/ inside --data-dir (or use --data synthetic)."
        )
    files = sorted(folder.glob("*.h5"))
    if split == "validation":
        files = files[:NUM_VALIDATION_FILES]
    elif split == "test":
        files = files[NUM_VALIDATION_FILES:]
    if not files:
        raise FileNotFoundError(
            f"No .h5 volumes for the {split} split in {folder} (the test split is the validation "
            f"files after the first {NUM_VALIDATION_FILES} by name)."
        )
    return files


def slice_index(files: list[Path]) -> list[tuple[Path, int]]:
    """(file, slice) for every slice of every volume, in file then slice order."""
    import h5py

    index = []
    for path in files:
        with h5py.File(path, "r") as f:
            if "kspace" not in f or "reconstruction_esc" not in f:
                raise ValueError(
                    f"{path} lacks 'kspace' or 'reconstruction_esc': expected a fastMRI knee "
                    "single-coil train/val volume (the challenge's test files have no targets)."
                )
            index += [(path, i) for i in range(f["kspace"].shape[0])]
    return index


class SliceSource:
    """Random access to processed slices (a grain data source).

    `mask_seed=None`: every slice uses the fixed eval mask seed; otherwise slice i draws its mask
    from (mask_seed, i).
    """

    def __init__(self, index: list[tuple[Path, int]], mask_seed: int | None) -> None:
        self.index = index
        self.mask_seed = mask_seed

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        import h5py

        i = int(i) % len(self.index)
        path, s = self.index[i]
        with h5py.File(path, "r") as f:
            kspace, target = f["kspace"][s], f["reconstruction_esc"][s]
            volume_max = float(f.attrs.get("max", 0.0))
        seed = [EVAL_SEED] if self.mask_seed is None else [self.mask_seed, i]
        return process_slice(kspace, target, volume_max, np.random.default_rng(seed))


def _stack(examples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def _read_options() -> Any:
    import grain

    return grain.ReadOptions(num_threads=READ_THREADS, prefetch_buffer_size=PREFETCH_BATCHES)


class SliceStream:
    """Endless shuffled training batches from a grain pipeline; `state_dict()` is its position."""

    def __init__(self, index: list[tuple[Path, int]], batch_size: int, seed: int) -> None:
        import grain

        if batch_size > len(index):
            raise ValueError(
                f"batch size {batch_size} is larger than the training split ({len(index)} slices)"
            )
        seed = int(seed) % 2**32
        dataset = (
            grain.MapDataset.source(SliceSource(index, mask_seed=seed))
            .shuffle(seed=seed)
            .repeat()
            .batch(batch_size, drop_remainder=True, batch_fn=_stack)
        )
        self._iterator = dataset.to_iter_dataset(_read_options()).__iter__()

    def __iter__(self) -> SliceStream:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._iterator)

    def state_dict(self) -> dict[str, Any]:
        return dict(self._iterator.get_state())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._iterator.set_state(dict(state))


def padded_batches(
    source: Any, num_examples: int, batch_size: int
) -> Iterator[dict[str, np.ndarray]]:
    """The first `num_examples` of a source in order, batched; the last batch zero-padded.

    `weights` is 1 for a real slice and 0 for padding; padding has volume_max 0, which SSIM
    treats as the reference does (data range 1, and the weight removes it).
    """
    import grain

    n = min(num_examples, len(source))
    batch_size = min(batch_size, max(n, 1))  # a split smaller than a batch: no padding to compute
    dataset = grain.MapDataset.source(source)[:n].batch(
        batch_size, drop_remainder=False, batch_fn=_stack
    )
    for batch in dataset.to_iter_dataset(_read_options()):
        real = len(batch["inputs"])
        pad = batch_size - real
        if pad:
            batch = {
                k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)])
                for k, v in batch.items()
            }
        batch["weights"] = np.concatenate([np.ones(real, np.float32), np.zeros(pad, np.float32)])
        yield batch


class FastMriData:
    """The numpy side of the fastMRI workload: HDF5 slices, or synthetic images of the same shape."""

    data: str
    data_dir: str | None
    synthetic_sizes: dict[str, int] = {"train": 16, "eval_train": 4, "validation": 4, "test": 4}

    def _slice_index(self, split: str) -> list[tuple[Path, int]]:
        cache = self.__dict__.setdefault("_fastmri_index", {})
        key = "train" if split in ("train", "eval_train") else split
        if key not in cache:
            if not self.data_dir:
                raise FileNotFoundError(
                    "The fastmri workload reads HDF5 volumes from --data-dir (with "
                    f"{TRAIN_DIR}/ and {VAL_DIR}/ inside); pass it, or use --data synthetic."
                )
            cache[key] = slice_index(split_files(prepared_dir(self.data_dir, "fastmri"), split))
        return cache[key]

    def train_batches(self, global_batch_size: int, seed: int) -> Any:
        if self.data == "synthetic":
            return ArrayBatchStream(self.split_arrays("train"), global_batch_size, seed)  # type: ignore[attr-defined]
        return SliceStream(self._slice_index("train"), global_batch_size, seed)

    def eval_split_batches(
        self, split: str, num_examples: int, batch_size: int
    ) -> Iterator[dict[str, np.ndarray]]:
        if self.data == "synthetic":
            return super().eval_split_batches(split, num_examples, batch_size)  # type: ignore[misc]
        index = self._slice_index(split)
        if split == "eval_train":
            order = np.random.default_rng(EVAL_TRAIN_SEED).permutation(len(index))[:num_examples]
            # Masks keyed by the slice's position in the training index, as in training.
            source: Any = _IndexedSource(SliceSource(index, mask_seed=EVAL_TRAIN_SEED), order)
        else:
            source = SliceSource(index, mask_seed=None)
        return padded_batches(source, num_examples, batch_size)

    def synthetic_split(self, split: str) -> dict[str, np.ndarray]:
        """Random images and a fixed random teacher: targets = the input smoothed by a fixed
        random positive 5 x 5 kernel (a denoising map the U-Net can learn)."""
        n = self.synthetic_sizes[split]
        rng = np.random.default_rng(
            {"train": 700, "eval_train": 700, "validation": 701, "test": 702}[split]
        )
        x = np.clip(rng.standard_normal((n, SIZE, SIZE)), -CLIP, CLIP).astype(np.float32)
        kernel = np.random.default_rng(799).random((5, 5))
        kernel /= kernel.sum()
        padded = np.pad(x, ((0, 0), (2, 2), (2, 2)), mode="symmetric")
        y = sum(
            kernel[i, j] * padded[:, i : i + SIZE, j : j + SIZE] for i in range(5) for j in range(5)
        )
        y = np.asarray(y, dtype=np.float32)
        return {
            "inputs": x,
            "targets": y,
            "mean": np.zeros(n, np.float32),
            "std": np.ones(n, np.float32),
            "volume_max": y.reshape(n, -1).max(1).astype(np.float32),
        }


class _IndexedSource:
    """The elements of a source at the given positions, in that order."""

    def __init__(self, source: SliceSource, positions: np.ndarray) -> None:
        self.source = source
        self.positions = positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return self.source[int(self.positions[int(i)])]
