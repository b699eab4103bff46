"""ImageNet (ILSVRC 2012) and ImageNet-v2: tarballs -> TFDS-layout ArrayRecord files of tf.train.Example.

TFDS has both datasets, but building them needs TensorFlow; the records are written here instead,
in TFDS's layout and format, which is what `workloads/imagenet_resnet/records.py` reads (and what
a TFDS-built tree holds): `imagenet2012/5.1.0/imagenet2012-{train,validation}.array_record-*` and
`imagenet_v2/matched-frequency/3.0.0/imagenet_v2-test.array_record-*`, every record a serialized
`tf.train.Example` with `image` (the JPEG bytes as in the archive), `label` (int64) and
`file_name`. Labels as TFDS assigns them: the index of the image's wnid in TFDS's `labels.txt`
(the 1,000 wnids, sorted); a validation image's wnid is the line of TFDS's
`validation_labels.txt` at the rank of its file name among the sorted names of the validation
tar; an ImageNet-v2 image's label is its class folder's number. The archives are read in place,
never extracted. (TFDS also re-encodes the few CMYK and PNG files of the train split as RGB JPEG;
here they stay as they are, and the pipeline's decoder converts them to RGB when it reads them.)

ILSVRC2012's two tarballs need an image-net.org account: pass their folder as `--source`.
"""

from __future__ import annotations

import importlib.util
import math
import tarfile
from pathlib import Path

from algoperf.datasets.base import DatasetUnavailableError, Recipe, load_manifest
from algoperf.datasets.prepare import Job

TRAIN_TAR, VAL_TAR, V2_ARCHIVE = (
    "ILSVRC2012_img_train.tar",
    "ILSVRC2012_img_val.tar",
    "imagenetv2-matched-frequency.tar.gz",
)
IMAGENET_DIR = Path("imagenet2012") / "5.1.0"
V2_DIR = Path("imagenet_v2") / "matched-frequency" / "3.0.0"
SHARD_BYTES = 1 << 30  # about 1 GiB of JPEGs per ArrayRecord file


def tfds_label_file(name: str) -> Path:
    """A label list shipped with tensorflow-datasets (`labels.txt`, `validation_labels.txt`)."""
    spec = importlib.util.find_spec("tensorflow_datasets")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailableError(
            "Preparing ImageNet needs tensorflow-datasets for its label lists: pip install -e '.[data]'."
        )
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "imagenet2012" / name


def read_lines(path: Path) -> list[str]:
    return path.read_text().strip().splitlines()


class ShardedWriter:
    """Examples spread round-robin over `count` ArrayRecord files named as TFDS names them."""

    def __init__(self, folder: Path, prefix: str, count: int) -> None:
        from array_record.python.array_record_module import ArrayRecordWriter

        folder.mkdir(parents=True, exist_ok=True)
        self.paths = [folder / f"{prefix}.array_record-{i:05d}-of-{count:05d}" for i in range(count)]
        # group_size 1: every record its own chunk, the random access grain's shuffle needs.
        self.writers = [ArrayRecordWriter(str(p), "group_size:1") for p in self.paths]
        self.count = 0

    def write(self, image: bytes, label: int, file_name: str) -> None:
        from workloads.imagenet_resnet.records import encode_example

        record = encode_example({"image": image, "label": label, "file_name": file_name.encode()})
        self.writers[self.count % len(self.writers)].write(record)
        self.count += 1

    def close(self) -> list[Path]:
        for w in self.writers:
            w.close()
        return self.paths


def _shards(archive: Path) -> int:
    return max(1, math.ceil(archive.stat().st_size / SHARD_BYTES))


def convert_train(job: Job, classes: dict[str, int]) -> list[Path]:
    archive = job.source(TRAIN_TAR)
    writer = ShardedWriter(job.out / IMAGENET_DIR, "imagenet2012-train", _shards(archive))
    with tarfile.open(archive) as outer:
        for member in outer:
            wnid = Path(member.name).name.removesuffix(".tar")
            if not member.isfile() or wnid not in classes:
                continue
            with tarfile.open(fileobj=outer.extractfile(member)) as inner:
                for image in inner:
                    f = inner.extractfile(image) if image.isfile() else None
                    if f is not None:
                        writer.write(f.read(), classes[wnid], Path(image.name).name)
    if writer.count == 0:
        raise DatasetUnavailableError(f"{archive} holds no <wnid>.tar of ImageNet classes")
    return writer.close()


def convert_validation(job: Job, classes: dict[str, int]) -> list[Path]:
    archive = job.source(VAL_TAR)
    wnids = read_lines(tfds_label_file("validation_labels.txt"))
    with tarfile.open(archive) as tar:
        members = sorted((m for m in tar if m.isfile()), key=lambda m: m.name)
        if len(members) > len(wnids):
            raise DatasetUnavailableError(f"{archive} holds {len(members)} images, more than ImageNet's {len(wnids)}")
        writer = ShardedWriter(job.out / IMAGENET_DIR, "imagenet2012-validation", _shards(archive))
        for member, wnid in zip(members, wnids):
            writer.write(tar.extractfile(member).read(), classes[wnid], Path(member.name).name)  # type: ignore[union-attr]
    return writer.close()


def convert_v2(job: Job) -> list[Path]:
    archive = job.source(V2_ARCHIVE)
    writer = ShardedWriter(job.out / V2_DIR, "imagenet_v2-test", _shards(archive))
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if member.isfile() and len(parts) >= 2 and parts[-2].isdigit():
                writer.write(tar.extractfile(member).read(), int(parts[-2]), parts[-1])  # type: ignore[union-attr]
    if writer.count == 0:
        raise DatasetUnavailableError(f"{archive} holds no <class>/<image> files: not ImageNet-v2")
    return writer.close()


def convert(job: Job) -> None:
    classes = {wnid: i for i, wnid in enumerate(read_lines(tfds_label_file("labels.txt")))}
    if job.needs("train"):
        job.done("train", convert_train(job, classes))
        job.say("imagenet: train split written")
    if job.needs("validation"):
        job.done("validation", convert_validation(job, classes))
    if job.needs("test"):
        job.done("test", convert_v2(job))


RECIPE = Recipe(
    name="imagenet",
    convert=convert,
    scratch_per_source_byte=0.0,  # the archives are read in place
    # The records hold the JPEG bytes of the archives and a few dozen bytes more per image;
    # tar's 512-byte headers and padding are gone: a little less than the archives.
    prepared_per_source_byte=1.0,
    licensed_help=(
        "Download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from https://image-net.org "
        "(an account is needed), then run `algoperf datasets prepare imagenet --data-dir DIR --source "
        "FOLDER`; ImageNet-v2 is downloaded."
    ),
    manifest=load_manifest("imagenet"),
)
