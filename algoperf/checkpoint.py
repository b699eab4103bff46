"""Complete, atomic checkpoints of a trial (RULES.md, DESIGN.md: exact resume).

A checkpoint is one file `checkpoint_<step>.ckpt`: a pytree of numpy arrays (the backend turns
framework state into that, `capture`/`restore` walk any pytree), pickled into a temp file,
fsync'ed and renamed, then recorded with its SHA-256 in `checkpoints.json` (also written
atomically). A crash mid-write leaves only a temp file; a file whose hash does not match (a
truncated or corrupted copy) is skipped in favour of the previous good one. The last `KEEP`
checkpoints are kept.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import pickle
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from absl import logging

from algoperf.logs import read_json, write_json

INDEX_FILE = "checkpoints.json"
KEEP = 2
STATE_DICT_KEY = "__state_dict__"
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


def save(folder: Path, step: int, state: dict[str, Any]) -> Path:
    """Writes `state` as the checkpoint of `step`; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"checkpoint_{step}.ckpt"
    tmp = folder / f".checkpoint_{step}.{os.getpid()}.tmp"
    digest = write(state, str(tmp))
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    if os.environ.get(FAULT_ENV) == str(step):
        os.kill(os.getpid(), signal.SIGKILL)
    os.replace(tmp, final)
    entries = [e for e in _index(folder) if e["file"] != final.name]
    entries.append({"file": final.name, "step": step, "sha256": digest})
    for old in entries[:-KEEP]:
        (folder / old["file"]).unlink(missing_ok=True)
    write_json(folder / INDEX_FILE, entries[-KEEP:])
    return final


def load_latest(folder: Path) -> dict[str, Any] | None:
    """The newest checkpoint whose file is intact, or None if there is none."""
    for entry in reversed(_index(folder)):
        path = folder / entry["file"]
        if not path.exists():
            continue
        if entry.get("sha256") and sha256(path) != entry["sha256"]:
            logging.warning("Checkpoint %s is corrupted (hash mismatch); using the previous one.", path)
            continue
        try:
            return dict(read(str(path)))
        except Exception as e:  # a truncated file without an index entry fails to unpickle
            logging.warning("Checkpoint %s cannot be read (%s); using the previous one.", path, e)
    return None


@dataclasses.dataclass(frozen=True)
class Unsaved:
    """Stands in a checkpoint for what cannot be saved (a function, a closure over a schedule):
    the restored trial keeps its freshly built value, which set-up rebuilds identically."""

    type_name: str


@dataclasses.dataclass(frozen=True)
class FrameworkArray:
    """A framework tensor as numpy plus what numpy cannot say (e.g. bfloat16 kept as its bits)."""

    framework: str
    dtype: str
    value: Any  # np.ndarray


def _is_namedtuple(obj: Any) -> bool:
    return isinstance(obj, tuple) and hasattr(type(obj), "_fields")


def _rebuild(container: Any, values: list[Any]) -> Any:
    """`container`'s type with `values` (namedtuples take them positionally)."""
    if _is_namedtuple(container):
        return type(container)(*values)
    return type(container)(values)


def capture(obj: Any, leaf: Callable[[Any], Any] = lambda x: x) -> Any:
    """A saveable copy of any pytree: dicts and other mappings, lists, tuples, namedtuples,
    dataclasses; objects with `state_dict()` (torch modules and optimizers, input queues) become
    their state. `leaf` turns framework arrays into framework-free values, which may share the
    arrays' memory (a CPU tensor's numpy view): write the capture before the state changes."""
    if hasattr(obj, "state_dict") and callable(obj.state_dict) and not isinstance(obj, type):
        return {STATE_DICT_KEY: capture(obj.state_dict(), leaf)}
    if isinstance(obj, Mapping):
        items = {k: capture(v, leaf) for k, v in obj.items()}
        return items if type(obj) is dict else _mapping_of(obj, items)
    if isinstance(obj, (list, tuple)):
        return _rebuild(obj, [capture(v, leaf) for v in obj])
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _replace_fields(obj, {f.name: capture(getattr(obj, f.name), leaf)
                                     for f in dataclasses.fields(obj)})
    if callable(obj) and not hasattr(obj, "shape"):
        return Unsaved(type(obj).__name__)
    return leaf(obj)


def restore(fresh: Any, saved: Any, leaf: Callable[[Any, Any], Any] = lambda f, s: s) -> Any:
    """`fresh` (the same structure, newly built by set-up) brought to the `saved` state.

    `leaf(fresh_leaf, saved_leaf)` places a saved value as the fresh one is placed (device,
    sharding, dtype). What `capture` could not save keeps its fresh value."""
    if isinstance(saved, Unsaved):
        return fresh
    if isinstance(saved, Mapping) and STATE_DICT_KEY in saved and hasattr(fresh, "load_state_dict"):
        fresh.load_state_dict(restore(fresh.state_dict(), saved[STATE_DICT_KEY], leaf))
        return fresh
    if isinstance(saved, Mapping):
        base = fresh if isinstance(fresh, Mapping) else {}
        items = {k: restore(base.get(k), v, leaf) for k, v in saved.items()}
        return items if type(saved) is dict else _mapping_of(saved, items)
    if isinstance(saved, (list, tuple)):
        same = isinstance(fresh, (list, tuple)) and len(fresh) == len(saved)
        parts = fresh if same else [None] * len(saved)
        return _rebuild(saved, [restore(f, s, leaf) for f, s in zip(parts, saved)])
    if dataclasses.is_dataclass(saved) and not isinstance(saved, (type, FrameworkArray)):
        same = type(fresh) is type(saved)
        return _replace_fields(saved, {
            f.name: restore(getattr(fresh, f.name) if same else None, getattr(saved, f.name), leaf)
            for f in dataclasses.fields(saved)
        })
    return leaf(fresh, saved)


def _mapping_of(like: Any, items: dict[Any, Any]) -> Any:
    """A mapping of `like`'s type (OrderedDict, flax FrozenDict, ...) holding `items`."""
    try:
        return type(like)(items)
    except TypeError:
        return items


def _replace_fields(obj: Any, values: dict[str, Any]) -> Any:
    """A copy of a dataclass instance with `values`, also for frozen ones and non-init fields."""
    new = copy.copy(obj)
    for name, value in values.items():
        object.__setattr__(new, name, value)
    return new


class _HashingFile:
    """A file's `write` that also feeds every byte written to a SHA-256."""

    def __init__(self, file: Any) -> None:
        self._file = file
        self.digest = hashlib.sha256()

    def write(self, data: Any) -> int:
        self.digest.update(data)
        return self._file.write(data)


def write(tree: Any, path: str) -> str:
    """A framework-free pytree to a file; returns the SHA-256 of the file's bytes.

    Pickle protocol 5 hands a large array's buffer straight to `write` (no copy), and the hash is
    taken of those bytes on their way to the file rather than by reading the file back: on a
    ViT-B/16 + AdamW checkpoint (1 GB) the read-back was a fifth of the checkpoint's CPU time
    (scripts/bench_checkpoint.py)."""
    with open(path, "wb") as f:
        out = _HashingFile(f)
        pickle.dump(tree, out, protocol=5)
    return out.digest.hexdigest()


def read(path: str) -> Any:
    with open(path, "rb") as f:
        return pickle.load(f)
