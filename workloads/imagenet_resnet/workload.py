"""ImageNet (ILSVRC 2012) with ResNet-50, and its three variants (WORKLOADS.md).

Data in --data-dir, either layout:
- ImageFolder: `train/<wnid>/*.JPEG` and `val/<wnid>/*.JPEG` (class index = rank of the wnid);
- TFDS ArrayRecord: `imagenet2012/<version>/imagenet2012-{train,validation}.array_record-*`
  (what `algoperf datasets prepare imagenet` writes, from the ILSVRC2012 tarballs).
The test split is ImageNet-v2 (matched frequency), looked up in the `imagenet_v2_data_dir` option
(or the directory `eval_model` is given), else in --data-dir: an ImageFolder of class folders
`0` ... `999` (the release's `imagenetv2-matched-frequency-format-val/`, or `imagenet_v2/`), or
TFDS ArrayRecord `imagenet_v2/matched-frequency/<version>/imagenet_v2-test.array_record-*`.

The eval-train split is a fixed random subset of the training images of the reference's size
(the validation size rounded up to whole eval batches: 50,176). Preprocessing: see
input_pipeline.py. `--data synthetic`: unit-normal images of the real shape with labels from a
fixed random teacher network, a few of them (ResNet-50 is slow on a CPU).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from algoperf.spec import LossType
from workloads.imagenet_resnet import input_pipeline as pipeline
from workloads.imagenet_resnet.records import ArrayRecordImages, array_record_files
from workloads.input_pipeline import ArrayBatchStream, prepared_dir, teacher_labels
from workloads.registry import WorkloadInfo

NUM_CLASSES = 1000


def rounded_up(num_examples: int, batch_size: int) -> int:
    """The reference's eval-train size: the validation size rounded up to whole eval batches."""
    return math.ceil(num_examples / batch_size) * batch_size


BASE = WorkloadInfo(
    name="imagenet_resnet",
    dataset="ILSVRC2012 1,281,167 / 50,000 / ImageNet-v2 matched-frequency 10,000",
    model="ResNet-50 (v1.5), last BN scale of each block initialised to 0",
    target_metric_name="accuracy",
    higher_is_better=True,
    validation_target=0.77431,
    test_target=0.6560,
    max_allowed_runtime_sec=66_159,
    step_hint=195_999,
    eval_period_time_sec=510,
    eval_batch_size=1024,
    num_train_examples=1_281_167,
    num_eval_train_examples=rounded_up(50_000, 1024),
    num_validation_examples=50_000,
    num_test_examples=10_000,
    loss_type=LossType.SOFTMAX_CROSS_ENTROPY,
    default_dropout=None,
    n_params={"pytorch": 25_557_032, "jax": 25_557_032},
    implementations={
        "pytorch": "workloads.imagenet_resnet.torch_workload:ImagenetResNetWorkload",
        "jax": "workloads.imagenet_resnet.jax_workload:ImagenetResNetWorkload",
    },
    model_options={"activation": "relu", "bn_init_scale": 0.0},
)

WORKLOADS = [
    BASE,
    BASE.variant(
        name="imagenet_resnet_silu",
        change="SiLU",
        validation_target=0.75445,
        test_target=0.6323,
        model_options={"activation": "silu", "bn_init_scale": 0.0},
    ),
    BASE.variant(
        name="imagenet_resnet_gelu",
        change="GELU",
        validation_target=0.76765,
        test_target=0.6519,
        model_options={"activation": "gelu", "bn_init_scale": 0.0},
    ),
    BASE.variant(
        name="imagenet_resnet_large_bn_init",
        change="last-BN scale init 8.0",
        validation_target=0.76526,
        test_target=0.6423,
        model_options={"activation": "relu", "bn_init_scale": 8.0},
    ),
]


class AugmentedStream:
    """A checkpointable batch stream with a per-batch augmentation seeded by (seed, batch number)."""

    def __init__(
        self, stream: Any, augment: Callable[..., dict[str, np.ndarray]], seed: int
    ) -> None:
        self.stream, self.augment, self.seed = stream, augment, int(seed) % 2**32
        self.batches = 0

    def __iter__(self) -> AugmentedStream:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self.augment(next(self.stream), np.random.default_rng([self.seed, self.batches, 1]))
        self.batches += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"stream": self.stream.state_dict(), "batches": self.batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state["stream"])
        self.batches = int(state["batches"])


