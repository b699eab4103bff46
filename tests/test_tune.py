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
