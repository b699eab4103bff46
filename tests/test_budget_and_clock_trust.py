"""Issue 10's clock and budget rules on real mnist1d trials: no eval after the budget is spent
(also after prepare_for_eval and after TrainingCompleteError), input waits on the clock, logging
and checkpoints off it, the thread count set and recorded.

Long waits are simulated with a virtual clock (tests/virtual_time.py) that the waiting code
advances by hundreds of seconds, so the assertions hold however loaded the machine is.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from algoperf import runner
from algoperf import trial_checkpoint as saved
from algoperf.backends import pytorch as torch_backend
from algoperf.clock import RunClock

import virtual_time
from conftest import read_eval_rows, write_submission

WAIT = 300.0  # seconds of virtual time one simulated wait takes


def run(tmp_path: Path, extra: str = "", progress=None, trial_class=runner.Trial, **overrides) -> runner.TrialResult:
    sub = write_submission(tmp_path / "sub", "import virtual_time\n" + extra)
    config = runner.TrialConfig(workload="mnist1d", submission=str(sub), trial_dir=tmp_path / "trial",
                                data="synthetic", hyperparameters={}, **overrides)
    trial = trial_class(config, progress)
    trial.clock = RunClock(now=virtual_time.now)
    return trial.run()


def eval_steps(tmp_path: Path) -> list[int]:
    return [int(r["global_step"]) for r in read_eval_rows(tmp_path / "trial")]


def test_a_prepare_for_eval_that_spends_the_budget_gets_no_eval(tmp_path):
    extra = f'''
def prepare_for_eval(workload, current_param_container, current_params_types, model_state,
                     hyperparameters, loss_type, optimizer_state, eval_results, global_step, rng):
    if global_step > 1:
        virtual_time.advance({WAIT})
    return optimizer_state, current_param_container, model_state
'''
    result = run(tmp_path, extra, max_runtime=WAIT / 2, eval_every=5)
    assert result.status == "budget"
    assert eval_steps(tmp_path) == [1]  # the eval that would follow step 5 never happens
    assert result.phases["submission"] >= WAIT  # the wait was on the clock
    assert all(float(r["score"]) <= WAIT / 2 for r in read_eval_rows(tmp_path / "trial"))


def test_training_complete_after_the_budget_gets_no_final_eval(tmp_path):
    extra = f'''
_update = update_params
def update_params(**kw):
    if kw["global_step"] == 2:
        virtual_time.advance({WAIT})
        raise spec.TrainingCompleteError()
    return _update(**kw)
'''
    result = run(tmp_path, extra, max_runtime=WAIT / 2, eval_every=1000)
    assert result.status == "budget"
    assert eval_steps(tmp_path) == [1]


def test_training_complete_within_the_budget_gets_its_final_eval(tmp_path):
    extra = '''
_update = update_params
def update_params(**kw):
    if kw["global_step"] == 2:
        raise spec.TrainingCompleteError()
    return _update(**kw)
'''
    result = run(tmp_path, extra, max_runtime=WAIT, eval_every=1000)
    assert result.status == "completed"
    assert eval_steps(tmp_path) == [1, 2]


class WaitingQueue:
    """An input pipeline that makes the submission wait for every batch."""

    def __init__(self, queue):
        self.queue = queue

    def __iter__(self):
        return self

    def __next__(self):
        virtual_time.advance(WAIT)
        return next(self.queue)


class WaitingInputTrial(runner.Trial):
    def _build_state(self) -> None:
        super()._build_state()
        self.input_queue = WaitingQueue(self.input_queue)


def test_waiting_on_the_input_queue_is_submission_time(tmp_path):
    result = run(tmp_path, trial_class=WaitingInputTrial, max_steps=4, eval_every=1000,
                 max_runtime=100 * WAIT)
    assert result.status == "max_steps"
    assert result.phases["submission"] >= 4 * WAIT


def test_the_progress_line_is_not_on_the_clock(tmp_path):
    reports = []

    def slow_progress(p: dict) -> None:
        reports.append(p)
        virtual_time.advance(WAIT)

    result = run(tmp_path, progress=slow_progress, max_steps=6, eval_every=1000, max_runtime=100 * WAIT)
    assert len(reports) >= 2  # the first step's and the final one (the rest are throttled by real time)
    assert result.phases["logging"] >= len(reports) * WAIT
    assert result.phases["submission"] < WAIT


def test_checkpoint_writes_and_their_events_are_not_on_the_clock(tmp_path, monkeypatch):
    real_save = saved.save

    def slow_save(trial):
        virtual_time.advance(WAIT)
        real_save(trial)

    monkeypatch.setattr(saved, "save", slow_save)
    result = run(tmp_path, max_steps=6, eval_every=1000, checkpoint_every=1, max_runtime=100 * WAIT)
    assert result.phases["checkpoint"] >= 5 * WAIT
    assert result.phases["submission"] < WAIT
    events = [json.loads(line) for line in (tmp_path / "trial" / "events.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "checkpoint" for e in events) == 5


def test_the_device_sync_does_not_read_the_environment_at_every_step(tmp_path, monkeypatch):
    calls = []
    real_setup = torch_backend.setup
    monkeypatch.setattr(torch_backend, "setup", lambda: calls.append(1) or real_setup())
    run(tmp_path, max_steps=40, eval_every=1000, max_runtime=100 * WAIT)
    assert len(calls) < 10  # set-up only, never per step


@pytest.mark.parametrize("threads", [None, 1])
def test_the_thread_count_is_set_and_recorded(tmp_path, threads):
    import torch

    before = torch.get_num_threads()
    try:
        run(tmp_path, max_steps=2, eval_every=1000, threads=threads, max_runtime=100 * WAIT)
        meta = json.loads((tmp_path / "trial" / "meta_data_0.json").read_text())
        expected = threads or runner.default_threads()
        assert meta["intra_op_threads"] == expected
        assert meta["device"]["intra_op_threads"] == expected
        assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(before)
