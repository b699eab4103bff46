"""What a run shows on the console: the live progress line and the one-screen summary."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any


class ProgressLine:
    """A one-line live display on stderr (rewritten in place on a terminal, a line per eval otherwise)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self._last_step = 0
        self._last_time = time.perf_counter()
        self._rate = 0.0
        self._printed_eval = None

    def __call__(self, p: dict[str, Any]) -> None:
        if self.quiet:
            return
        now = time.perf_counter()
        if self._last_step == 0:
            # The first report follows set-up and the first eval: a rate would mean nothing yet.
            self._last_step, self._last_time = p["global_step"], now
        elif now > self._last_time and p["global_step"] > self._last_step:
            self._rate = (p["global_step"] - self._last_step) / (now - self._last_time)
            self._last_step, self._last_time = p["global_step"], now
        val = "-" if p["validation"] is None else f"{p['validation']:.4f}"
        line = (
            f"step {p['global_step']:>7}  {self._rate:7.1f} steps/s  "
            f"validation {p['metric']} {val} (target {p['target']:g})  "
            f"submission time {p['submission_time']:7.1f}s / {p['budget']:g}s"
        )
        if self.tty:
            sys.stderr.write("\r" + line + "\033[K")
            sys.stderr.flush()
        elif p["validation"] is not None and p["validation"] != self._printed_eval:
            self._printed_eval = p["validation"]
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty and not self.quiet:
            sys.stderr.write("\n")


def _fmt_s(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.2f} s"


def print_summary(result: Any) -> None:
    phases = result.phases
    wall = sum(phases.values())
    lines = [
        "",
        f"Trial finished: {result.status}   ({result.global_step} steps)",
        f"  time to validation target : {_fmt_s(result.time_to_target_s)}"
        f"   ({result.target_metric} target {result.validation_target:g})",
        f"  time to test target       : {_fmt_s(result.test_time_to_target_s)}",
    ]
    if result.last_eval:
        val = result.last_eval.get(f"validation/{result.target_metric}")
        test = result.last_eval.get(f"test/{result.target_metric}")
        if val is not None and test is not None:
            lines.append(f"  last eval                 : validation {val:.4f}, test {test:.4f}")
    lines.append(f"  budget                    : {result.budget_s:g} s of submission time")
    lines.append(f"  wall time {wall:.2f} s =" + " + ".join(
        f" {name} {phases[name]:.2f}" for name in phases if phases[name] > 0.0005))
    lines.append(f"    (first step, in submission: {result.first_step_s:.3f} s"
                 + (f"; lost to preemptions: {result.lost_s:.2f} s)" if result.lost_s else ")"))
    if result.error:
        where = f" ({result.error_location})" if getattr(result, "error_location", None) else ""
        lines.append(f"  error: {result.error}{where}")
        lines.append(f"  traceback: {Path(result.trial_dir) / 'error.log'}")
    lines.append(f"  logs: {result.trial_dir}")
    exp = Path(result.trial_dir).parents[2]
    lines.append(f"  report: algoperf report {exp} --out {exp}/report")
    print("\n".join(lines))
