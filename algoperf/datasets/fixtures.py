"""Small datasets in the real download formats, for tests, benchmarks and a dry run of `prepare`.

Every writer makes the files a dataset's canonical download (or licensed archive) would hold, in
the same format and layout, at a size the caller chooses: IDX files for MNIST, the CIFAR-10 binary
tarball, ImageNet's nested train tar / flat validation tar / ImageNet-v2 tarball, fastMRI's
`.tar.xz` of HDF5 volumes, Criteo's gzipped TSV days, LibriSpeech's FLAC tarballs, the WMT17
parallel-text tarballs and OGB's `pcba.zip`. Labels are a simple function of the input wherever a
model should be able to learn something in a few steps.

`write_mirror(dataset, folder, ...)` writes one dataset's files under `folder/<dataset>/` with a
`SHA256SUMS` file, which is the layout `algoperf datasets prepare --mirror` reads. `realistic=True`
gives examples of the real per-example size (ImageNet JPEGs around 500 x 375, 640-row k-space,
12-second utterances), which is what `scripts/bench_input.py` needs to time a pipeline honestly.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# ---- helpers -----------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_sha256sums(folder: Path, names: list[str] | None = None) -> Path:
    """`<sha256>  <name>` for every file of `folder` (or `names`), as `sha256sum` writes it."""
    names = names or sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != "SHA256SUMS")
    lines = "".join(f"{sha256_file(folder / n)}  {n}\n" for n in names)
    path = folder / "SHA256SUMS"
    path.write_text(lines)
    return path


def _tar_add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def _jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _class_image(label: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """An image whose colour encodes the label, with texture so the JPEG has a realistic size."""
    hue = np.array([(label * 97) % 256, (label * 57) % 256, (label * 17) % 256], np.float32)
    coarse = rng.normal(0, 40, (max(1, height // 16), max(1, width // 16), 3))
    smooth = np.kron(coarse, np.ones((16, 16, 1)))[:height, :width]
    smooth = np.pad(smooth, ((0, height - smooth.shape[0]), (0, width - smooth.shape[1]), (0, 0)))
    fine = rng.normal(0, 12, (height, width, 3))
    return np.clip(hue + smooth + fine, 0, 255).astype(np.uint8)


# ---- MNIST -------------------------------------------------------------------------------------
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_mnist(folder: Path, num_train: int = 120, num_test: int = 30, seed: int = 0) -> list[str]:
    """The four IDX files; a digit is a bright bar at a row that encodes its label."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", num_train), ("t10k", num_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 30, (n, 28, 28)).astype(np.uint8)
        for i, y in enumerate(labels):
            images[i, 2 + 2 * y : 4 + 2 * y, :] = 255
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return list(MNIST_FILES)


# ---- CIFAR-10 ----------------------------------------------------------------------------------
CIFAR_ARCHIVE = "cifar-10-binary.tar.gz"


def cifar_examples(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 32, 32, 3) uint8 images whose mean colour encodes the label, and the labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = np.stack([_class_image(int(y), 32, 32, rng) for y in labels]) if n else np.zeros(
        (0, 32, 32, 3), np.uint8
    )
    return images, labels


def cifar_binary_records(images: np.ndarray, labels: np.ndarray) -> bytes:
    """CIFAR-10's binary format: per image one label byte, then the R, G and B planes (32 x 32 each)."""
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    return np.concatenate([labels[:, None].astype(np.uint8), planes], axis=1).tobytes()


