"""Writes algoperf/datasets/manifests/*.json: the canonical source files, sizes and SHA-256s.

The checksums are the ones tensorflow-datasets publishes (its `url_checksums/*.txt` and
`datasets/*/checksums.tsv`: URL, size, SHA-256), read from the installed package; its version is
recorded in each manifest. Datasets without published checksums (Criteo 1TB, fastMRI) list their
files with null checksums: `prepare` then records the SHA-256 of what it fetched in the prepared
tree's manifest, and `verify` checks against that.

    .venv/bin/python scripts/update_dataset_manifests.py
"""

from __future__ import annotations

import importlib.util
import json
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "algoperf" / "datasets" / "manifests"

# dataset -> (TFDS checksum file, the file names it needs from it)
FROM_TFDS = {
    "mnist": (
        "url_checksums/mnist.txt",
        ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"],
    ),
    "cifar": ("url_checksums/cifar10.txt", ["cifar-10-binary.tar.gz"]),
    "imagenet": (
        "datasets/imagenet2012/checksums.tsv",
        ["ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"],
    ),
    "imagenet_v2": ("datasets/imagenet_v2/checksums.tsv", ["imagenetv2-matched-frequency.tar.gz"]),
    "librispeech": (
        "datasets/librispeech/checksums.tsv",
        ["train-clean-100.tar.gz", "train-clean-360.tar.gz", "train-other-500.tar.gz",
         "dev-clean.tar.gz", "dev-other.tar.gz", "test-clean.tar.gz"],
    ),
    "wmt": (
        "url_checksums/wmt17_translate.txt",
        ["training-parallel-europarl-v7.tgz", "training-parallel-commoncrawl.tgz",
         "training-parallel-nc-v12.tgz", "rapid2016.tgz", "dev.tgz"],
    ),
    "ogbg": ("datasets/ogbg_molpcba/checksums.tsv", ["pcba.zip"]),
}
LICENSED = {"ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"}

CRITEO_URL = "https://huggingface.co/datasets/criteo/CriteoClickLogs/resolve/main/day_{}.gz"
# The reference's dataset_setup.py: "Criteo 1TB download size: ~350GB".
CRITEO_APPROX_BYTES = 350 * 10**9
# The same file: "FastMRI download size: ~90GB" (train, validation and the test archive, which is
# not needed here: an upper bound).
FASTMRI_APPROX_BYTES = 90 * 10**9


def tfds_checksums(relative: str) -> dict[str, tuple[str, int, str]]:
    """File name -> (URL, size, SHA-256) from one TFDS checksum file."""
    spec = importlib.util.find_spec("tensorflow_datasets")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("tensorflow-datasets is not installed (pip install -e '.[data]')")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3:
            url, size, sha = parts[0], int(parts[1]), parts[2]
            out[url.rsplit("/", 1)[-1]] = (url, size, sha)
    return out


def main() -> None:
    version = metadata.version("tensorflow-datasets")
    manifests: dict[str, dict] = {}
    for dataset, (relative, names) in FROM_TFDS.items():
        sums = tfds_checksums(relative)
        files = []
        for name in names:
            url, size, sha = sums[name]
            files.append({"name": name, "url": None if name in LICENSED else url, "size": size, "sha256": sha})
        manifests[dataset] = {
            "dataset": dataset,
            "checksums_from": f"tensorflow-datasets {version}, {relative}",
            "files": files,
        }
    v2 = manifests.pop("imagenet_v2")
    manifests["imagenet"]["files"] += v2["files"]
    manifests["imagenet"]["checksums_from"] += f"; {v2['checksums_from']}"
    manifests["criteo1tb"] = {
        "dataset": "criteo1tb",
        "checksums_from": "not published: the SHA-256 of the fetched files is recorded at prepare time",
        "approx_source_bytes": CRITEO_APPROX_BYTES,
        "files": [{"name": f"day_{d}.gz", "url": CRITEO_URL.format(d)} for d in range(24)],
    }
    manifests["fastmri"] = {
        "dataset": "fastmri",
        "checksums_from": "not published: the SHA-256 of the given files is recorded at prepare time",
        "approx_source_bytes": FASTMRI_APPROX_BYTES,
        "files": [{"name": "knee_singlecoil_train.tar.xz"}, {"name": "knee_singlecoil_val.tar.xz"}],
    }
    OUT.mkdir(parents=True, exist_ok=True)
    for dataset, manifest in sorted(manifests.items()):
        (OUT / f"{dataset}.json").write_text(json.dumps(manifest, indent=1) + "\n")
        print(f"{dataset}: {len(manifest['files'])} files")


if __name__ == "__main__":
    main()
