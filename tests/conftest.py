"""Shared fixtures: running the real CLI in-process and writing small test submissions."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# JAX tests run on 8 host (CPU) devices, as DESIGN.md's scale tests do; the flag must be set
# before jax is first imported, and subprocesses inherit it.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# `make test` runs the suite in one pytest-xdist worker per core: one math thread each (and in
# their subprocesses), or the workers' thread pools spin against each other on the shared cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parent.parent

# A minimal AlgoPerf PyTorch submission (plain SGD) whose functions a test can replace.
SUBMISSION_TEMPLATE = '''
import time
import torch
from algoperf import spec

def get_batch_size(workload_name):
    return 64

def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
    return {"optimizer": torch.optim.SGD(model_params.parameters(), lr=0.05)}

def update_params(workload, current_param_container, current_params_types, model_state,
                  hyperparameters, batch, loss_type, optimizer_state, eval_results, global_step,
                  rng, train_state=None):
    model = current_param_container
    optimizer_state["optimizer"].zero_grad()
    logits, model_state = workload.model_fn(
        params=model, augmented_and_preprocessed_input_batch=batch, model_state=model_state,
        mode=spec.ForwardPassMode.TRAIN, rng=rng, update_batch_norm=True)
    loss = workload.loss_fn(label_batch=batch["targets"], logits_batch=logits)
    (loss["summed"] / loss["n_valid_examples"]).backward()
    optimizer_state["optimizer"].step()
    return optimizer_state, model, model_state

def data_selection(workload, input_queue, optimizer_state, current_param_container, model_state,
                   hyperparameters, global_step, rng):
    return next(input_queue)
'''


def write_submission(folder: Path, extra: str = "", name: str = "submission.py") -> Path:
    """A submission file: the template, then `extra` (which may redefine any function)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(SUBMISSION_TEMPLATE + "\n" + textwrap.dedent(extra))
    return path


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs `algoperf ARGS` in a fresh process, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "algoperf.cli", *args],
        cwd=REPO, capture_output=True, text=True, env=full_env, timeout=timeout,
    )


def read_eval_rows(trial_dir: Path) -> list[dict[str, str]]:
    with open(trial_dir / "eval_measurements.csv", newline="") as f:
        return list(csv.DictReader(f))


def read_summary(trial_dir: Path) -> dict:
    return json.loads((trial_dir / "summary.json").read_text())


def trial_path(experiment_dir: Path, name: str, workload: str = "mnist1d", study: int = 0, trial: int = 1) -> Path:
    return experiment_dir / name / f"study_{study}" / f"{workload}_pytorch" / f"trial_{trial}"


@pytest.fixture
def experiment_dir(tmp_path: Path) -> Path:
    return tmp_path / "experiments"
