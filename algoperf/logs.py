"""A trial's log files, in AlgoPerf's layout (RULES.md, Logs).

`eval_measurements.csv` gets one row per eval, appended and flushed as it happens. `events.jsonl`
(ours) is the structured record of the trial from which everything else can be rebuilt. JSON
files are written atomically (temp file + rename) so a crash never leaves half a file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

EVAL_FILE = "eval_measurements.csv"
MEASUREMENTS_FILE = "measurements.csv"
EVENTS_FILE = "events.jsonl"
SUMMARY_FILE = "summary.json"
HPARAMS_FILE = "hparams.json"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        try:
            return _jsonable(value.item())
        except (TypeError, ValueError):
            pass
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def write_json(path: Path, obj: Any) -> None:
    """Writes JSON atomically: a reader sees the old file or the new one, never a torn one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(_jsonable(obj), f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def eval_columns(row: dict[str, Any]) -> list[str]:
    return sorted(row)


class TrialLog:
    """The files of one trial directory."""

    def __init__(self, trial_dir: Path, enabled: bool = True) -> None:
        self.dir = Path(trial_dir)
        self.enabled = enabled
        self._eval_columns: list[str] | None = None
        self._measurements: list[dict[str, Any]] = []
        self._measurements_dirty = False
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self._event_count = _line_count(self.dir / EVENTS_FILE)
        self._events = open(self.dir / EVENTS_FILE, "a")
        eval_path = self.dir / EVAL_FILE
        if eval_path.exists() and eval_path.stat().st_size > 0:
            with open(eval_path, newline="") as f:
                self._eval_columns = next(csv.reader(f), None)

    def close(self) -> None:
        if not self.enabled:
            return
        self.flush_measurements()
        self._events.close()

    def event(self, kind: str, **fields: Any) -> None:
        if not self.enabled:
            return
        self._events.write(json.dumps(_jsonable({"event": kind, **fields}), sort_keys=True) + "\n")
        self._events.flush()
        self._event_count += 1

    def append_eval_row(self, row: dict[str, Any]) -> None:
        """Appends one eval row; the first row fixes the (alphabetically sorted) columns."""
        if not self.enabled:
            return
        path = self.dir / EVAL_FILE
        if self._eval_columns is None:
            self._eval_columns = eval_columns(row)
            header = True
        else:
            header = False
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self._eval_columns, extrasaction="ignore", lineterminator="\n")
        if header:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in self._eval_columns})
        with open(path, "a", newline="") as f:
            f.write(buffer.getvalue())
            f.flush()
        self.append_measurement(row)
        self.flush_measurements()

    def eval_row_count(self) -> int:
        path = self.dir / EVAL_FILE
        if not path.exists():
            return 0
        with open(path, newline="") as f:
            return max(0, sum(1 for _ in csv.reader(f)) - 1)

    def truncate_eval_rows(self, keep: int) -> int:
        if not self.enabled:
            return 0
        """Drops rows after the first `keep` (resume: rows the checkpoint does not know); returns how many."""
        path = self.dir / EVAL_FILE
        if not path.exists():
            return 0
        with open(path, newline="") as f:
            lines = f.readlines()
        dropped = max(0, len(lines) - 1 - keep)
        if dropped:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text("".join(lines[: keep + 1]))
            os.replace(tmp, path)
        return dropped

    def row_counts(self) -> dict[str, int]:
        """How many rows each log file has now (a checkpoint records them; see `truncate_to`)."""
        if not self.enabled:
            return {}
        return {"eval": self.eval_row_count(), "measurements": len(self._measurements),
                "events": self._event_count}

    def truncate_to(self, counts: dict[str, int]) -> dict[str, int]:
        """Drops the rows each log file got after `counts` were taken (resume: what the killed
        run wrote after its checkpoint), so no log holds a row twice; returns how many went."""
        if not self.enabled:
            return {}
        dropped = {"eval": self.truncate_eval_rows(counts.get("eval", 0))}
        self.load_measurements()
        keep = counts.get("measurements", 0)
        dropped["measurements"] = max(0, len(self._measurements) - keep)
        self._measurements = self._measurements[:keep]
        self._measurements_dirty = True
        self.flush_measurements()
        keep_events = counts.get("events", 0)
        path = self.dir / EVENTS_FILE
        self._events.close()
        lines = path.read_text().splitlines(keepends=True) if path.exists() else []
        dropped["events"] = max(0, len(lines) - keep_events)
        if dropped["events"]:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text("".join(lines[:keep_events]))
            os.replace(tmp, path)
        self._event_count = min(len(lines), keep_events)
        self._events = open(path, "a")
        return dropped

    def append_measurement(self, row: dict[str, Any]) -> None:
        """Adds a row to measurements.csv, written at the next `flush_measurements()`.

        A submission logs from inside the timed `update_params`; rows are buffered so that the
        file (the union of columns, as the reference's MetricLogger writes it) is rewritten only
        at evals and at the end, which are untimed.
        """
        self._measurements.append(row)
        self._measurements_dirty = True

    def flush_measurements(self) -> None:
        if not self.enabled:
            return
        if not getattr(self, "_measurements_dirty", False):
            return
        self._measurements_dirty = False
        columns = sorted({k for r in self._measurements for k in r})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for r in self._measurements:
            writer.writerow(r)
        tmp = self.dir / f".{MEASUREMENTS_FILE}.tmp"
        tmp.write_text(buffer.getvalue())
        os.replace(tmp, self.dir / MEASUREMENTS_FILE)

    def load_measurements(self) -> None:
        path = self.dir / MEASUREMENTS_FILE
        if path.exists():
            with open(path, newline="") as f:
                self._measurements = [{k: v for k, v in r.items() if v != ""} for r in csv.DictReader(f)]

    def write(self, name: str, obj: Any) -> None:
        if not self.enabled:
            return
        write_json(self.dir / name, obj)


def _line_count(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(1 for _ in f)


class MetricsLogger:
    """`workload.metrics_logger`: what a submission logs goes to measurements.csv and events.jsonl.

    A logged loss that is not finite marks the trial as diverged (RULES.md, Evals and stopping).
    """

    def __init__(self, log: TrialLog) -> None:
        self._log = log
        self.diverged_at: int | None = None

    def append_scalar_metrics(self, metrics: dict[str, Any], global_step: int, preemption_count: int | None = None, is_eval: bool = False) -> None:
        values = {k: _jsonable(v) for k, v in metrics.items()}
        for k, v in values.items():
            if "loss" in k and (v is None or (isinstance(v, str) and "inf" in v)):
                self.diverged_at = global_step
        self._log.append_measurement({"global_step": global_step, **values})
        self._log.event("submission_metrics", global_step=global_step, metrics=values)
