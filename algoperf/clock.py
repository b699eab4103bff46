"""The run clock: every second of a trial's wall time is charged to exactly one phase.

`charge(phase)` synchronises the device, takes a timestamp and adds the time since the previous
timestamp to `phase`. The runner charges at every phase boundary, so the phases add up to the
wall time of the trial by construction (RULES.md, The clock), and `submission` (the
`accumulated_submission_time` of the logs) holds exactly the timed work: data selection, update,
prepare-for-eval and the loop's own overhead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

PHASES = ("setup", "submission", "eval", "logging", "checkpoint", "other")


def _no_sync(outputs: Any = None) -> None:
    return None


class RunClock:
    def __init__(self, sync: Callable[[Any], None] = _no_sync, now: Callable[[], float] = time.perf_counter) -> None:
        self._sync = sync
        self._now = now
        self.phases: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self.first_step = 0.0  # part of `submission`: the first update (compilation, warm-up)
        self.lost = 0.0  # time before a crash that no checkpoint captured (set on resume)
        self._last = now()
        self.start_time = self._last

    def set_sync(self, sync: Callable[[Any], None]) -> None:
        """`sync(outputs)` waits until the device has computed `outputs` (all queued work if None)."""
        self._sync = sync

    def wait_for(self, outputs: Any = None) -> None:
        """Waits for the device (to finish `outputs`) without taking a timestamp."""
        self._sync(outputs)

    def pending(self) -> float:
        """Time since the last boundary, not yet charged to any phase."""
        return self._now() - self._last

    def charge(self, phase: str, outputs: Any = None) -> float:
        """Waits for the device to finish `outputs` (or all its work), then adds the time since the
        last boundary to `phase`; returns it."""
        self._sync(outputs)
        t = self._now()
        elapsed = t - self._last
        self.phases[phase] += elapsed
        self._last = t
        return elapsed

    def now(self) -> float:
        return self._now()

    @property
    def submission_time(self) -> float:
        return self.phases["submission"]

    @property
    def total(self) -> float:
        return sum(self.phases.values())

    def state_dict(self) -> dict[str, Any]:
        return {"phases": dict(self.phases), "first_step": self.first_step, "lost": self.lost}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.phases.update(state["phases"])
        self.first_step = state["first_step"]
        self.lost = state.get("lost", 0.0)
