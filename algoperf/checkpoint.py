"""Complete, atomic checkpoints of a trial (RULES.md, DESIGN.md: exact resume).

A checkpoint is one file `checkpoint_<step>.ckpt` written by the framework backend into a temp
file, fsync'ed and renamed, then recorded with its SHA-256 in `checkpoints.json` (also written
atomically). A crash mid-write leaves only a temp file; a file whose hash does not match (a
truncated or corrupted copy) is skipped in favour of the previous good one. The last `KEEP`
checkpoints are kept.
"""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path
from typing import Any

from absl import logging

from algoperf.logs import read_json, write_json

INDEX_FILE = "checkpoints.json"
KEEP = 2
# Fault injection for the crash-safety tests: the process SIGKILLs itself half-way through
# writing the checkpoint of this step (temp file written, not yet renamed).
FAULT_ENV = "ALGOPERF_FAULT_KILL_IN_CHECKPOINT_AT_STEP"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _index(folder: Path) -> list[dict[str, Any]]:
    path = folder / INDEX_FILE
    if not path.exists():
        return []
    try:
        return list(read_json(path))
    except (ValueError, OSError):
        logging.warning("Checkpoint index %s is unreadable; looking at the files themselves.", path)
        return [{"file": p.name, "sha256": None} for p in sorted(folder.glob("checkpoint_*.ckpt"), key=_step_of)]


def _step_of(path: Path) -> int:
    try:
        return int(path.stem.split("_")[1])
    except (IndexError, ValueError):
        return -1


def save(folder: Path, step: int, state: dict[str, Any], backend: Any) -> Path:
    """Writes `state` as the checkpoint of `step`; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"checkpoint_{step}.ckpt"
    tmp = folder / f".checkpoint_{step}.{os.getpid()}.tmp"
    backend.save(state, str(tmp))
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    if os.environ.get(FAULT_ENV) == str(step):
        os.kill(os.getpid(), signal.SIGKILL)
    os.replace(tmp, final)
    entries = [e for e in _index(folder) if e["file"] != final.name]
    entries.append({"file": final.name, "step": step, "sha256": sha256(final)})
    for old in entries[:-KEEP]:
        (folder / old["file"]).unlink(missing_ok=True)
    write_json(folder / INDEX_FILE, entries[-KEEP:])
    return final


def load_latest(folder: Path, backend: Any) -> dict[str, Any] | None:
    """The newest checkpoint whose file is intact, or None if there is none."""
    for entry in reversed(_index(folder)):
        path = folder / entry["file"]
        if not path.exists():
            continue
        if entry.get("sha256") and sha256(path) != entry["sha256"]:
            logging.warning("Checkpoint %s is corrupted (hash mismatch); using the previous one.", path)
            continue
        try:
            return dict(backend.load(str(path)))
        except Exception as e:  # a truncated file without an index entry fails to unpickle
            logging.warning("Checkpoint %s cannot be read (%s); using the previous one.", path, e)
    return None


def capture(obj: Any) -> Any:
    """A saveable copy of an optimizer state: objects with `state_dict()` become their state."""
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        return {"__state_dict__": obj.state_dict()}
    if isinstance(obj, dict):
        return {k: capture(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(capture(v) for v in obj)
    return obj


def restore(fresh: Any, saved: Any) -> Any:
    """`fresh` (a newly initialised optimizer state) brought to the `saved` state."""
    if isinstance(saved, dict) and "__state_dict__" in saved:
        fresh.load_state_dict(saved["__state_dict__"])
        return fresh
    if isinstance(fresh, dict) and isinstance(saved, dict):
        out = dict(fresh)
        for k, v in saved.items():
            out[k] = restore(fresh.get(k), v)
        return out
    if isinstance(fresh, (list, tuple)) and isinstance(saved, (list, tuple)) and len(fresh) == len(saved):
        return type(fresh)(restore(f, s) for f, s in zip(fresh, saved))
    return saved
