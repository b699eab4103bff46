"""`algoperf datasets prepare` and `verify`: one dataset, end to end, and the check of what it made.

Preparing `<data-dir>/<dataset>/`:

1. read the prepared-tree manifest (`algoperf_manifest.json`) if an earlier run left one: units
   recorded there whose files are all present with their recorded sizes are not redone;
2. find each source file: a verified earlier download in `downloads/`, the user's copy in
   `--source`, a `--mirror`, or the canonical URL, in that order;
3. estimate the disk space (downloads still to fetch + scratch + prepared files still to write)
   and refuse, with the numbers, before fetching anything when the disk is short;
4. download (resumable, retried, checksummed: `download.py`) or check the user's copies;
5. convert, unit by unit, recording each unit's files (size, SHA-256) as soon as it is written;
6. mark the manifest complete (dataset, format version, algoperf version, source checksums).

A mirror is a URL or a folder holding `<dataset>/<file>` (or `<file>` at its top, for a mirror of
one dataset). A mirror that ships `SHA256SUMS` (or `MD5SUMS`) next to the files is trusted for
those files' checksums instead of the canonical ones, with a warning: that is how a re-packaged
copy, or a test's small fixture, is served.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from algoperf.datasets.base import DatasetUnavailableError, Recipe, RemoteFile, format_bytes
from algoperf.datasets.download import (
    TIMEOUT_SECONDS,
    DownloadError,
    Expected,
    Progress,
    download,
    file_digests,
    join,
    mismatch,
    read_small,
)

MANIFEST_FILE = "algoperf_manifest.json"
DOWNLOADS = "downloads"
SCRATCH = ".scratch"


def free_bytes(path: Path) -> int:
    """Free bytes on the disk that holds `path` (or its nearest existing parent)."""
    probe = Path(path).resolve()
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def algoperf_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("algoperf")
    except metadata.PackageNotFoundError:
        return "unknown"


# ---- the prepared-tree manifest ----------------------------------------------------------------
@dataclass
class PreparedManifest:
    """What a preparation wrote: units -> files (size, SHA-256), and what it was made from."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, out: Path) -> PreparedManifest:
        path = out / MANIFEST_FILE
        data = json.loads(path.read_text()) if path.exists() else {}
        return cls(path, data)

    @property
    def units(self) -> dict[str, dict[str, dict[str, Any]]]:
        return self.data.setdefault("units", {})

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def prepared_bytes(self) -> int:
        return sum(f["bytes"] for files in self.units.values() for f in files.values())

    def unit_present(self, name: str) -> bool:
        files = self.units.get(name)
        if files is None:
            return False
        root = self.path.parent
        return all((root / rel).is_file() and (root / rel).stat().st_size == f["bytes"] for rel, f in files.items())


# ---- the job a recipe's conversion runs in ------------------------------------------------------
@dataclass
class Job:
    """A recipe's view of one preparation: its verified sources, its output folder, its units."""

    recipe: Recipe
    out: Path
    sources: dict[str, Path]
    manifest: PreparedManifest
    progress: Progress
    say: Callable[[str], None] = print
    workers: int = 1

    @property
    def scratch(self) -> Path:
        path = self.out / SCRATCH
        path.mkdir(parents=True, exist_ok=True)
        return path

    def source(self, name: str) -> Path:
        return self.sources[name]

    def needs(self, unit: str) -> bool:
        """Whether a unit still has to be made (not recorded, or a recorded file is missing)."""
        return not self.manifest.unit_present(unit)

    def done(self, unit: str, files: list[Path]) -> None:
        """Records a unit's files (relative to the output folder) with their sizes and SHA-256."""
        record = {}
        for path in sorted(files):
            sha, _ = file_digests(path)
            record[str(path.relative_to(self.out))] = {"bytes": path.stat().st_size, "sha256": sha}
        self.manifest.units[unit] = record
        self.manifest.save()


# ---- finding the sources -------------------------------------------------------------------------
@dataclass
class Plan:
    """Where each source file comes from, and what it must be."""

    local: dict[str, Path] = field(default_factory=dict)  # already here (downloads/ or --source)
    remote: dict[str, tuple[str, Expected]] = field(default_factory=dict)  # location, expected
    remote_bytes: int = 0
    source_bytes: int = 0  # every source file, fetched or not (the scale of the conversion)
    checked: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (sha256, against what)


def _checksum_list(base: str) -> tuple[dict[str, str], str] | None:
    for list_name, kind in (("SHA256SUMS", "sha256"), ("MD5SUMS", "md5")):
        text = read_small(join(base, list_name))
        if text is not None:
            sums = {}
            for line in text.decode().splitlines():
                if line.strip():
                    digest, name = line.split(maxsplit=1)
                    sums[name.strip().lstrip("*")] = digest
            return sums, kind
    return None


