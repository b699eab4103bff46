"""ImageNet as numpy batches, framework-free: sources, the reference's preprocessing, grain streams.

Sources (random access to `(JPEG bytes, label)`):
- an ImageFolder tree `<root>/<class>/*.JPEG`; classes are the sorted folder names (wnids), or
  the folder names as numbers when all are digits (ImageNet-v2's `0` ... `999`);
- TFDS ArrayRecord shards (`records.py`).

Preprocessing, as the reference's PyTorch workload (torchvision transforms, re-done with Pillow):
- train: `RandomResizedCrop(224, scale=(0.08, 1), ratio=(3/4, 4/3))` (bilinear), a horizontal
  flip with probability 1/2, then (ViT) RandAugment;
- validation and eval-train: `Resize(256)` (short side, bilinear) and `CenterCrop(224)`;
- test (ImageNet-v2): the reference reads it through its TF pipeline: the central square of side
  int(224 / 256 * short side), resized to 224 x 224 (bicubic);
- all: `(pixel - mean) / std` per RGB channel in 0-255 units, CHW float32.
Batches are normalised in one vectorised step; examples travel as uint8 HWC until then.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)
IMAGE_SIZE = 224
RESIZE_SIZE = 256
SCALE_RANGE = (0.08, 1.0)
ASPECT_RATIO_RANGE = (0.75, 4.0 / 3.0)
EXTENSIONS = (".jpeg", ".jpg", ".png")
EVAL_TRAIN_SEED = 0  # the eval-train subset is one fixed random draw of the training images
READ_THREADS = min(8, os.cpu_count() or 1)

Image = Any  # a PIL image
Example = tuple[np.ndarray, Any]  # (uint8 HWC image, label)


# ---- sources -----------------------------------------------------------------------------------
class ImageFolderImages:
    """Random access to (JPEG bytes, label) of an ImageFolder tree (a grain data source)."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise FileNotFoundError(
                f"{root} does not exist: expected an ImageFolder tree {root}/<class>/*.JPEG."
            )
        classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        numeric = bool(classes) and all(c.isdigit() for c in classes)
        if numeric:
            classes.sort(key=int)
        files, labels = [], []
        for index, name in enumerate(classes):
            for f in sorted((root / name).iterdir()):
                if f.suffix.lower() in EXTENSIONS:
                    files.append(f)
                    labels.append(int(name) if numeric else index)
        if not files:
            raise FileNotFoundError(
                f"{root} holds no images: expected {root}/<class>/*.JPEG (or .jpg/.png)."
            )
        self.root = root
        self.classes = classes
        self.files = files
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[bytes, int]:
        i = int(i)
        return self.files[i].read_bytes(), int(self.labels[i])


class Subset:
    """The examples of a source at the given indices, in that order."""

    def __init__(self, source: Any, indices: np.ndarray) -> None:
        self.source, self.indices = source, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.source[int(self.indices[int(i)])]


def eval_train_indices(num_train: int, num_examples: int) -> np.ndarray:
    """A fixed random subset of the training images (the reference evaluates a random subset)."""
    order = np.random.default_rng(EVAL_TRAIN_SEED).permutation(num_train)
    return order[: min(num_examples, num_train)]


# ---- image operations --------------------------------------------------------------------------
def decode(data: bytes) -> Image:
    from PIL import Image as PILImage

    with PILImage.open(io.BytesIO(data)) as img:
        return img.convert("RGB")


def random_resized_crop_box(
    width: int,
    height: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = SCALE_RANGE,
    ratio: tuple[float, float] = ASPECT_RATIO_RANGE,
) -> tuple[int, int, int, int]:
    """The crop (left, top, width, height) of torchvision's `RandomResizedCrop`.

    Ten tries of an area fraction uniform in `scale` and a log-uniform aspect ratio in `ratio`;
    if none fits, the largest central crop whose aspect ratio is within `ratio`.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def random_resized_crop(img: Image, rng: np.random.Generator, size: int = IMAGE_SIZE) -> Image:
    from PIL import Image as PILImage

    left, top, w, h = random_resized_crop_box(img.size[0], img.size[1], rng)
    return img.crop((left, top, left + w, top + h)).resize(
        (size, size), PILImage.Resampling.BILINEAR
    )


def resize_short_side(img: Image, size: int = RESIZE_SIZE) -> Image:
    """torchvision's `Resize(size)`: the short side becomes `size`, the long side int(size * long / short)."""
    from PIL import Image as PILImage

    w, h = img.size
    if w <= h:
        new = (size, int(size * h / w))
    else:
        new = (int(size * w / h), size)
    return img if new == (w, h) else img.resize(new, PILImage.Resampling.BILINEAR)