def write_cifar(folder: Path, per_batch: int = 20, num_test: int = 20, seed: int = 0) -> list[str]:
    """`cifar-10-binary.tar.gz`: cifar-10-batches-bin/data_batch_{1..5}.bin and test_batch.bin."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / CIFAR_ARCHIVE, "w:gz") as tar:
        for i in range(1, 6):
            images, labels = cifar_examples(per_batch, seed + i)
            _tar_add_bytes(tar, f"cifar-10-batches-bin/data_batch_{i}.bin", cifar_binary_records(images, labels))
        images, labels = cifar_examples(num_test, seed + 100)
        _tar_add_bytes(tar, "cifar-10-batches-bin/test_batch.bin", cifar_binary_records(images, labels))
        names = "airplane automobile bird cat deer dog frog horse ship truck".split()
        _tar_add_bytes(tar, "cifar-10-batches-bin/batches.meta.txt", ("\n".join(names) + "\n").encode())
    return [CIFAR_ARCHIVE]


# ---- ImageNet ----------------------------------------------------------------------------------
IMAGENET_TRAIN_TAR = "ILSVRC2012_img_train.tar"
IMAGENET_VAL_TAR = "ILSVRC2012_img_val.tar"
IMAGENET_V2_ARCHIVE = "imagenetv2-matched-frequency.tar.gz"
REALISTIC_IMAGE_SIZES = ((375, 500), (500, 375), (333, 500), (500, 500))  # ImageNet's common shapes
SMALL_IMAGE_SIZES = ((48, 64), (64, 48), (40, 40))


def write_imagenet(
    folder: Path,
    wnids: list[str],
    train_per_class: int = 3,
    val_labels: list[str] | None = None,
    v2_per_class: int = 1,
    realistic: bool = False,
    seed: int = 0,
) -> list[str]:
    """The ILSVRC2012 train tar (one inner tar per wnid), the flat validation tar, ImageNet-v2.

    `val_labels[i]` is the wnid of `ILSVRC2012_val_{i + 1:08d}.JPEG` (the validation images are
    unlabelled in the tar; TFDS's `validation_labels.txt` holds the wnid of each, in this order).
    ImageNet-v2 holds class folders `0` ... `999` named by the class index of the sorted wnids.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sizes = REALISTIC_IMAGE_SIZES if realistic else SMALL_IMAGE_SIZES
    all_wnids = sorted(wnids)

    def image(label: int, k: int) -> bytes:
        h, w = sizes[k % len(sizes)]
        return _jpeg(_class_image(label, h, w, rng))

    with tarfile.open(folder / IMAGENET_TRAIN_TAR, "w") as outer:
        for wnid in wnids:
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as tar:
                for i in range(train_per_class):
                    _tar_add_bytes(tar, f"{wnid}_{i + 1}.JPEG", image(all_wnids.index(wnid), i))
            _tar_add_bytes(outer, f"{wnid}.tar", inner.getvalue())
    val_labels = val_labels if val_labels is not None else list(wnids)
    with tarfile.open(folder / IMAGENET_VAL_TAR, "w") as tar:
        for i, wnid in enumerate(val_labels):
            label = all_wnids.index(wnid) if wnid in all_wnids else 0
            _tar_add_bytes(tar, f"ILSVRC2012_val_{i + 1:08d}.JPEG", image(label, i))
    with tarfile.open(folder / IMAGENET_V2_ARCHIVE, "w:gz") as tar:
        for label in range(len(all_wnids)):
            for i in range(v2_per_class):
                name = f"imagenetv2-matched-frequency-format-val/{label}/{hashlib.sha1(bytes([label, i])).hexdigest()}.jpeg"
                _tar_add_bytes(tar, name, image(label, i))
    return [IMAGENET_TRAIN_TAR, IMAGENET_VAL_TAR, IMAGENET_V2_ARCHIVE]


# ---- fastMRI -----------------------------------------------------------------------------------
FASTMRI_TRAIN_ARCHIVE = "knee_singlecoil_train.tar.xz"
FASTMRI_VAL_ARCHIVE = "knee_singlecoil_val.tar.xz"


def fastmri_volume(slices: int, height: int, width: int, crop: int, seed: int) -> dict[str, Any]:
    """A single-coil volume: a smooth random image, its centred orthonormal k-space, its crop."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((slices, max(1, height // 16), max(1, width // 16)))
    image = np.kron(coarse, np.ones((1, 16, 16)))[:, :height, :width]
    image = np.pad(image, ((0, 0), (0, height - image.shape[1]), (0, width - image.shape[2])))
    image = image + 0.05 * rng.random(image.shape)
    kspace = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(image, axes=(1, 2)), norm="ortho"), axes=(1, 2))
    top, left = (height - crop) // 2, (width - crop) // 2
    target = image[:, top : top + crop, left : left + crop].astype(np.float32)
    return {"kspace": kspace.astype(np.complex64), "reconstruction_esc": target, "max": float(target.max())}


def write_fastmri_volume(path: Path, volume: dict[str, Any]) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=volume["kspace"])
        f.create_dataset("reconstruction_esc", data=volume["reconstruction_esc"])
        f.attrs["max"] = volume["max"]
        f.attrs["acquisition"] = "CORPD_FBK"


def write_fastmri(
    folder: Path,
    train_volumes: int = 2,
    val_volumes: int = 102,
    slices: int = 3,
    val_slices: int = 1,
    realistic: bool = False,
    seed: int = 0,
) -> list[str]:
    """`knee_singlecoil_{train,val}.tar.xz` holding `singlecoil_{train,val}/file<id>.h5`.

    Real volumes are 640 x W (W about 368) k-space with 320 x 320 targets; small ones 64 x 48
    with 32 x 32 targets (the pipeline crops the centre to the target's size either way). The
    validation split is the first 100 validation volumes and the test split the rest, so a
    fixture needs more than 100 of them (one slice each is enough).
    """
    folder.mkdir(parents=True, exist_ok=True)
    height, width, crop = (640, 368, 320) if realistic else (64, 48, 32)
    for archive, sub, count, offset, per_volume in (
        (FASTMRI_TRAIN_ARCHIVE, "singlecoil_train", train_volumes, 1000000, slices),
        (FASTMRI_VAL_ARCHIVE, "singlecoil_val", val_volumes, 1001000, val_slices),
    ):
        with tarfile.open(folder / archive, "w:xz", preset=0) as tar:
            for i in range(count):
                buffer = io.BytesIO()
                write_fastmri_volume(buffer, fastmri_volume(per_volume, height, width, crop, seed + offset + i))  # type: ignore[arg-type]
                _tar_add_bytes(tar, f"{sub}/file{offset + i}.h5", buffer.getvalue())
    return [FASTMRI_TRAIN_ARCHIVE, FASTMRI_VAL_ARCHIVE]


# ---- Criteo 1TB --------------------------------------------------------------------------------
CRITEO_DAYS = 24


def criteo_lines(n: int, seed: int) -> list[bytes]:
    """Criteo TSV lines (label, 13 integers, 26 hex categoricals; some missing) with learnable clicks."""
    rng = np.random.default_rng(seed)
    dense = rng.integers(-3, 5000, (n, 13))
    cats = rng.integers(0, 2**32, (n, 26), dtype=np.uint64) % np.uint64(1000)
    missing = rng.random((n, 39)) < 0.12
    clicks = (dense[:, 0] > 2500).astype(int) ^ (rng.random(n) < 0.1)
    lines = []
    for i in range(n):
        fields = [str(int(clicks[i]))]
        fields += ["" if missing[i, j] else str(int(dense[i, j])) for j in range(13)]
        fields += ["" if missing[i, 13 + j] else f"{int(cats[i, j]) * 2654435761 % 2**32:08x}" for j in range(26)]
        lines.append(("\t".join(fields) + "\n").encode())
    return lines


def write_criteo(folder: Path, lines_per_day: int = 64, seed: int = 0, days: int = CRITEO_DAYS) -> list[str]:
    """`day_0.gz` ... `day_23.gz`, as the public download names them."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for day in range(days):
        name = f"day_{day}.gz"
        with gzip.open(folder / name, "wb", compresslevel=1) as f:
            f.writelines(criteo_lines(lines_per_day, seed + day))
        names.append(name)
    return names


# ---- LibriSpeech -------------------------------------------------------------------------------
LIBRISPEECH_SUBSETS = (
    "train-clean-100",
    "train-clean-360",
    "train-other-500",
    "dev-clean",
    "dev-other",
    "test-clean",
)
_WORDS = ("ALPHA", "BETA", "GAMMA", "DELTA", "EPSILON", "ZETA", "ETA", "THETA")


def librispeech_utterance(
    rng: np.random.Generator, seconds: float, words: np.ndarray | None = None
) -> tuple[np.ndarray, str]:
    """16 kHz int16 tones, one pitch per word, and the transcript of those words."""
    count = max(1, int(round(seconds / 0.4))) if words is None else len(words)
    words = rng.integers(0, len(_WORDS), count) if words is None else words
    segment = int(16_000 * seconds / count)
    t = np.arange(segment) / 16_000
    wave = np.concatenate([np.sin(2 * np.pi * (300 + 250 * w) * t) for w in words])
    audio = (wave * 8000 + rng.normal(0, 200, len(wave))).astype(np.int16)
    return audio, " ".join(_WORDS[w] for w in words)


def write_librispeech(
    folder: Path,
    utterances: dict[str, int] | None = None,
    seconds: tuple[float, float] = (0.8, 1.6),
    seed: int = 0,
) -> list[str]:
    """`<subset>.tar.gz` holding `LibriSpeech/<subset>/<speaker>/<chapter>/*.flac` and `.trans.txt`."""
    import soundfile

    folder.mkdir(parents=True, exist_ok=True)
    utterances = utterances or {s: 3 for s in LIBRISPEECH_SUBSETS}
    names = []
    for k, (subset, count) in enumerate(utterances.items()):
        rng = np.random.default_rng(seed + k)
        speaker, chapter = 100 + k, 200 + k
        name = f"{subset}.tar.gz"
        with tarfile.open(folder / name, "w:gz", compresslevel=1) as tar:
            lines = []
            for i in range(count):
                # The first utterance says every word, so that a tokenizer trained on any one
                # subset (the reference trains it on train-clean-100) knows every letter.
                every = np.arange(len(_WORDS)) if i == 0 else None
                audio, text = librispeech_utterance(rng, float(rng.uniform(*seconds)), every)
                uid = f"{speaker}-{chapter}-{i:04d}"
                buffer = io.BytesIO()
                soundfile.write(buffer, audio, 16_000, format="FLAC", subtype="PCM_16")
                _tar_add_bytes(tar, f"LibriSpeech/{subset}/{speaker}/{chapter}/{uid}.flac", buffer.getvalue())
                lines.append(f"{uid} {text}\n")
            _tar_add_bytes(
                tar,
                f"LibriSpeech/{subset}/{speaker}/{chapter}/{speaker}-{chapter}.trans.txt",
                "".join(lines).encode(),
            )
        names.append(name)
    return names


# ---- WMT17 de-en -------------------------------------------------------------------------------
_DE = ("haus", "katze", "hund", "baum", "auto", "wasser", "feuer", "erde", "licht", "stadt")
_EN = ("house", "cat", "dog", "tree", "car", "water", "fire", "earth", "light", "city")
# archive -> (German file, English file) inside it (TFDS's wmt17 de-en train sources).
WMT_TRAIN_ARCHIVES = {
    "training-parallel-europarl-v7.tgz": ("training/europarl-v7.de-en.de", "training/europarl-v7.de-en.en"),
    "training-parallel-commoncrawl.tgz": ("commoncrawl.de-en.de", "commoncrawl.de-en.en"),
    "training-parallel-nc-v12.tgz": (
        "training/news-commentary-v12.de-en.de",
        "training/news-commentary-v12.de-en.en",
    ),
    "rapid2016.tgz": ("rapid2016.de-en.de", "rapid2016.de-en.en"),
}
WMT_DEV_ARCHIVE = "dev.tgz"


def wmt_pairs(n: int, seed: int, words: tuple[int, int] = (1, 6)) -> list[tuple[str, str]]:
    """Word-for-word German/English sentence pairs (a translation a small model can learn)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        idx = rng.integers(0, len(_DE), int(rng.integers(*words)))
        pairs.append((" ".join(_DE[i] for i in idx), " ".join(_EN[i] for i in idx)))
    return pairs


def _sgm(lines: list[str], lang: str) -> bytes:
    body = "".join(f'<seg id="{i + 1}">{line}</seg>\n' for i, line in enumerate(lines))
    return f'<srcset setid="newstest2014" srclang="any">\n<doc sysid="ref" docid="1" genre="news" origlang="{lang}">\n<p>\n{body}</p>\n</doc>\n</srcset>\n'.encode()


def write_wmt(
    folder: Path, train_per_archive: int = 40, eval_pairs: int = 6, seed: int = 0,
    words: tuple[int, int] = (1, 6),
) -> list[str]:
    """The four WMT17 de-en training tarballs and the WMT dev tarball (newstest2013, newstest2014).

    One training pair in each archive has an empty English side (TFDS drops such pairs).
    """
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for k, (archive, (de_path, en_path)) in enumerate(WMT_TRAIN_ARCHIVES.items()):
        pairs = wmt_pairs(train_per_archive, seed + k, words) + [("leer", "")]
        with tarfile.open(folder / archive, "w:gz") as tar:
            _tar_add_bytes(tar, de_path, "".join(p[0] + "\n" for p in pairs).encode())
            _tar_add_bytes(tar, en_path, "".join(p[1] + "\n" for p in pairs).encode())
        names.append(archive)
    val, test = wmt_pairs(eval_pairs, seed + 10, words), wmt_pairs(eval_pairs, seed + 11, words)
    with tarfile.open(folder / WMT_DEV_ARCHIVE, "w:gz") as tar:
        _tar_add_bytes(tar, "dev/newstest2013.de", "".join(p[0] + "\n" for p in val).encode())
        _tar_add_bytes(tar, "dev/newstest2013.en", "".join(p[1] + "\n" for p in val).encode())
        _tar_add_bytes(tar, "dev/newstest2014-deen-src.de.sgm", _sgm([p[0] for p in test], "de"))
        _tar_add_bytes(tar, "dev/newstest2014-deen-ref.en.sgm", _sgm([p[1] for p in test], "en"))
    names.append(WMT_DEV_ARCHIVE)
    return names


# ---- OGBG molpcba ------------------------------------------------------------------------------
OGBG_ARCHIVE = "pcba.zip"


def write_ogbg(folder: Path, num_graphs: int = 40, seed: int = 3) -> list[str]:
    """OGB's `pcba.zip`: `pcba/raw/*.csv.gz`, `pcba/split/scaffold/*.csv.gz`, `pcba/mapping/`.

    Molecules are the synthetic ones of the ogbg workload (realistic sizes, teacher labels); the
    scaffold split is 80 / 10 / 10 in index order.
    """
    from workloads.ogbg.workload import synthetic_graphs

    folder.mkdir(parents=True, exist_ok=True)
    graphs = synthetic_graphs(num_graphs, seed=seed)
    n_train, n_valid = num_graphs * 8 // 10, num_graphs // 10

    def csv_gz(rows: Any) -> bytes:
        return gzip.compress("".join(",".join(str(v) for v in r) + "\n" for r in rows).encode(), 1)

    labels = [["" if math.isnan(v) else int(v) for v in r] for r in graphs.labels.tolist()]
    members = {
        "pcba/raw/edge.csv.gz": csv_gz(graphs.edge_index.tolist()),
        "pcba/raw/node-feat.csv.gz": csv_gz(graphs.nodes.astype(int).tolist()),
        "pcba/raw/edge-feat.csv.gz": csv_gz(graphs.edges.astype(int).tolist()),
        "pcba/raw/num-node-list.csv.gz": csv_gz([[n] for n in graphs.n_node.tolist()]),
        "pcba/raw/num-edge-list.csv.gz": csv_gz([[n] for n in graphs.n_edge.tolist()]),
        "pcba/raw/graph-label.csv.gz": csv_gz(labels),
        "pcba/split/scaffold/train.csv.gz": csv_gz([[i] for i in range(n_train)]),
        "pcba/split/scaffold/valid.csv.gz": csv_gz([[i] for i in range(n_train, n_train + n_valid)]),
        "pcba/split/scaffold/test.csv.gz": csv_gz([[i] for i in range(n_train + n_valid, num_graphs)]),
        "pcba/mapping/mol.csv.gz": csv_gz([["smiles", "mol_id"]] + [["C", i] for i in range(num_graphs)]),
    }
    with zipfile.ZipFile(folder / OGBG_ARCHIVE, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return [OGBG_ARCHIVE]


# ---- mirrors -----------------------------------------------------------------------------------
WRITERS: dict[str, Callable[..., list[str]]] = {
    "mnist": write_mnist,
    "cifar": write_cifar,
    "imagenet": write_imagenet,
    "fastmri": write_fastmri,
    "criteo1tb": write_criteo,
    "librispeech": write_librispeech,
    "wmt": write_wmt,
    "ogbg": write_ogbg,
}


def write_mirror(dataset: str, root: Path, **options: Any) -> Path:
    """One dataset's fixture files under `root/<dataset>/`, with `SHA256SUMS`; returns the folder."""
    folder = root / dataset
    names = WRITERS[dataset](folder, **options)
    write_sha256sums(folder, names)
    (folder / "FIXTURE.json").write_text(json.dumps({"dataset": dataset, "files": names}))
    return folder
