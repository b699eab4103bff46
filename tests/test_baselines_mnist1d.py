"""End to end: `algoperf run` trains mnist1d to its validation target with each simple baseline."""

from __future__ import annotations

import pytest

from workloads import registry

from conftest import read_eval_rows, read_summary, run_cli, trial_path


@pytest.mark.slow
@pytest.mark.parametrize(
    "submission, ruleset",
    # Shampoo, K-FAC and Schedule-Free (external) are run by test_baselines_e2e.py.
    # AdamW in `make test`; the others in `make test-heavy`.
    [("adamw", "external"), pytest.param("nadamw", "external", marks=pytest.mark.heavy),
     pytest.param("sgd", "external", marks=pytest.mark.heavy),
     pytest.param("schedule_free_self_tuning", "self", marks=pytest.mark.heavy)],
)
def test_baseline_reaches_the_mnist1d_target(tmp_path, submission, ruleset):
    # A generous budget: this checks that the baseline reaches the target, and a shared CI
    # machine can run several times slower than the 60 s budget assumes.
    out = run_cli("run", "-s", submission, "--ruleset", ruleset, "--stop-at", "validation",
                  "--max-runtime", "600", "--experiment-dir", str(tmp_path), "--name", submission, "--quiet")
    assert out.returncode == 0, out.stderr
    trial = trial_path(tmp_path, submission)
    summary = read_summary(trial)
    assert summary["status"] == "reached"
    target = registry.get("mnist1d").validation_target
    last = read_eval_rows(trial)[-1]
    assert float(last["validation/accuracy"]) >= target
    assert summary["time_to_target_s"] == pytest.approx(float(last["score"]))
    assert "Trial finished: reached" in out.stdout and "time to validation target" in out.stdout