def center_crop(img: Image, size: int = IMAGE_SIZE) -> Image:
    """torchvision's `CenterCrop(size)` of an image at least `size` on each side."""
    w, h = img.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def padded_center_crop(img: Image, size: int = IMAGE_SIZE, resize: int = RESIZE_SIZE) -> Image:
    """The reference's TF eval crop (used for ImageNet-v2): central square of int(size/resize * short side), resized."""
    from PIL import Image as PILImage

    w, h = img.size
    side = int(size / resize * min(w, h))
    top, left = (h - side + 1) // 2, (w - side + 1) // 2
    return img.crop((left, top, left + side, top + side)).resize(
        (size, size), PILImage.Resampling.BICUBIC
    )


def normalize(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) with the reference's per-channel mean and std."""
    x = (images.astype(np.float32) - np.asarray(MEAN_RGB, np.float32)) / np.asarray(
        STDDEV_RGB, np.float32
    )
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


# ---- per-example preprocessing -----------------------------------------------------------------
def train_example(
    image_augment: Callable[[Image, np.random.Generator], Image] | None = None,
) -> Callable[..., Example]:
    """(bytes, label), rng -> (uint8 image, label): random resized crop, flip, then `image_augment`."""

    def preprocess(example: tuple[bytes, int], rng: np.random.Generator) -> Example:
        data, label = example
        img = random_resized_crop(decode(data), rng)
        if rng.random() < 0.5:
            img = img.transpose(0)  # PIL.Image.FLIP_LEFT_RIGHT
        if image_augment is not None:
            img = image_augment(img, rng)
        return np.asarray(img, dtype=np.uint8), label

    return preprocess


def eval_example(example: tuple[bytes, int]) -> Example:
    data, label = example
    return np.asarray(center_crop(resize_short_side(decode(data))), dtype=np.uint8), label


def imagenet_v2_example(example: tuple[bytes, int]) -> Example:
    data, label = example
    return np.asarray(padded_center_crop(decode(data)), dtype=np.uint8), label


def stack(examples: list[Example]) -> dict[str, np.ndarray]:
    return {
        "inputs": normalize(np.stack([e[0] for e in examples])),
        "targets": np.asarray([e[1] for e in examples], dtype=np.int64),
    }


# ---- streams -----------------------------------------------------------------------------------
class TrainStream:
    """Endless shuffled, augmented training batches (grain); `state_dict()` is the exact position.

    Every epoch is a fresh permutation of the source; every example's augmentation draws from a
    generator seeded by (seed, its position in the stream), and `batch_augment` (mixup) from
    (seed, batch number), so a restored stream continues with the very same batches.
    """

    def __init__(
        self,
        source: Any,
        batch_size: int,
        seed: int,
        image_augment: Callable[[Image, np.random.Generator], Image] | None = None,
        batch_augment: Callable[[dict[str, np.ndarray], np.random.Generator], dict[str, np.ndarray]]
        | None = None,
    ) -> None:
        import grain

        if batch_size > len(source):
            raise ValueError(
                f"batch size {batch_size} is larger than the training split ({len(source)} images)"
            )
        self.seed = int(seed) % 2**32
        self.batch_augment = batch_augment
        self.batches = 0
        dataset = (
            grain.MapDataset.source(source)
            .shuffle(seed=self.seed)
            .repeat()
            .random_map(train_example(image_augment), seed=self.seed)
        )
        options = grain.ReadOptions(
            num_threads=READ_THREADS, prefetch_buffer_size=max(2 * batch_size, 16)
        )
        self._iterator = iter(
            dataset.to_iter_dataset(options).batch(batch_size, drop_remainder=True, batch_fn=stack)
        )

    def __iter__(self) -> TrainStream:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = next(self._iterator)
        if self.batch_augment is not None:
            batch = self.batch_augment(batch, np.random.default_rng([self.seed, self.batches, 1]))
        self.batches += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"grain": dict(self._iterator.get_state()), "batches": self.batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._iterator.set_state(dict(state["grain"]))
        self.batches = int(state["batches"])


def eval_batches(
    source: Any, batch_size: int, preprocess: Callable[[tuple[bytes, int]], Example] = eval_example
) -> Iterator[dict[str, np.ndarray]]:
    """All examples of `source` in order, preprocessed, batched; the last batch zero-padded.

    `weights` is 1 for a real image and 0 for padding.
    """
    import grain

    dataset = grain.MapDataset.source(source).map(preprocess)
    options = grain.ReadOptions(
        num_threads=READ_THREADS, prefetch_buffer_size=max(2 * batch_size, 16)
    )
    for batch in dataset.to_iter_dataset(options).batch(
        batch_size, drop_remainder=False, batch_fn=stack
    ):
        real = len(batch["targets"])
        pad = batch_size - real
        if pad:
            batch = {
                k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)])
                for k, v in batch.items()
            }
        batch["weights"] = np.concatenate([np.ones(real, np.float32), np.zeros(pad, np.float32)])
        yield batch
