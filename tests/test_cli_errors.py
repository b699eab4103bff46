"""Bad input gets one clear paragraph and a non-zero exit, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from algoperf import cli

from conftest import SUBMISSION_TEMPLATE, write_submission


def run(capsys, *args: str) -> tuple[int, str]:
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def assert_clear_error(code: int, output: str, *fragments: str) -> None:
    assert code == cli.EXIT_USAGE
    assert "Traceback" not in output
    assert "error:" in output
    for fragment in fragments:
        assert fragment in output


def test_unknown_workload_suggests_the_closest_name(capsys, experiment_dir):
    code, out = run(capsys, "run", "-w", "mnist1", "--experiment-dir", str(experiment_dir))
    assert_clear_error(code, out, "Unknown workload 'mnist1'", "Did you mean 'mnist1d'")


def test_missing_submission_file(capsys, tmp_path, experiment_dir):
    missing = tmp_path / "nope" / "submission.py"
    code, out = run(capsys, "run", "-s", str(missing), "--experiment-dir", str(experiment_dir))
    assert_clear_error(code, out, str(missing), "does not exist")


def test_unknown_submission_name_suggests(capsys, experiment_dir):
    code, out = run(capsys, "run", "-s", "adamx", "--experiment-dir", str(experiment_dir))
    assert_clear_error(code, out, "Unknown submission 'adamx'", "adamw")


def test_missing_required_function(capsys, tmp_path, experiment_dir):
    path = tmp_path / "sub" / "submission.py"
    path.parent.mkdir()
    path.write_text(SUBMISSION_TEMPLATE.replace("def data_selection(", "def data_selektion("))
    code, out = run(capsys, "run", "-s", str(path), "--hparams", "{}", "--experiment-dir", str(experiment_dir))
    assert_clear_error(code, out, "data_selection", "is missing", str(path))


def test_function_with_wrong_parameters(capsys, tmp_path, experiment_dir):
    path = write_submission(tmp_path / "sub", '''
def init_optimizer_state(workload, model_params, model_state, hyperparams, rng):
    return {}
''')
    code, out = run(capsys, "run", "-s", str(path), "--hparams", "{}", "--experiment-dir", str(experiment_dir))
    assert_clear_error(code, out, "init_optimizer_state lacks parameter(s) hyperparameters")


def test_invalid_search_space_json(capsys, tmp_path, experiment_dir):
    space = tmp_path / "space.json"
    space.write_text('{"learning_rate": {"min": 0.1, "max": ')
    code, out = run(capsys, "run", "--tuning-search-space", str(space), "--experiment-dir", str(experiment_dir))
    assert_clear_error(code, out, str(space), "not valid JSON")


def test_search_space_with_bad_range(capsys, tmp_path, experiment_dir):
    space = tmp_path / "space.json"
    space.write_text('{"learning_rate": {"min": 0.0, "max": 1.0, "scaling": "log"}}')
    code, out = run(capsys, "run", "--tuning-search-space", str(space), "--experiment-dir", str(experiment_dir))
    assert_clear_error(code, out, "learning_rate", "log scaling", "not positive")


def test_hyperparameters_missing_from_the_search_space(capsys, experiment_dir):
    code, out = run(capsys, "run", "--hparams", '{"learning_rate": 0.001}', "--experiment-dir", str(experiment_dir))
    assert_clear_error(code, out, "--hparams lacks", "weight_decay")


def test_invalid_inline_hparams(capsys, experiment_dir):
    code, out = run(capsys, "run", "--hparams", "{learning_rate: 1}", "--experiment-dir", str(experiment_dir))
    assert_clear_error(code, out, "--hparams is not valid JSON")


def test_existing_run_needs_resume_or_overwrite(capsys, experiment_dir):
    trial = experiment_dir / "x" / "study_0" / "mnist1d_pytorch" / "trial_1"
    trial.mkdir(parents=True)
    (trial / "eval_measurements.csv").write_text("global_step\n1\n")
    code, out = run(capsys, "run", "--name", "x", "--experiment-dir", str(experiment_dir))
    assert_clear_error(code, out, str(trial), "--resume", "--overwrite")


def test_unwritable_experiment_dir(capsys, tmp_path):
    # A regular file where a directory is needed: unwritable even for root.
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, out = run(capsys, "run", "--experiment-dir", str(blocker / "experiments"))
    assert_clear_error(code, out, "Cannot write to the experiment directory", "--experiment-dir")


@pytest.mark.parametrize("command", [["--help"], ["run", "--help"]])
def test_help_works(command: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(command)
    assert exit_info.value.code == 0


def test_status_of_a_missing_directory(capsys, tmp_path: Path):
    code, out = run(capsys, "status", str(tmp_path / "none"))
    assert_clear_error(code, out, "is not a directory")


@pytest.mark.parametrize("flag,value", [("--max-steps", "0"), ("--max-runtime", "-5"),
                                        ("--batch-size", "0"), ("--eval-every", "-1")])
def test_counts_and_budgets_must_be_positive(capsys, experiment_dir, flag, value):
    code, out = run(capsys, "run", flag, value, "--experiment-dir", str(experiment_dir))
    assert_clear_error(code, out, f"{flag} must be positive")
    assert not experiment_dir.exists() or not any(experiment_dir.rglob("trial_*"))


def test_a_missing_dataset_is_one_line_and_leaves_no_trial_folder(capsys, experiment_dir, monkeypatch):
    monkeypatch.setenv("ALGOPERF_DATA_DIR", str(experiment_dir.parent / "no_data_here"))
    argv = ["run", "-w", "imagenet_resnet", "-s", "adamw", "--experiment-dir", str(experiment_dir),
            "--name", "x"]
    for _ in range(2):  # the second attempt meets the same clear error, not "already holds a run"
        code, out = run(capsys, *argv)
        assert_clear_error(code, out, "imagenet")
        assert "already holds a run" not in out
        assert not any(experiment_dir.rglob("trial_*"))


def test_count_params_without_jax_says_so(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    code = ("import sys; sys.modules['jax'] = None\n"
            "from algoperf import cli\n"
            "sys.exit(cli.main(['workloads', '--framework', 'jax', '--count-params', 'mnist']))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == cli.EXIT_USAGE
    assert "jax is not installed" in out.stderr
    assert "Traceback" not in out.stderr
