"""Reading verified archives: tar (plain, gz, xz) and zip, member by member or extracted safely.

Extraction refuses members that would land outside the target folder (absolute paths, `..`,
links), as Python's `data` filter does for tar; zip members are checked the same way.
"""

from __future__ import annotations

import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from algoperf.datasets.base import DatasetUnavailableError


def _inside(root: Path, name: str) -> Path:
    target = (root / name).resolve()
    if root.resolve() not in (target, *target.parents):
        raise DatasetUnavailableError(f"archive member {name!r} would be written outside {root}")
    return target


def extract(
    archive: Path, into: Path, keep: Callable[[str], bool] = lambda name: True
) -> list[Path]:
    """Extracts the members `keep` accepts; returns the files written."""
    into.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                for info in z.infolist():
                    if info.is_dir() or not keep(info.filename):
                        continue
                    target = _inside(into, info.filename)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with z.open(info) as src, open(target, "wb") as dst:
                        while chunk := src.read(1 << 20):
                            dst.write(chunk)
                    written.append(target)
            return written
        with tarfile.open(archive) as tar:
            for member in tar:
                if not member.isfile() or not keep(member.name):
                    continue
                _inside(into, member.name)
                tar.extract(member, into, filter="data")
                written.append(into / member.name)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
        raise DatasetUnavailableError(f"{archive} cannot be read as an archive ({e}); delete it and prepare again.") from e
    return written


def tar_members(archive: Path | IO[bytes]) -> Iterator[tuple[str, IO[bytes]]]:
    """(name, readable file) of every regular file of a tar, in archive order, without extracting."""
    opened = tarfile.open(archive) if isinstance(archive, Path) else tarfile.open(fileobj=archive)
    with opened as tar:
        for member in tar:
            if member.isfile():
                f = tar.extractfile(member)
                if f is not None:
                    yield member.name, f