def _remote_size(location: str) -> int | None:
    if not location.startswith(("http://", "https://", "file://")):
        path = Path(location)
        return path.stat().st_size if path.exists() else None
    try:
        request = urllib.request.Request(location, method="HEAD")
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            length = response.headers.get("Content-Length")
            return int(length) if length is not None else None
    except OSError:
        return None


def mirror_base(mirror: str, dataset: str) -> str:
    """`<mirror>/<dataset>` when the mirror has a folder for the dataset, else the mirror itself."""
    nested = join(mirror, dataset)
    if not mirror.startswith(("http://", "https://", "file://")):
        return nested if Path(nested).is_dir() else mirror
    return nested if _checksum_list(nested) is not None else mirror


def plan_sources(
    recipe: Recipe, out: Path, mirror: str | None, source: Path | None, say: Callable[[str], None]
) -> Plan:
    plan = Plan()
    files = recipe.files
    base = mirror_base(mirror, recipe.name) if mirror else None
    override = _own_checksums(recipe, base, "mirror", say) if base else None
    given_override = _own_checksums(recipe, str(source), "--source folder", say) if source and Path(source).is_dir() else None
    approx = recipe.manifest.get("approx_source_bytes")
    for f in files:
        expected = Expected(f.size, f.sha256, f.md5)
        downloaded = out / DOWNLOADS / f.name
        given = _given(source, f)
        lists = given_override if given is not None else override
        against = "published"
        if lists and f.name in lists[0]:
            expected = Expected(None, **{lists[1]: lists[0][f.name]})
            against = "the checksum list of the mirror or --source folder"
        if expected.sha256:
            plan.checked[f.name] = (expected.sha256, against)
        if downloaded.exists():
            plan.local[f.name] = downloaded
            plan.source_bytes += downloaded.stat().st_size
        elif given is not None:
            why = mismatch(given, expected)
            if why is not None:
                raise DatasetUnavailableError(
                    f"{given} {why}: it is not the {recipe.name} file {f.name} this preparation "
                    f"expects (checksum from {recipe.checksums_from}). Check the copy, or download it again."
                )
            plan.local[f.name] = given
            plan.source_bytes += given.stat().st_size
        elif base is not None:
            location = join(base, f.name)
            size = expected.size or _remote_size(location)
            plan.remote[f.name] = (location, expected)
            plan.remote_bytes += size or 0
            plan.source_bytes += size or 0
        elif f.url is not None:
            plan.remote[f.name] = (f.url, expected)
            size = f.size or (int(approx / len(files)) if approx else 0)
            plan.remote_bytes += size
            plan.source_bytes += size
        else:
            raise DatasetUnavailableError(_licensed_message(recipe, source))
    return plan


def _own_checksums(
    recipe: Recipe, base: str, what: str, say: Callable[[str], None]
) -> tuple[dict[str, str], str] | None:
    found = _checksum_list(base)
    if found and any(f.name in found[0] for f in recipe.files):
        say(
            f"{recipe.name}: the {what} {base} lists its own checksums: its files are checked against "
            "those, not the canonical ones (a re-packaged copy or a test fixture)."
        )
        return found
    return None


def _given(source: Path | None, f: RemoteFile) -> Path | None:
    if source is None:
        return None
    source = Path(source)
    if source.is_file() and source.name == f.name:
        return source
    candidate = source / f.name
    return candidate if candidate.is_file() else None


def _licensed_message(recipe: Recipe, source: Path | None) -> str:
    names = ", ".join(f.name for f in recipe.files)
    where = f"--source {source} does not hold them" if source else "pass --source with the folder that holds them"
    return f"{recipe.name} needs your own licensed copy of: {names}; {where}. {recipe.licensed_help}"


# ---- the whole preparation -----------------------------------------------------------------------
def check_space(recipe: Recipe, out: Path, plan: Plan, manifest: PreparedManifest, all_done: bool) -> None:
    need = recipe.need(plan.source_bytes)
    prepared = 0 if all_done else max(0, need.prepared - manifest.prepared_bytes())
    scratch = 0 if all_done else need.scratch
    required = plan.remote_bytes + scratch + prepared
    free = free_bytes(out)
    if required > free:
        raise DatasetUnavailableError(
            f"Not enough disk space for {recipe.name} in {out}: it needs about {format_bytes(required)} "
            f"({required:,} bytes: {format_bytes(plan.remote_bytes)} of downloads, "
            f"{format_bytes(scratch)} of scratch space while converting, {format_bytes(prepared)} of "
            f"prepared files) and {format_bytes(free)} ({free:,} bytes) is free. Free some space, "
            "or choose --data-dir on a larger disk."
        )


