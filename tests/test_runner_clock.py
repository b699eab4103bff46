"""The clock and the stop rules of RULES.md, on real trials of the mnist1d workload."""

from __future__ import annotations

import math
import time
from pathlib import Path

from algoperf import runner
from algoperf.clock import RunClock

from conftest import read_eval_rows, write_submission


def trial(tmp_path: Path, extra: str = "", **overrides) -> runner.TrialResult:
    sub = write_submission(tmp_path / "sub", extra)
    config = runner.TrialConfig(
        workload="mnist1d", submission=str(sub), trial_dir=tmp_path / "trial",
        data="synthetic", hyperparameters={}, **overrides,
    )
    return runner.train_once(config)


SLEEPY_UPDATE = '''
_update = update_params
def update_params(**kw):
    time.sleep(0.05)
    return _update(**kw)
'''


def test_update_params_time_is_charged(tmp_path):
    result = trial(tmp_path, SLEEPY_UPDATE, max_steps=6, eval_every=1000)
    assert result.status == "max_steps"
    assert result.phases["submission"] >= 6 * 0.05


def test_eval_time_is_not_on_the_clock(tmp_path, monkeypatch):
    # Real data, and every eval made 0.3 s slower than it is (the prefetching pipelines made a
    # mnist1d eval about as fast as a sleepy step, which would hide eval time on the clock).
    from workloads.base import BaseWorkload

    real_eval = BaseWorkload.eval_model

    def slow_eval(self, *args, **kwargs):
        time.sleep(0.3)
        return real_eval(self, *args, **kwargs)

    monkeypatch.setattr(BaseWorkload, "eval_model", slow_eval)
    sub = write_submission(tmp_path / "sub", SLEEPY_UPDATE)
    config = runner.TrialConfig(workload="mnist1d", submission=str(sub), trial_dir=tmp_path / "t",
                                hyperparameters={}, max_steps=5, eval_every=1)
    result = runner.train_once(config)
    rows = read_eval_rows(tmp_path / "t")
    assert len(rows) == 5
    assert result.phases["eval"] > 0
    # The submission time is the sleeps plus a little loop overhead, whatever the evals cost.
    assert result.phases["submission"] < 5 * 0.05 + 0.5 * result.phases["eval"] + 0.25
    # accumulated_submission_time grows only by the steps between two evals.
    times = [float(r["accumulated_submission_time"]) for r in rows]
    evals = [float(r["accumulated_eval_time"]) for r in rows]
    assert times[-1] - times[0] < evals[-1]


def test_prepare_for_eval_is_charged(tmp_path):
    extra = '''
def prepare_for_eval(workload, current_param_container, current_params_types, model_state,
                     hyperparameters, loss_type, optimizer_state, eval_results, global_step, rng):
    time.sleep(0.2)
    return optimizer_state, current_param_container, model_state
'''
    result = trial(tmp_path, extra, max_steps=3, eval_every=1)
    assert len(read_eval_rows(tmp_path / "trial")) == 3
    assert result.phases["submission"] >= 3 * 0.2


def test_phases_add_up_to_wall_time(tmp_path):
    start = time.perf_counter()
    result = trial(tmp_path, SLEEPY_UPDATE, max_steps=20, eval_every=5)
    wall = time.perf_counter() - start
    assert math.isclose(sum(result.phases.values()), wall, rel_tol=0.02)


def test_clock_charges_each_interval_to_one_phase():
    ticks = iter([0.0, 1.0, 3.5, 4.0, 10.0])
    clock = RunClock(now=lambda: next(ticks))
    clock.charge("setup")
    clock.charge("submission")
    clock.charge("eval")
    clock.charge("submission")
    assert clock.phases["setup"] == 1.0
    assert clock.phases["submission"] == 2.5 + 6.0
    assert clock.phases["eval"] == 0.5
    assert clock.total == 10.0


def test_budget_stops_within_one_step(tmp_path):
    extra = '''
_update = update_params
def update_params(**kw):
    time.sleep(0.1)
    return _update(**kw)
'''
    sub = write_submission(tmp_path / "sub", extra)
    config = runner.TrialConfig(workload="mnist1d", submission=str(sub), trial_dir=tmp_path / "trial",
                                data="synthetic", hyperparameters={}, max_runtime=1.0, eval_every=1000,
                                record_step_times=True)
    t = runner.Trial(config)
    result = t.run()
    assert result.status == "budget"
    assert t.step_times is not None
    # Stopped at the first step that crossed the budget: less than one (the last) step past it.
    assert 1.0 <= result.phases["submission"] < 1.0 + t.step_times[-1]
    # No eval once the budget is spent: at most the first eval after step 1 (if step 1 fit).
    path = tmp_path / "trial" / "eval_measurements.csv"
    rows = [r["global_step"] for r in read_eval_rows(tmp_path / "trial")] if path.exists() else []
    assert rows in ([], ["1"])


