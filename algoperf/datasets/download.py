"""Getting one file: resumable HTTP range downloads, retries with backoff, a progress bar, checksums.

A file is fetched into `<name>.part` next to its destination. An interrupted transfer (a dropped
connection, a killed process) leaves the `.part` file; the next attempt asks the server for the
rest (`Range: bytes=<size of .part>-`) and appends, or starts over when the server ignores the
range (status 200 instead of 206). Network errors are retried with exponential backoff (1, 2, 4,
... seconds, `RETRIES` attempts). Once complete, the file's SHA-256 (and MD5, where only that is
published) is checked against the expected value; a mismatch deletes the file and fetches it once
more from scratch (a corrupted transfer or a truncated `.part` from an older server version), then
fails naming the file, both checksums and the fix. Only a verified file is renamed into place, so
a file without `.part` is always a good one.

A source is a URL (http, https, file) or a local folder (a mirror on a shared disk).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from algoperf.datasets.base import DatasetUnavailableError

CHUNK = 1 << 20
RETRIES = 5
BACKOFF_SECONDS = 1.0
TIMEOUT_SECONDS = 60


class DownloadError(DatasetUnavailableError):
    """A file could not be fetched or is not the expected file."""


@dataclass(frozen=True)
class Expected:
    """What a file must be: its size and checksums where they are known (None: not published)."""

    size: int | None = None
    sha256: str | None = None
    md5: str | None = None


def file_digests(path: Path, on_bytes: Callable[[int], None] | None = None) -> tuple[str, str]:
    """(SHA-256, MD5) of a file, read once."""
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            sha.update(chunk)
            md5.update(chunk)
            if on_bytes:
                on_bytes(len(chunk))
    return sha.hexdigest(), md5.hexdigest()


def mismatch(path: Path, expected: Expected) -> str | None:
    """Why `path` is not the expected file, or None when it is."""
    size = path.stat().st_size
    if expected.size is not None and size != expected.size:
        return f"has {size:,} bytes, expected {expected.size:,}"
    if expected.sha256 is None and expected.md5 is None:
        return None
    sha, md5 = file_digests(path)
    if expected.sha256 is not None and sha != expected.sha256:
        return f"has SHA-256 {sha}, expected {expected.sha256}"
    if expected.md5 is not None and md5 != expected.md5:
        return f"has MD5 {md5}, expected {expected.md5}"
    return None


class Progress:
    """A rich progress bar on stderr when it is a terminal; silent otherwise (logs, tests)."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bar = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
            from rich.progress import (
                Progress as RichProgress,
            )

            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def task(self, description: str, total: int | None, done: int = 0) -> Callable[[int], None]:
        """A callback that advances a new bar by a number of bytes."""
        if self._bar is None:
            return lambda n: None
        task_id = self._bar.add_task(description, total=total, completed=done)
        return lambda n: self._bar.advance(task_id, n)  # type: ignore[union-attr]


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://", "file://"))


def join(source: str, name: str) -> str:
    """The location of `name` under a source (a URL or a folder)."""
    if _is_url(source):
        return source.rstrip("/") + "/" + name
    return str(Path(source) / name)


def read_small(location: str) -> bytes | None:
    """A small file (a checksum list) from a URL or a path; None when it is not there."""
    try:
        if _is_url(location):
            with urllib.request.urlopen(location, timeout=TIMEOUT_SECONDS) as response:
                return response.read()
        return Path(location).read_bytes()
    except (OSError, urllib.error.URLError):
        return None


def _transfer(location: str, part: Path, advance: Callable[[int], None]) -> None:
    """Appends the rest of `location` to `part` (from its current size)."""
    have = part.stat().st_size if part.exists() else 0
    if not _is_url(location):
        with open(location, "rb") as src, open(part, "ab") as dst:
            src.seek(have)
            for chunk in iter(lambda: src.read(CHUNK), b""):
                dst.write(chunk)
                advance(len(chunk))
        return
    request = urllib.request.Request(location, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the range starts at the end: the part is complete
            return
        raise
    with response:
        mode = "ab" if have and response.status == 206 else "wb"
        with open(part, mode) as dst:
            for chunk in iter(lambda: response.read(CHUNK), b""):
                dst.write(chunk)
                advance(len(chunk))
        length = response.headers.get("Content-Length")
        if length is not None and part.stat().st_size < (have if mode == "ab" else 0) + int(length):
            raise ConnectionError(f"the transfer of {location} ended early")


def download(
    location: str,
    dest: Path,
    expected: Expected,
    progress: Progress | None = None,
    retries: int | None = None,
    backoff: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Fetches `location` to `dest` (resuming a `.part`), verified; returns `dest`."""
    retries = RETRIES if retries is None else retries
    backoff = BACKOFF_SECONDS if backoff is None else backoff
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    progress = progress or Progress(enabled=False)
    for fresh_start in (False, True):
        if fresh_start:
            part.unlink(missing_ok=True)
        attempt = 0
        advance = progress.task(dest.name, expected.size, part.stat().st_size if part.exists() else 0)
        while True:
            try:
                _transfer(location, part, advance)
                break
            except (OSError, http.client.HTTPException) as e:
                status = getattr(e, "code", None)
                if status is not None and 400 <= status < 500 and status not in (408, 429):
                    raise DownloadError(f"{location}: HTTP {status} ({e}); check the URL or the mirror.") from e
                attempt += 1
                if attempt >= retries:
                    raise DownloadError(
                        f"Could not download {location} after {retries} attempts ({e}). The partial "
                        f"file {part} is kept: run the same command again to resume, or use --mirror "
                        "with a location that holds the file."
                    ) from e
                sleep(backoff * 2 ** (attempt - 1))
        why = mismatch(part, expected)
        if why is None:
            os.replace(part, dest)
            return dest
        if fresh_start:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"{dest.name} from {location} {why}, twice: the source serves a different file. "
                "Nothing was saved. Use another --mirror, or check that its files and SHA256SUMS match."
            )
    raise AssertionError("unreachable")


def copy_verified(src: Path, dest: Path, expected: Expected) -> Path:
    """A local file checked against `expected`, then linked (same disk) or copied to `dest`."""
    why = mismatch(src, expected)
    if why is not None:
        raise DownloadError(f"{src} {why}: it is not the expected file (a damaged or different copy).")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() or dest.is_symlink():
        dest.unlink()
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
    return dest
