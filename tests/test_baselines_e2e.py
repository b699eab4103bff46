"""End to end: Shampoo, K-FAC and Schedule-Free AdamW train mnist1d to its validation target.

Each run is `algoperf run -w mnist1d -s <baseline> --stop-at validation` with the submission's
tuned mnist1d point, evaluated every 50 steps so that the step at which the target is reached does
not depend on the machine's speed. The target is the tuned AdamW run's accuracy after step_hint
steps (workloads/mnist1d/workload.py), so a baseline must get there within step_hint steps; the
wall-clock budget is generous because a shared CI machine can be many times slower than a free one.
"""

from __future__ import annotations

import json

import pytest

from workloads import registry

from conftest import REPO, read_eval_rows, read_summary, run_cli, trial_path

EVAL_EVERY = 50


@pytest.mark.slow
# K-FAC in `make test`; Shampoo and Schedule-Free (two minutes each) in `make test-heavy`.
@pytest.mark.parametrize("submission", [pytest.param("shampoo", marks=pytest.mark.heavy), "kfac",
                                        pytest.param("schedule_free", marks=pytest.mark.heavy)])
def test_baseline_reaches_the_mnist1d_target_within_step_hint_steps(tmp_path, submission):
    info = registry.get("mnist1d")
    out = run_cli("run", "-w", "mnist1d", "-s", submission, "--stop-at", "validation",
                  "--eval-every", str(EVAL_EVERY), "--max-steps", str(info.step_hint),
                  "--max-runtime", "600", "--experiment-dir", str(tmp_path), "--name", submission, "--quiet")
    assert out.returncode == 0, out.stderr
    trial = trial_path(tmp_path, submission)
    summary = read_summary(trial)
    assert summary["status"] == "reached", summary
    rows = read_eval_rows(trial)
    reached = [r for r in rows if float(r["validation/accuracy"]) >= info.validation_target]
    assert reached and reached[0] is rows[-1]  # the run stops at the first eval on target
    assert int(rows[-1]["global_step"]) <= info.step_hint
    assert summary["time_to_target_s"] == pytest.approx(float(rows[-1]["score"]))
    # The run trained with the submission's tuned mnist1d point.
    tuned = json.loads((REPO / "submissions" / submission / "tuned_hyperparameters.json").read_text())["mnist1d"]
    used = json.loads((trial / "hparams.json").read_text())
    assert {k: used[k] for k in tuned} == tuned
