"""`algoperf tune`: the plan of studies x trials, idempotent re-runs, and `algoperf status`."""

from __future__ import annotations

import json

import pytest

from algoperf import tuning

from conftest import read_summary, run_cli, trial_path

TUNE = ["tune", "-w", "mnist1d", "-s", "adamw", "--data", "synthetic", "--max-steps", "5",
        "--studies", "2", "--trials", "2", "--quiet"]


@pytest.mark.slow
def test_tune_runs_the_plan_then_does_nothing_the_second_time(tmp_path):
    first = run_cli(*TUNE, "--experiment-dir", str(tmp_path))
    assert first.returncode == 0, first.stderr
    trials = [trial_path(tmp_path, "adamw", study=s, trial=t) for s in range(2) for t in (1, 2)]
    assert all(read_summary(t)["status"] == "max_steps" for t in trials)
    # Each trial got its search-space point and its own seed.
    hparams = [json.loads((t / "hparams.json").read_text()) for t in trials]
    assert len({h["learning_rate"] for h in hparams}) == 4
    assert len({h["seed"] for h in hparams}) == 4
    space = tuning.load_search_space("submissions/adamw/tuning_search_space.json")
    assert hparams[3]["learning_rate"] == pytest.approx(tuning.sample(space, 2, 0, "mnist1d", 1)["learning_rate"])
    mtimes = [(t / "summary.json").stat().st_mtime_ns for t in trials]

    second = run_cli(*TUNE, "--experiment-dir", str(tmp_path))
    assert second.returncode == 0, second.stderr
    assert "4 skipped" in second.stdout
    assert [(t / "summary.json").stat().st_mtime_ns for t in trials] == mtimes


@pytest.mark.slow
def test_status_shows_done_interrupted_and_missing_trials(tmp_path):
    out = run_cli(*TUNE, "--experiment-dir", str(tmp_path), "--study", "0", "--trial", "1")
    assert out.returncode == 0, out.stderr
    # A trial that crashed before writing its summary.
    crashed = trial_path(tmp_path, "adamw", study=1, trial=1)
    crashed.mkdir(parents=True)
    (crashed / "events.jsonl").write_text("{}\n")
    status = run_cli("status", str(tmp_path / "adamw"))
    assert status.returncode == 0, status.stderr
    assert "1 done/max_steps, 1 interrupted, 2 missing" in status.stdout


@pytest.mark.slow
def test_single_trial_matches_the_same_trial_of_the_full_plan(tmp_path):
    single = run_cli(*TUNE, "--experiment-dir", str(tmp_path / "a"), "--study", "1", "--trial", "2")
    assert single.returncode == 0, single.stderr
    hp_single = json.loads((trial_path(tmp_path / "a", "adamw", study=1, trial=2) / "hparams.json").read_text())
    space = tuning.load_search_space("submissions/adamw/tuning_search_space.json")
    expected = tuning.sample(space, 2, 0, "mnist1d", 1)
    assert {k: hp_single[k] for k in expected} == pytest.approx(expected)


def test_tune_refuses_a_different_plan_in_the_same_experiment(tmp_path, capsys):
    from algoperf import cli

    root = tmp_path / "adamw"
    root.mkdir()
    (root / "experiment.json").write_text(json.dumps(
        {"workload": "mnist", "submission": "adamw", "ruleset": "external", "rules": "v0.6",
         "seed": 0, "studies": 1, "trials": 1}))
    code = cli.main([*TUNE, "--experiment-dir", str(tmp_path)])
    assert code == cli.EXIT_USAGE
    assert "different workload" in capsys.readouterr().err


def _start_tune(tmp_path, *extra: str):
    import os
    import subprocess
    import sys

    from conftest import REPO

    return subprocess.Popen(
        [sys.executable, "-m", "algoperf.cli", *TUNE[:-5], "--studies", "1", "--trials", "4",
         "--experiment-dir", str(tmp_path), "--quiet", *extra],
        cwd=REPO, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.slow
def test_two_tune_processes_never_run_the_same_trial(tmp_path):
    first, second = _start_tune(tmp_path), _start_tune(tmp_path)
    outputs = [p.communicate(timeout=900) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    started = [line for _, err in outputs for line in err.splitlines() if ": starting" in line]
    assert sorted(started) == sorted(set(started)) and len(started) == 4, outputs
    for trial in range(1, 5):
        folder = trial_path(tmp_path, "adamw", study=0, trial=trial)
        events = [json.loads(line)["event"] for line in (folder / "events.jsonl").read_text().splitlines()]
        assert events.count("trial_start") == 1
        assert read_summary(folder)["status"] == "max_steps"


def _write_lock(folder, host: str, age_s: float) -> None:
    import os
    import time

    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / ".running"
    lock.write_text(json.dumps({"pid": 1, "host": host, "token": "x", "started": time.time() - age_s}))
    os.utime(lock, (time.time() - age_s, time.time() - age_s))


def test_a_lock_is_live_only_while_its_heartbeat_is_recent(tmp_path):
    from algoperf import experiment

    _write_lock(tmp_path / "a", "another-node", age_s=1.0)
    _write_lock(tmp_path / "b", "another-node", age_s=experiment.LOCK_TIMEOUT_S + 60)
    assert experiment.trial_state(tmp_path / "a") == "running"
    assert experiment.trial_state(tmp_path / "b") != "running"  # its node died


def test_a_held_lock_is_renewed_and_cannot_be_taken(tmp_path):
    import os
    import time

    from algoperf import experiment

    holder = experiment.TrialLock(tmp_path, timeout=2.0)
    assert holder.acquire()
    try:
        old = time.time() - 10
        os.utime(holder.path, (old, old))
        time.sleep(0.8)  # the heartbeat (every timeout / 10, at least 0.5 s) renews it
        assert time.time() - holder.path.stat().st_mtime < 2.0
        assert not experiment.TrialLock(tmp_path, timeout=2.0).acquire()
    finally:
        holder.release()
    assert not holder.path.exists()
    assert experiment.TrialLock(tmp_path, timeout=2.0).acquire()


@pytest.mark.slow
def test_tune_resumes_a_trial_whose_node_died(tmp_path):
    folder = trial_path(tmp_path, "adamw", study=0, trial=1)
    _write_lock(folder, "a-node-that-died", age_s=3600)
    (folder / "events.jsonl").write_text("")  # it had started
    out = run_cli(*TUNE, "--experiment-dir", str(tmp_path), "--study", "0", "--trial", "1")
    assert out.returncode == 0, out.stderr
    assert "study 0 trial 1: resuming" in out.stderr
    assert read_summary(folder)["status"] == "max_steps"
    assert not (folder / ".running").exists()


def test_tune_help_lists_only_the_flags_tune_accepts(capsys):
    from algoperf import cli

    with pytest.raises(SystemExit):
        cli.main(["tune", "--help"])
    text = capsys.readouterr().out
    assert "--studies" in text and "--trials" in text
    assert "--resume" not in text and "--overwrite" not in text