class ImagenetData:
    """The numpy side of the ImageNet workloads: file sources, streams, synthetic data."""

    data: str
    data_dir: str | None
    options: dict[str, Any]
    synthetic_sizes: dict[str, int] = {"train": 32, "eval_train": 8, "validation": 8, "test": 8}
    num_classes = NUM_CLASSES
    # ViT sets these: (PIL image, rng) -> PIL image (RandAugment); (batch, rng) -> batch (mixup).
    image_augment: Callable[[Any, np.random.Generator], Any] | None = None
    batch_augment: (
        Callable[[dict[str, np.ndarray], np.random.Generator], dict[str, np.ndarray]] | None
    ) = None

    @property
    def train_mean(self) -> tuple[float, float, float]:
        return pipeline.MEAN_RGB

    @property
    def train_stddev(self) -> tuple[float, float, float]:
        return pipeline.STDDEV_RGB

    # ---- sources -----------------------------------------------------------------------------
    def _data_root(self) -> Path:
        if not self.data_dir:
            raise FileNotFoundError(
                f"{self.info.name} reads ImageNet from --data-dir (train/ and val/ ImageFolder trees, or "  # type: ignore[attr-defined]
                "TFDS imagenet2012 ArrayRecord files of `algoperf datasets prepare imagenet`); pass it, "
                "or use --data synthetic."
            )
        return prepared_dir(self.data_dir, "imagenet")

    def source(self, split: str) -> Any:
        """Random access to (JPEG bytes, label) of 'train', 'validation' or 'test' (ImageNet-v2)."""
        cache = self.__dict__.setdefault("_imagenet_sources", {})
        if split not in cache:
            cache[split] = self._test_source() if split == "test" else self._imagenet_source(split)
        return cache[split]

    def _imagenet_source(self, split: str) -> Any:
        root = self._data_root()
        folder = root / ("train" if split == "train" else "val")
        if folder.is_dir():
            return pipeline.ImageFolderImages(folder)
        files = array_record_files(root, "imagenet2012", split)
        if files:
            return ArrayRecordImages(files)
        raise FileNotFoundError(
            f"No ImageNet {split} split in {root}: expected an ImageFolder tree {folder}/<wnid>/*.JPEG or "
            f"TFDS ArrayRecord files {root}/imagenet2012/<version>/imagenet2012-{split}.array_record-*."
        )

    def _test_source(self) -> Any:
        roots = [prepared_dir(d, "imagenet") for d in (self.options.get("imagenet_v2_data_dir"), self.data_dir) if d]
        if not roots:
            self._data_root()
        for root in roots:
            for folder in (
                root / "imagenetv2-matched-frequency-format-val",
                root / "imagenet_v2",
                root,
            ):
                if folder.is_dir() and any(
                    d.is_dir() and d.name.isdigit() for d in folder.iterdir()
                ):
                    return pipeline.ImageFolderImages(folder)
            files = array_record_files(root, "imagenet_v2/matched-frequency", "test")
            if files:
                return ArrayRecordImages(files)
        raise FileNotFoundError(
            f"No ImageNet-v2 test split in {', '.join(map(str, roots))}: expected class folders 0 ... 999 "
            "(imagenetv2-matched-frequency-format-val/ or imagenet_v2/) or TFDS ArrayRecord files "
            "imagenet_v2/matched-frequency/<version>/imagenet_v2-test.array_record-*; set the "
            "imagenet_v2_data_dir option to where they are."
        )

    # ---- batches -----------------------------------------------------------------------------
    def train_batches(self, global_batch_size: int, seed: int) -> Any:
        if self.data == "synthetic":
            stream = ArrayBatchStream(self.split_arrays("train"), global_batch_size, seed)  # type: ignore[attr-defined]
            return (
                stream
                if self.batch_augment is None
                else AugmentedStream(stream, self.batch_augment, seed)
            )
        return pipeline.TrainStream(
            self.source("train"), global_batch_size, seed, self.image_augment, self.batch_augment
        )

    def eval_split_batches(
        self, split: str, num_examples: int, batch_size: int
    ) -> Iterator[dict[str, np.ndarray]]:
        if self.data == "synthetic":
            return super().eval_split_batches(split, num_examples, batch_size)  # type: ignore[misc]
        if split == "eval_train":
            train = self.source("train")
            source = pipeline.Subset(train, pipeline.eval_train_indices(len(train), num_examples))
        else:
            full = self.source(split)
            source = pipeline.Subset(full, np.arange(min(num_examples, len(full))))
        preprocess = pipeline.imagenet_v2_example if split == "test" else pipeline.eval_example
        # A split smaller than the eval batch (a fixture) is one batch of its own size.
        return pipeline.eval_batches(source, min(batch_size, max(len(source), 1)), preprocess)

    def eval_model(
        self,
        global_batch_size: int,
        params: Any,
        model_state: Any,
        rng: Any,
        data_dir: str,
        imagenet_v2_data_dir: str | None,
        global_step: int,
    ) -> dict[str, float]:
        if imagenet_v2_data_dir and not self.options.get("imagenet_v2_data_dir"):
            self.options["imagenet_v2_data_dir"] = imagenet_v2_data_dir
            self.__dict__.get("_imagenet_sources", {}).pop("test", None)
        return super().eval_model(  # type: ignore[misc]
            global_batch_size, params, model_state, rng, data_dir, imagenet_v2_data_dir, global_step
        )

    def synthetic_split(self, split: str) -> dict[str, np.ndarray]:
        # One pool labelled at once, so that a teacher label never depends on the split; the
        # eval-train images are the first training images.
        if "_imagenet_synthetic" not in self.__dict__:
            sizes = self.synthetic_sizes
            n = sizes["train"] + sizes["validation"] + sizes["test"]
            shape = (n, 3, pipeline.IMAGE_SIZE, pipeline.IMAGE_SIZE)
            x = np.random.default_rng(600).standard_normal(shape, dtype=np.float32)
            self.__dict__["_imagenet_synthetic"] = (x, teacher_labels(x, self.num_classes, seed=0))
        x, y = self.__dict__["_imagenet_synthetic"]
        ntrain, nval = self.synthetic_sizes["train"], self.synthetic_sizes["validation"]
        start = {"train": 0, "eval_train": 0, "validation": ntrain, "test": ntrain + nval}[split]
        stop = start + self.synthetic_sizes[split]
        return {"inputs": x[start:stop], "targets": y[start:stop]}