def prepare(
    recipe: Recipe,
    data_dir: Path,
    mirror: str | None = None,
    source: Path | None = None,
    progress: Progress | None = None,
    say: Callable[[str], None] = print,
    remove_downloads: bool = False,
    workers: int = 1,
) -> Path:
    """Prepares `<data_dir>/<recipe.name>/` (see the module docstring); returns that folder."""
    out = Path(data_dir) / recipe.name
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetUnavailableError(
            f"Cannot create {out} ({e.strerror}); choose a writable --data-dir."
        ) from None
    manifest = PreparedManifest.load(out)
    if manifest.data.get("format_version") not in (None, recipe.format_version):
        say(f"{recipe.name}: {out} was prepared in an older format; preparing it again.")
        manifest.data = {}
    complete = bool(manifest.data.get("complete")) and all(
        manifest.unit_present(u) for u in manifest.units
    )
    if complete:
        say(f"{recipe.name}: already prepared in {out} (nothing to do).")
        return out
    progress = progress or Progress()
    plan = plan_sources(recipe, out, mirror, source, say)
    check_space(recipe, out, plan, manifest, all_done=False)
    sources = dict(plan.local)
    if plan.remote:
        say(f"{recipe.name}: downloading {len(plan.remote)} file(s), {format_bytes(plan.remote_bytes)}")
        with progress:
            for name, (location, expected) in plan.remote.items():
                sources[name] = download(location, out / DOWNLOADS / name, expected, progress)
    manifest.data.update(
        dataset=recipe.name,
        format_version=recipe.format_version,
        complete=False,
        sources={
            name: {"bytes": path.stat().st_size, **_source_checksum(plan, name, path, manifest)}
            for name, path in sorted(sources.items())
        },
    )
    manifest.save()
    job = Job(recipe, out, sources, manifest, progress, say, workers)
    say(f"{recipe.name}: converting into {out}")
    try:
        recipe.convert(job)
    finally:
        shutil.rmtree(out / SCRATCH, ignore_errors=True)
    manifest.data.update(
        complete=True,
        algoperf_version=algoperf_version(),
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        checksums_from=recipe.checksums_from,
    )
    manifest.save()
    if remove_downloads and not recipe.keep_sources_as_output:
        shutil.rmtree(out / DOWNLOADS, ignore_errors=True)
    total = manifest.prepared_bytes()
    say(f"{recipe.name}: ready in {out} ({format_bytes(total)} in {sum(len(u) for u in manifest.units.values())} files)")
    return out


def _source_checksum(plan: Plan, name: str, path: Path, manifest: PreparedManifest) -> dict[str, str]:
    """The SHA-256 a source was checked against; for a file without a published checksum
    (Criteo, fastMRI), the SHA-256 of the copy used, computed once and kept in the manifest."""
    if name in plan.checked:
        sha, against = plan.checked[name]
        return {"sha256": sha, "checked_against": against}
    known = manifest.data.get("sources", {}).get(name, {})
    if known.get("sha256") and known.get("bytes") == path.stat().st_size:
        return {"sha256": known["sha256"], "checked_against": "recorded"}
    return {"sha256": file_digests(path)[0], "checked_against": "recorded"}


@dataclass
class VerifyReport:
    checked: int = 0
    problems: list[str] = field(default_factory=list)


def verify(name: str, data_dir: Path, quick: bool = False, progress: Progress | None = None) -> VerifyReport:
    """Checks a prepared tree against its manifest: every file present, its size, its SHA-256."""
    out = Path(data_dir) / name
    manifest = PreparedManifest.load(out)
    report = VerifyReport()
    if not manifest.data:
        report.problems.append(
            f"{out / MANIFEST_FILE} is missing: {name} was not prepared there "
            f"(algoperf datasets prepare {name} --data-dir {data_dir})."
        )
        return report
    if not manifest.data.get("complete"):
        report.problems.append(f"{name}: the preparation in {out} did not finish; run prepare again.")
    for unit, files in sorted(manifest.units.items()):
        for rel, f in sorted(files.items()):
            path = out / rel
            report.checked += 1
            if not path.is_file():
                report.problems.append(f"{path}: missing (unit {unit})")
            elif path.stat().st_size != f["bytes"]:
                report.problems.append(f"{path}: {path.stat().st_size:,} bytes, expected {f['bytes']:,}")
            elif not quick and file_digests(path)[0] != f["sha256"]:
                report.problems.append(f"{path}: SHA-256 differs from the manifest (the file changed)")
    return report


__all__ = ["DownloadError", "Job", "PreparedManifest", "free_bytes", "prepare", "verify"]
