"""Real AlgoPerf submissions run unchanged (issue 17): one test submission per pattern seen in
public submissions (tests/fixtures/submissions/), each run as a user would and shown to learn."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from algoperf import spec
from algoperf import submission as submission_lib
from algoperf.random_utils import prng_key
from workloads import registry

from conftest import REPO, read_eval_rows, read_summary, run_cli, trial_path

FIXTURES = REPO / "tests" / "fixtures" / "submissions"
COMMON = ["-w", "mnist1d", "--max-steps", "50", "--eval-every", "50", "--quiet", "--max-runtime", "3600"]


def run_fixture(tmp_path: Path, submission: Path, *extra: str, name: str = "p"):
    out = run_cli("run", "-s", str(submission), *COMMON, "--experiment-dir", str(tmp_path),
                  "--name", name, *extra)
    return out, trial_path(tmp_path, name)


def assert_learns(trial: Path) -> None:
    rows = read_eval_rows(trial)
    assert [int(r["global_step"]) for r in rows] == [1, 50]
    assert float(rows[-1]["validation/loss"]) < float(rows[0]["validation/loss"]) - 0.1


@pytest.mark.slow
def test_the_old_package_name_runs_unchanged(tmp_path):
    out, trial = run_fixture(tmp_path, FIXTURES / "old_package_name" / "submission.py", "--ruleset", "self")
    assert out.returncode == 0, out.stderr
    assert_learns(trial)


def test_the_old_package_name_is_the_same_module_objects():
    import algoperf.pytorch_utils
    import algorithmic_efficiency.pytorch_utils
    import algorithmic_efficiency.spec
    from algorithmic_efficiency import spec as old_spec
    assert old_spec is spec
    assert algorithmic_efficiency.spec is spec
    assert algorithmic_efficiency.pytorch_utils is algoperf.pytorch_utils
    workload = registry.load("mnist1d", "pytorch", data="synthetic")
    assert isinstance(workload, old_spec.Workload)


@pytest.mark.slow
def test_a_submission_in_a_package_tree_imports_its_helpers_by_dotted_path(tmp_path):
    repo = tmp_path / "their_repo"
    shutil.copytree(FIXTURES / "repo_tree", repo)
    out, trial = run_fixture(tmp_path, repo / "submissions" / "self_tuning" / "foo" / "submission.py",
                             "--ruleset", "self")
    assert out.returncode == 0, out.stderr
    assert_learns(trial)


def test_the_harness_baselines_do_not_shadow_a_submission_package(tmp_path):
    repo = tmp_path / "their_repo"
    shutil.copytree(FIXTURES / "repo_tree", repo)
    baseline = submission_lib.load(submission_lib.resolve("sgd"))  # imports this repo's `submissions`
    theirs = submission_lib.load(submission_lib.resolve(
        str(repo / "submissions" / "self_tuning" / "foo" / "submission.py")))
    assert theirs.__name__ == "submissions.self_tuning.foo.submission"
    assert Path(theirs.__file__).resolve().is_relative_to(repo.resolve())
    assert Path(sys.modules["submissions"].__file__).resolve().is_relative_to(repo.resolve())
    again = submission_lib.load(submission_lib.resolve("sgd"))  # and back
    assert Path(again.__file__).resolve() == Path(baseline.__file__).resolve()


@pytest.mark.slow
def test_dropout_chosen_at_init_is_used_and_learns(tmp_path):
    out, trial = run_fixture(tmp_path, FIXTURES / "dropout_at_init" / "submission.py", "--trial", "1")
    assert out.returncode == 0, out.stderr
    assert json.loads((trial / "hparams.json").read_text())["dropout_rate"] == 0.2
    assert_learns(trial)


@pytest.mark.parametrize("framework", ["pytorch", "jax"])
def test_a_dropout_rate_given_at_init_or_to_model_fn_changes_the_output(framework):
    def train_logits(init_rate, call_rate):
        workload = registry.load("mnist1d", framework, data="synthetic")
        params, state = workload.init_model_fn(prng_key(0), dropout_rate=init_rate)
        batch = workload.device_batch({k: v[:64] for k, v in workload.split_arrays("validation").items()})
        if framework == "pytorch":
            torch.manual_seed(1)
        logits, _ = workload.model_fn(params, batch, state, spec.ForwardPassMode.TRAIN, prng_key(1),
                                      update_batch_norm=True, dropout_rate=call_rate)
        return np.asarray(logits.detach() if framework == "pytorch" else logits)

    plain = train_logits(None, None)  # mnist1d's default rate is 0
    assert not np.allclose(train_logits(0.5, None), plain)  # the rate given at init
    assert not np.allclose(train_logits(None, 0.5), plain)  # the rate given to model_fn
    np.testing.assert_allclose(train_logits(0.5, 0.0), plain, rtol=1e-6)  # model_fn's rate wins


@pytest.mark.slow
def test_a_submission_that_does_not_know_mnist1d_gets_its_default_batch_size(tmp_path):
    out, trial = run_fixture(tmp_path, FIXTURES / "unknown_workloads" / "submission.py", "--ruleset", "self")
    assert out.returncode == 0, out.stderr
    assert "default batch size 128" in out.stderr
    assert out.stderr.count("default batch size") == 1
    assert json.loads((trial / "flags_0.json").read_text())["effective_batch_size"] == 128
    assert_learns(trial)


def test_a_benchmark_workload_unknown_to_the_submission_is_still_an_error():
    module = submission_lib.load(submission_lib.resolve(str(FIXTURES / "unknown_workloads" / "submission.py")))
    with pytest.raises(ValueError, match="Unsupported workload"):
        submission_lib.batch_size(module, registry.get("fastmri"))


@pytest.mark.slow
def test_a_pytorch_submission_may_import_optax(tmp_path):
    out, trial = run_fixture(tmp_path, FIXTURES / "optax_schedule" / "submission.py", "--ruleset", "self")
    assert out.returncode == 0, out.stderr
    assert_learns(trial)


def test_pytorch_setup_turns_ddp_on_whenever_torchrun_set_local_rank(monkeypatch):
    from algoperf.pytorch_utils import pytorch_setup

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert pytorch_setup()[0] is False
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert pytorch_setup()[0] is True


@pytest.mark.slow
def test_a_distributed_configuration_finds_its_process_group(tmp_path):
    out, trial = run_fixture(tmp_path, FIXTURES / "ddp_config" / "submission.py", "--ruleset", "self",
                             "--devices", "2", "--batch-size", "64")
    assert out.returncode == 0, out.stderr
    measurements = (trial / "measurements.csv").read_text()
    assert "world_size" in measurements.splitlines()[0]
    assert any(line.split(",")[-1] == "2" or ",2," in line for line in measurements.splitlines()[1:])
    assert_learns(trial)


def test_an_exception_in_init_optimizer_state_ends_the_trial_as_error_with_file_and_line(tmp_path):
    path = FIXTURES / "raises_at_init" / "submission.py"
    out, trial = run_fixture(tmp_path, path, "--ruleset", "self")
    assert out.returncode == 1
    summary = read_summary(trial)
    assert summary["status"] == "error"
    assert summary["error"] == "ValueError: this optimizer needs a positive warmup"
    assert summary["error_location"] == f"{path}:10"
    assert "Traceback" not in out.stderr + out.stdout
    assert f"{path}:10" in out.stdout
    assert "Traceback" in (trial / "error.log").read_text()


def test_an_exception_while_importing_a_submission_ends_the_trial_as_error(tmp_path):
    path = tmp_path / "sub" / "submission.py"
    path.parent.mkdir()
    source = (FIXTURES / "old_package_name" / "submission.py").read_text()
    path.write_text(source.replace("import torch\n", "import torch\nraise RuntimeError('no GPU found')\n", 1))
    out, trial = run_fixture(tmp_path, path, "--ruleset", "self")
    assert out.returncode == 1, out.stderr
    summary = read_summary(trial)
    assert summary["status"] == "error"
    assert summary["error"] == "RuntimeError: no GPU found"
    assert summary["error_location"] == f"{path.resolve()}:3"
