"""Datasets: `algoperf datasets prepare|verify|list`, one recipe per dataset, and checked downloads.

    algoperf datasets prepare <name|all> --data-dir DIR [--mirror URL|DIR] [--source PATH]
    algoperf datasets verify <name|all> --data-dir DIR [--quick]
    algoperf datasets list

Datasets: mnist, cifar, imagenet (with ImageNet-v2), fastmri, criteo1tb, librispeech, wmt, ogbg
(and mnist1d, generated locally). A workload name (imagenet_resnet, librispeech_conformer, a
variant, ...) stands for its dataset. `prepare` writes `DIR/<dataset>/`; a run takes either
`--data-dir DIR/<dataset>` or `--data-dir DIR`. How one preparation goes: `prepare.py`; the files
each dataset starts from, with their published checksums: `manifests/<dataset>.json`; what each
converts them into: the dataset's module here.

`fetch` is the small automatic download the MNIST workload does on first use
(`ALGOPERF_DATASET_MIRROR` names a mirror holding the files at its top level; a mirror's `SHA256SUMS`
or `MD5SUMS` replaces the canonical checksums, with a warning).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from absl import logging

from algoperf.datasets.base import DatasetUnavailableError, DiskNeed, Recipe, format_bytes

MIRROR_ENV = "ALGOPERF_DATASET_MIRROR"
DATA_DIR_ENV = "ALGOPERF_DATA_DIR"
DATASETS = ("mnist", "mnist1d", "cifar", "ogbg", "wmt", "fastmri", "librispeech", "imagenet", "criteo1tb")
ALIASES = {
    "imagenet_resnet": "imagenet",
    "imagenet_vit": "imagenet",
    "librispeech_conformer": "librispeech",
    "librispeech_deepspeech": "librispeech",
    "criteo": "criteo1tb",
    "ogbg_molpcba": "ogbg",
    "cifar10": "cifar",
}

__all__ = [
    "DATASETS",
    "DatasetUnavailableError",
    "DiskNeed",
    "Recipe",
    "dataset_name",
    "default_data_dir",
    "fetch",
    "recipe",
    "register",
    "verify_all",
]


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV, Path.home() / ".cache" / "algoperf"))


def dataset_name(name: str) -> str:
    """The dataset of a dataset, workload or variant name."""
    if name in DATASETS:
        return name
    if name in ALIASES:
        return ALIASES[name]
    from workloads import registry

    try:
        base = registry.get(name).base_name
    except Exception:  # noqa: BLE001 - an unknown name is reported below with the choices
        base = name
    if base in DATASETS or base in ALIASES:
        return ALIASES.get(base, base)
    raise DatasetUnavailableError(
        f"Unknown dataset {name!r}: expected one of {', '.join(DATASETS)}, a workload name, or 'all'."
    )


def recipe(name: str) -> Recipe:
    module = importlib.import_module(f"algoperf.datasets.{dataset_name(name)}")
    return module.RECIPE


# ---- the automatic download of small datasets ---------------------------------------------------
def fetch(dataset: str, files: dict[str, str], dest: Path, canonical_url: str) -> None:
    """Makes sure every file of `files` (name -> MD5) is in `dest`, downloading what is missing.

    Resumable and retried (`download.py`); each file is checked before it is saved.
    """
    from algoperf.datasets.download import DownloadError, Expected, download
    from algoperf.datasets.prepare import _checksum_list

    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetUnavailableError(
            f"Cannot create the data directory {dest} ({e.strerror}); choose a writable --data-dir."
        ) from None
    missing = [name for name in files if not (dest / name).exists()]
    if not missing:
        return
    mirror = os.environ.get(MIRROR_ENV)
    source = mirror or canonical_url
    override = _checksum_list(mirror) if mirror else None
    if override:
        logging.warning("Mirror %s lists its own checksums: its files are not the canonical ones.", mirror)
    for name in missing:
        expected = Expected(md5=files[name])
        if override and name in override[0]:
            expected = Expected(**{override[1]: override[0][name]})
        location = source.rstrip("/") + "/" + name if "://" in source else str(Path(source) / name)
        try:
            download(location, dest / name, expected, retries=2, backoff=0.5)
        except DownloadError as e:
            where = f"the mirror {mirror!r} ({MIRROR_ENV})" if mirror else canonical_url
            raise DatasetUnavailableError(
                f"Could not download {name} of {dataset} from {where}: {e} This machine may be "
                f"offline. Either put the files ({', '.join(files)}) in {dest}, or set "
                f"{MIRROR_ENV} to a URL or a local folder that holds them, or use --data synthetic."
            ) from None


# ---- for `algoperf doctor` ------------------------------------------------------------------------
def verify_all(data_dir: Path) -> dict[str, tuple[bool, str]]:
    """Per base workload whose dataset was prepared in `data_dir`: (files intact, detail).

    Sizes only (a quick check): the SHA-256 of every file is `algoperf datasets verify`'s job.
    """
    from algoperf.datasets.prepare import MANIFEST_FILE, verify
    from workloads import registry

    results: dict[str, tuple[bool, str]] = {}
    for info in registry.all_workloads().values():
        if info.is_variant:
            continue
        try:
            name = dataset_name(info.name)
        except DatasetUnavailableError:
            continue
        if not (Path(data_dir) / name / MANIFEST_FILE).exists():
            continue
        report = verify(name, Path(data_dir), quick=True)
        detail = f"{name}: {report.checked} files" if not report.problems else report.problems[0]
        results[info.name] = (not report.problems, detail)
    return results


# ---- the command line ---------------------------------------------------------------------------
def _names(name: str) -> list[str]:
    return list(DATASETS) if name == "all" else [dataset_name(name)]


def cmd_prepare(args: Any) -> int:
    from algoperf.datasets.prepare import prepare

    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    mirror = args.mirror or None
    source = Path(args.source) if args.source else None
    failed = []
    for name in _names(args.dataset):
        try:
            prepare(recipe(name), data_dir, mirror, source, remove_downloads=args.remove_downloads,
                    workers=args.workers)
        except DatasetUnavailableError as e:
            if args.dataset != "all":
                raise
            print(f"{name}: not prepared: {e}")
            failed.append(name)
    if failed:
        print(f"Not prepared: {', '.join(failed)} (see above).")
        return 1
    return 0


def cmd_verify(args: Any) -> int:
    from algoperf.datasets.prepare import MANIFEST_FILE, verify

    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    names = _names(args.dataset)
    if args.dataset == "all":
        names = [n for n in names if (data_dir / n / MANIFEST_FILE).exists()]
        if not names:
            raise DatasetUnavailableError(f"No prepared dataset in {data_dir} (algoperf datasets prepare ...).")
    bad = 0
    for name in names:
        report = verify(name, data_dir, quick=args.quick)
        if report.problems:
            bad += 1
            print(f"{name}: {len(report.problems)} problem(s) in {report.checked} files:")
            for problem in report.problems[:20]:
                print(f"  {problem}")
            print(f"  Fix: delete the files named above and run `algoperf datasets prepare {name} "
                  f"--data-dir {data_dir}`: it redoes only what is missing.")
        else:
            what = "sizes" if args.quick else "sizes and SHA-256"
            print(f"{name}: {report.checked} files match the manifest ({what})")
    return 1 if bad else 0


def disk_table() -> list[tuple[str, DiskNeed, bool]]:
    """(dataset, disk it needs, licensed) for every dataset, from the manifests' published sizes."""
    rows = []
    for name in DATASETS:
        r = recipe(name)
        sizes = [f.size for f in r.files]
        total = sum(s for s in sizes if s) or int(r.manifest.get("approx_source_bytes", 0))
        rows.append((name, r.need(total), any(f.url is None for f in r.files)))
    return rows


