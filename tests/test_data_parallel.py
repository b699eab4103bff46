"""`algoperf run --devices 2`: two gloo processes on 127.0.0.1 train like one process with the
same global batch, and only rank 0 writes the logs."""

from __future__ import annotations

import pytest

from conftest import read_eval_rows, read_summary, run_cli, trial_path

HPARAMS = ('{"learning_rate": 0.003, "one_minus_beta1": 0.1, "beta2": 0.999, "weight_decay": 0.01, '
           '"warmup_factor": 0.05, "label_smoothing": 0.0, "dropout_rate": 0.0}')
ARGS = ["run", "--data", "synthetic", "--max-steps", "8", "--batch-size", "64", "--hparams", HPARAMS,
        "--quiet", "--eval-every", "4"]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    two = run_cli(*ARGS, "--devices", "2", "--experiment-dir", str(tmp_path), "--name", "ddp")
    assert two.returncode == 0, two.stderr
    one = run_cli(*ARGS, "--experiment-dir", str(tmp_path), "--name", "single")
    assert one.returncode == 0, one.stderr
    ddp_rows = read_eval_rows(trial_path(tmp_path, "ddp"))
    single_rows = read_eval_rows(trial_path(tmp_path, "single"))
    assert [r["global_step"] for r in ddp_rows] == ["1", "4", "8"]  # written once, by rank 0
    for a, b in zip(ddp_rows, single_rows):
        assert a["global_step"] == b["global_step"]
        assert a["validation/num_examples"] == b["validation/num_examples"]
        # Gradients are all-reduced in a different order: equal up to float rounding.
        assert float(a["validation/loss"]) == pytest.approx(float(b["validation/loss"]), rel=1e-4)
        assert float(a["train/loss"]) == pytest.approx(float(b["train/loss"]), rel=1e-4)
    assert read_summary(trial_path(tmp_path, "ddp"))["status"] == "max_steps"
    assert two.stdout.count("Trial finished") == 1