def test_first_eval_follows_step_one(tmp_path):
    trial(tmp_path, max_steps=4, eval_every=1000)
    rows = read_eval_rows(tmp_path / "trial")
    assert rows[0]["global_step"] == "1"


def test_evals_follow_the_period(tmp_path):
    # mnist1d's eval period is 3 s of wall time; steps take 0.1 s.
    extra = '''
_update = update_params
def update_params(**kw):
    time.sleep(0.1)
    return _update(**kw)
'''
    trial(tmp_path, extra, max_runtime=7.5)
    rows = read_eval_rows(tmp_path / "trial")
    ends = [float(r["total_duration"]) for r in rows]
    evals = [float(r["accumulated_eval_time"]) for r in rows]
    assert len(rows) >= 2
    for i in range(1, len(rows)):
        # From the end of one eval to the start of the next: at least the period, at most a step more.
        gap = (ends[i] - ends[i - 1]) - (evals[i] - evals[i - 1])
        assert 3.0 <= gap + 1e-3
        assert gap < 3.0 + 0.1 + 0.5


def test_training_complete_error_ends_with_final_eval(tmp_path):
    extra = '''
_update = update_params
def update_params(**kw):
    if kw["global_step"] == 3:
        raise spec.TrainingCompleteError()
    return _update(**kw)
'''
    result = trial(tmp_path, extra, eval_every=1000)
    assert result.status == "completed"
    assert read_eval_rows(tmp_path / "trial")[-1]["global_step"] == "3"


def test_max_steps_ends_with_final_eval(tmp_path):
    result = trial(tmp_path, max_steps=7, eval_every=1000)
    assert result.status == "max_steps"
    assert [r["global_step"] for r in read_eval_rows(tmp_path / "trial")] == ["1", "7"]


def test_non_finite_parameters_end_the_trial_as_diverged(tmp_path):
    extra = '''
_update = update_params
def update_params(**kw):
    out = _update(**kw)
    if kw["global_step"] == 2:
        with torch.no_grad():
            next(kw["current_param_container"].parameters()).fill_(float("nan"))
    return out
'''
    result = trial(tmp_path, extra, max_steps=50, eval_every=5)
    assert result.status == "diverged"
    assert result.time_to_target_s is None
    assert result.global_step == 5


def test_a_logged_non_finite_loss_ends_the_trial_as_diverged(tmp_path):
    extra = '''
_update = update_params
def update_params(**kw):
    out = _update(**kw)
    if kw["global_step"] == 4:
        kw["workload"].metrics_logger.append_scalar_metrics({"loss": float("inf")}, kw["global_step"])
    return out
'''
    result = trial(tmp_path, extra, max_steps=50, eval_every=1000)
    assert result.status == "diverged"
    assert result.global_step == 5


def test_train_state_is_read_only(tmp_path):
    extra = '''
_update = update_params
def update_params(train_state=None, **kw):
    try:
        train_state["validation_goal_reached"] = True
    except TypeError:
        kw["workload"].metrics_logger.append_scalar_metrics({"train_state_read_only": 1}, kw["global_step"])
    return _update(**kw)
'''
    trial(tmp_path, extra, max_steps=2, eval_every=1000)
    assert "train_state_read_only" in (tmp_path / "trial" / "measurements.csv").read_text()


def test_eval_measurements_has_the_exact_columns(tmp_path):
    trial(tmp_path, max_steps=2, eval_every=1000)
    header = (tmp_path / "trial" / "eval_measurements.csv").read_text().splitlines()[0]
    assert header.split(",") == [
        "accumulated_eval_time", "accumulated_logging_time", "accumulated_submission_time",
        "global_step", "preemption_count", "score", "test/accuracy", "test/loss",
        "test/num_examples", "total_duration", "train/accuracy", "train/loss",
        "validation/accuracy", "validation/loss", "validation/num_examples",
    ]


def test_summary_records_status_time_to_target_and_phases(tmp_path):
    result = trial(tmp_path, max_steps=3, eval_every=1000)
    import json

    summary = json.loads((tmp_path / "trial" / "summary.json").read_text())
    assert summary["status"] == "max_steps"
    assert summary["global_step"] == 3
    assert summary["time_to_target_s"] is None  # synthetic labels: the real target is out of reach
    assert set(summary["phases"]) == {"setup", "submission", "eval", "logging", "checkpoint", "other"}
    assert summary["phases"]["submission"] == result.phases["submission"]
    for name in ("hparams.json", "flags_0.json", "meta_data_0.json", "events.jsonl", "measurements.csv"):
        assert (tmp_path / "trial" / name).exists(), name