def cmd_list(args: Any) -> int:
    print(f"{'dataset':<13}{'sources':>11}{'scratch':>11}{'prepared':>11}  where from")
    for name, need, licensed in disk_table():
        where = "your licensed copy (--source)" if licensed else "downloaded"
        if name == "imagenet":
            where = "ILSVRC2012 licensed (--source); ImageNet-v2 downloaded"
        if name == "mnist1d":
            where = "generated"
        print(f"{name:<13}{format_bytes(need.download):>11}{format_bytes(need.scratch):>11}"
              f"{format_bytes(need.prepared):>11}  {where}")
    return 0


def register(sub: Any) -> None:
    datasets = sub.add_parser("datasets", help="download, check and convert the workloads' datasets")
    actions = datasets.add_subparsers(dest="action", metavar="ACTION", required=True)
    prep = actions.add_parser(
        "prepare", help="download (resumable, checksummed), extract and convert into what the pipelines read"
    )
    prep.add_argument("dataset", help=f"one of {', '.join(DATASETS)}, a workload name, or 'all'")
    prep.add_argument("--data-dir", help=f"where DIR/<dataset>/ is written (default: ${DATA_DIR_ENV} or ~/.cache/algoperf)")
    prep.add_argument("--mirror", help="a URL or folder holding <dataset>/<file> (with SHA256SUMS for non-canonical copies)")
    prep.add_argument("--source", help="a folder holding your licensed archives (ImageNet, fastMRI)")
    prep.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes converting in parallel (Criteo)")
    prep.add_argument("--remove-downloads", action="store_true", help="delete the downloaded archives once converted")
    prep.set_defaults(func=cmd_prepare)
    ver = actions.add_parser("verify", help="check a prepared dataset against the manifest prepare wrote")
    ver.add_argument("dataset", help=f"one of {', '.join(DATASETS)}, a workload name, or 'all'")
    ver.add_argument("--data-dir", help=f"the folder given to prepare (default: ${DATA_DIR_ENV} or ~/.cache/algoperf)")
    ver.add_argument("--quick", action="store_true", help="sizes only, no SHA-256")
    ver.set_defaults(func=cmd_verify)
    lst = actions.add_parser("list", help="the datasets and the disk space each needs")
    lst.set_defaults(func=cmd_list)
