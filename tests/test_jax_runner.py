"""The JAX half of the runner: AlgoPerf JAX submissions of both API eras run unchanged on 8 CPU
devices, the clock waits for the device before each timestamp, and a killed JAX trial resumes
to the same eval rows as an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from algoperf import runner

from conftest import REPO, read_eval_rows, read_summary, run_cli

FIXTURES = REPO / "tests" / "fixtures" / "submissions"


def jax_trial(experiment: Path, name: str) -> Path:
    return experiment / name / "study_0" / "mnist1d_jax" / "trial_1"


def assert_learns(trial: Path) -> None:
    rows = read_eval_rows(trial)
    assert float(rows[-1]["validation/loss"]) < float(rows[0]["validation/loss"]) - 0.1


@pytest.mark.slow
@pytest.mark.parametrize("fixture,rules", [("jax_jit_reference_style", "v0.6"), ("jax_pmap_v05", "v0.5")])
def test_reference_jax_submissions_of_both_eras_run_unchanged(tmp_path, fixture, rules):
    out = run_cli("run", "-s", str(FIXTURES / fixture / "submission.py"), "--ruleset", "self",
                  "--rules", rules, "--max-steps", "50", "--eval-every", "50", "--quiet",
                  "--max-runtime", "3600", "--experiment-dir", str(tmp_path), "--name", "r")
    assert out.returncode == 0, out.stderr
    trial = jax_trial(tmp_path, "r")
    assert json.loads((trial / "flags_0.json").read_text())["framework"] == "jax"
    assert json.loads((trial / "meta_data_0.json").read_text())["device"]["device_count"] == 8
    assert_learns(trial)


SLOW_DEVICE_STEP = '''
import time
import jax
import jax.numpy as jnp
import numpy as np

import submissions.jax_training as training
from submissions.jax_training import data_selection, get_batch_size, init_state
from submissions.adamw.jax_submission import adamw

def _slow(x):
    time.sleep(0.4)  # the device is busy: the step's outputs are not ready until this ends
    return x

def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
    return init_state(adamw(None, 1e-3), model_params)

def update_params(**kw):
    opt_state, params, model_state = training.update_params(**kw)
    params = jax.jit(lambda p: jax.tree.map(
        lambda x: jax.pure_callback(_slow, jax.ShapeDtypeStruct(x.shape, x.dtype), x), p))(params)
    return opt_state, params, model_state  # returned at once: JAX dispatches asynchronously
'''


def test_a_slow_device_step_is_on_the_clock_not_in_the_eval(tmp_path):
    path = tmp_path / "sub" / "jax_submission.py"
    path.parent.mkdir()
    path.write_text(SLOW_DEVICE_STEP)
    config = runner.TrialConfig(workload="mnist1d", submission=str(path), trial_dir=tmp_path / "t",
                                framework="jax", data="synthetic", hyperparameters=None,
                                ruleset="self", max_steps=5, eval_every=1000, batch_size=64,
                                max_runtime=3600, record_step_times=True)
    trial = runner.Trial(config)
    result = trial.run()
    assert result.status == "max_steps", result.error
    # Every leaf of the parameters waits 0.4 s in the callback; each step's time holds that wait.
    assert trial.step_times is not None and min(trial.step_times) >= 0.4


MAX_STEPS = "160"
COMMON = ["run", "-w", "mnist1d", "-s", "adamw", "--framework", "jax", "--data", "synthetic",
          "--max-steps", MAX_STEPS, "--eval-every", "40", "--checkpoint-every", "40",
          "--stop-at", "never", "--quiet", "--batch-size", "64", "--seed", "5",
          "--max-runtime", "3600"]
TIME_COLUMNS = {"accumulated_eval_time", "accumulated_logging_time", "accumulated_submission_time",
                "score", "total_duration", "preemption_count"}


def _metrics(rows):
    return [{k: v for k, v in r.items() if k not in TIME_COLUMNS} for r in rows]


def _checkpoint_steps(trial: Path) -> list[int]:
    index = trial / "checkpoints" / "checkpoints.json"
    try:
        return [e["step"] for e in json.loads(index.read_text())]
    except (OSError, ValueError):
        return []


@pytest.mark.slow
def test_a_killed_jax_trial_resumes_to_the_same_rows(tmp_path):
    clean = run_cli(*COMMON, "--experiment-dir", str(tmp_path / "clean"), "--name", "r")
    assert clean.returncode == 0, clean.stderr
    proc = subprocess.Popen([sys.executable, "-m", "algoperf.cli", *COMMON, "--experiment-dir",
                             str(tmp_path / "killed"), "--name", "r"], cwd=REPO, env=os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trial = jax_trial(tmp_path / "killed", "r")
    deadline = time.monotonic() + 600
    while max(_checkpoint_steps(trial), default=0) < 80:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = run_cli(*COMMON, "--experiment-dir", str(tmp_path / "killed"), "--name", "r", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    rows, clean_rows = read_eval_rows(trial), read_eval_rows(jax_trial(tmp_path / "clean", "r"))
    assert [r["global_step"] for r in rows] == [r["global_step"] for r in clean_rows]
    assert _metrics(rows) == _metrics(clean_rows)
    assert read_summary(trial)["preemption_count"] == 1


@pytest.mark.slow
def test_two_jax_nodes_on_localhost_train_like_one_process(tmp_path):
    import socket

    args = ["run", "-w", "mnist1d", "-s", "adamw", "--framework", "jax", "--data", "synthetic",
            "--max-steps", "8", "--eval-every", "4", "--batch-size", "64", "--quiet",
            "--max-runtime", "3600", "--experiment-dir", str(tmp_path)]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}  # 2 per node
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    nodes = [
        subprocess.Popen([sys.executable, "-m", "algoperf.cli", *args, "--name", "nodes", "--nnodes", "2",
                          "--node-rank", str(rank), "--master-port", port],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=600) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    one = run_cli(*args, "--name", "single", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    assert one.returncode == 0, one.stderr
    node_rows, single_rows = read_eval_rows(jax_trial(tmp_path, "nodes")), read_eval_rows(jax_trial(tmp_path, "single"))
    assert [r["global_step"] for r in node_rows] == ["1", "4", "8"]
    for a, b in zip(node_rows, single_rows):
        assert float(a["validation/loss"]) == pytest.approx(float(b["validation/loss"]), rel=1e-4)
    meta = json.loads((jax_trial(tmp_path, "nodes") / "meta_data_0.json").read_text())
    assert meta["device"]["process_count"] == 2 and meta["device"]["device_count"] == 4
    assert "Trial finished" in outputs[0][0] and "Trial finished" not in outputs[1][0]
