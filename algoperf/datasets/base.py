"""What a dataset recipe is: the files it starts from, the disk it needs, and how it converts them.

A recipe (one module per dataset in this package) names its canonical files in
`manifests/<dataset>.json` (URL, size, SHA-256 where published, and where the checksum was
published) and implements `convert(job)`: it turns the verified downloads into the files the
workload's input pipeline reads, unit by unit (`job.unit(...)`), so that a re-run redoes only the
units whose outputs are missing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from algoperf.datasets.prepare import Job

MANIFESTS = Path(__file__).resolve().parent / "manifests"


class DatasetUnavailableError(RuntimeError):
    """A dataset cannot be found, fetched, verified or prepared; the message says what to do."""


@dataclass(frozen=True)
class RemoteFile:
    """One file a dataset starts from: an archive to download, or the user's licensed copy."""

    name: str
    url: str | None = None  # None: not downloadable (a licensed file the user brings: --source)
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None


@dataclass(frozen=True)
class DiskNeed:
    """Bytes a preparation writes: downloads, scratch space (deleted at the end), prepared files."""

    download: int
    scratch: int
    prepared: int

    @property
    def total(self) -> int:
        return self.download + self.scratch + self.prepared


@dataclass
class Recipe:
    """A dataset: its source files (from its manifest) and its conversion."""

    name: str
    convert: Callable[[Job], None]
    # Bytes written per byte of source files: scratch (extracted archives, deleted at the end)
    # and prepared output. Each recipe derives its two factors in a comment from the formats.
    scratch_per_source_byte: float
    prepared_per_source_byte: float
    licensed_help: str = ""  # for licensed files: where to get them, what --source must hold
    keep_sources_as_output: bool = False  # the downloads are what the pipeline reads (MNIST)
    format_version: str = "1"  # bump when the prepared format changes: a re-run re-prepares
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def files(self) -> list[RemoteFile]:
        return [RemoteFile(**f) for f in self.manifest.get("files", [])]

    @property
    def checksums_from(self) -> str:
        return str(self.manifest.get("checksums_from", ""))

    def need(self, source_bytes: int) -> DiskNeed:
        return DiskNeed(
            download=source_bytes,
            scratch=int(source_bytes * self.scratch_per_source_byte),
            prepared=int(source_bytes * self.prepared_per_source_byte),
        )


def load_manifest(name: str) -> dict[str, Any]:
    path = MANIFESTS / f"{name}.json"
    return json.loads(path.read_text())


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
