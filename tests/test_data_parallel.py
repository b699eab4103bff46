"""`algoperf run --devices 2`: two gloo processes on 127.0.0.1 train like one process with the
same global batch, and only rank 0 writes the logs."""

from __future__ import annotations

import pytest

from conftest import read_eval_rows, read_summary, run_cli, trial_path

HPARAMS = ('{"learning_rate": 0.003, "one_minus_beta1": 0.1, "beta2": 0.999, "weight_decay": 0.01, '
           '"warmup_factor": 0.05, "label_smoothing": 0.0, "dropout_rate": 0.0}')
ARGS = ["run", "--data", "synthetic", "--max-steps", "8", "--batch-size", "64", "--hparams", HPARAMS,
        "--quiet", "--eval-every", "4"]


# In `make test-heavy`: test_two_nodes_on_localhost_train_like_one_process checks the same equality
# through torchrun's multi-node path.
@pytest.mark.heavy
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


def _rank_submission(tmp_path, body: str):
    from conftest import write_submission

    return write_submission(tmp_path / "sub", f'''
import os
_update = update_params
def update_params(**kw):
    rank = int(os.environ.get("RANK", "0"))
{body}
    return _update(**kw)
''')


@pytest.mark.slow
def test_a_step_ends_when_the_slowest_rank_ends(tmp_path):
    # Rank 1 sleeps 0.25 s in every step; rank 0 does not, yet its clock (which writes the logs)
    # charges the sleeps: the step end is the max over ranks.
    sub = _rank_submission(tmp_path, "    if rank == 1:\n        time.sleep(0.25)")
    out = run_cli("run", "-s", str(sub), "--hparams", "{}", "--data", "synthetic", "--max-steps", "12",
                  "--eval-every", "1000", "--devices", "2", "--batch-size", "64", "--quiet",
                  "--experiment-dir", str(tmp_path), "--name", "slow")
    assert out.returncode == 0, out.stderr
    assert read_summary(trial_path(tmp_path, "slow"))["phases"]["submission"] >= 12 * 0.25


@pytest.mark.slow
@pytest.mark.parametrize("failure", ["dies", "hangs"])
def test_a_rank_that_dies_or_hangs_ends_the_trial_as_error(tmp_path, failure):
    import time

    action = "os._exit(7)" if failure == "dies" else "time.sleep(10_000)"
    sub = _rank_submission(tmp_path, f'    if rank == 1 and kw["global_step"] == 5:\n        {action}')
    start = time.monotonic()
    out = run_cli("run", "-s", str(sub), "--hparams", "{}", "--data", "synthetic", "--max-steps", "50",
                  "--eval-every", "1000", "--devices", "2", "--batch-size", "64", "--quiet",
                  "--experiment-dir", str(tmp_path), "--name", failure,
                  env={"ALGOPERF_DDP_TIMEOUT_S": "10"}, timeout=600)
    assert out.returncode != 0
    assert time.monotonic() - start < 300  # ended by the collective's timeout, not hung
    summary = trial_path(tmp_path, failure) / "summary.json"
    assert summary.exists(), out.stderr
    assert read_summary(trial_path(tmp_path, failure))["status"] in ("error", "interrupted")


@pytest.mark.slow
def test_two_nodes_on_localhost_train_like_one_process(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    from conftest import REPO

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "algoperf.cli", *ARGS, "--devices", "1", "--nnodes", "2",
             "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", port,
             "--experiment-dir", str(tmp_path), "--name", "nodes"],
            cwd=REPO, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=600) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    one = run_cli(*ARGS, "--experiment-dir", str(tmp_path), "--name", "single")
    assert one.returncode == 0, one.stderr
    node_rows = read_eval_rows(trial_path(tmp_path, "nodes"))
    single_rows = read_eval_rows(trial_path(tmp_path, "single"))
    assert [r["global_step"] for r in node_rows] == ["1", "4", "8"]
    for a, b in zip(node_rows, single_rows):
        assert float(a["validation/loss"]) == pytest.approx(float(b["validation/loss"]), rel=1e-4)
        assert float(a["train/loss"]) == pytest.approx(float(b["train/loss"]), rel=1e-4)
    assert outputs[0][0].count("Trial finished") == 1 and "Trial finished" not in outputs[1][0]
