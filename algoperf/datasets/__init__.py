"""Fetching dataset files: checksummed, atomic, from the canonical location or a mirror.

`ALGOPERF_DATASET_MIRROR` names a mirror: an http(s) URL or a local folder holding the same file
names. A mirror's files are checked against the canonical checksums; a mirror that serves other
files on purpose (a small test fixture, a re-packaged copy) ships an `MD5SUMS` file
(`<md5>  <name>` per line) whose checksums are used instead, with a warning saying so.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from absl import logging

MIRROR_ENV = "ALGOPERF_DATASET_MIRROR"


class DatasetUnavailableError(RuntimeError):
    pass


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _open(source: str, name: str) -> bytes:
    if source.startswith(("http://", "https://", "file://")):
        url = source.rstrip("/") + "/" + name
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read()
    return (Path(source) / name).read_bytes()


def _mirror_checksums(mirror: str) -> dict[str, str] | None:
    try:
        text = _open(mirror, "MD5SUMS").decode()
    except (OSError, urllib.error.URLError):
        return None
    sums = {}
    for line in text.splitlines():
        if line.strip():
            md5, name = line.split(maxsplit=1)
            sums[name.strip().lstrip("*")] = md5
    return sums


def fetch(dataset: str, files: dict[str, str], dest: Path, canonical_url: str) -> None:
    """Makes sure every file of `files` (name -> md5) is in `dest`, downloading what is missing."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetUnavailableError(f"Cannot create the data directory {dest} ({e.strerror}); choose a writable --data-dir.") from None
    missing = [name for name in files if not (dest / name).exists()]
    if not missing:
        return
    mirror = os.environ.get(MIRROR_ENV)
    source = mirror or canonical_url
    checksums = dict(files)
    if mirror:
        override = _mirror_checksums(mirror)
        if override:
            logging.warning("Mirror %s provides its own MD5SUMS: its files are not the canonical ones.", mirror)
            checksums.update({k: v for k, v in override.items() if k in files})
    for name in missing:
        try:
            payload = _open(source, name)
        except (OSError, urllib.error.URLError) as e:
            where = f"the mirror {mirror!r} ({MIRROR_ENV})" if mirror else canonical_url
            raise DatasetUnavailableError(
                f"Could not download {name} of {dataset} from {where}: {e}. This machine may be "
                f"offline. Either put the files ({', '.join(files)}) in {dest}, or set "
                f"{MIRROR_ENV} to a URL or a local folder that holds them, or use --data synthetic."
            ) from e
        with tempfile.NamedTemporaryFile(dir=dest, delete=False, suffix=".part") as tmp:
            tmp.write(payload)
        got = md5sum(Path(tmp.name))
        if got != checksums[name]:
            os.unlink(tmp.name)
            raise DatasetUnavailableError(
                f"{name} from {source} has MD5 {got}, expected {checksums[name]}: the download is "
                "corrupt or not the expected file. Nothing was saved; remove the mirror or fix its files."
            )
        shutil.move(tmp.name, dest / name)


# ---- `algoperf datasets prepare` ---------------------------------------------------------------
def workload_package(name: str) -> str:
    """The package of a workload's framework-free module (`workloads.<pkg>.workload`)."""
    from workloads import registry

    info = registry.get(name)
    for target in info.implementations.values():
        return target.split(":")[0].rsplit(".", 1)[0]
    raise registry.UnknownWorkloadError(f"workload {name!r} has no implementation to prepare data for")


def prepare(name: str, data_dir: Path, source: Path | None = None) -> Path:
    """Runs a workload's `prepare(data_dir, source)` (download, extract, preprocess)."""
    import importlib

    module = importlib.import_module(f"{workload_package(name)}.workload")
    step = getattr(module, "prepare", None)
    if step is None:
        raise DatasetUnavailableError(
            f"Workload {name!r} has no preparation step: it reads its files directly from --data-dir "
            "(see its workloads/<name>/workload.py for the expected layout)."
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    return Path(step(data_dir=data_dir, source=source) or data_dir)


def cmd_prepare(args: object) -> int:
    name = args.workload  # type: ignore[attr-defined]
    data_dir = Path(args.data_dir)  # type: ignore[attr-defined]
    source = Path(args.source) if args.source else None  # type: ignore[attr-defined]
    where = prepare(name, data_dir, source)
    print(f"{name}: data ready in {where}")
    return 0


def register(sub: object) -> None:
    datasets = sub.add_parser("datasets", help="download and preprocess a workload's dataset")  # type: ignore[attr-defined]
    actions = datasets.add_subparsers(dest="action", metavar="ACTION", required=True)
    prep = actions.add_parser("prepare", help="download (checksummed), extract and preprocess")
    prep.add_argument("workload", help="workload name")
    prep.add_argument("--data-dir", required=True, help="where the prepared files go")
    prep.add_argument("--source", help="a local folder or archive of the raw dataset, where one is needed")
    prep.set_defaults(func=cmd_prepare)
