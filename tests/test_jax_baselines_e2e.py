"""End to end: `algoperf run -w mnist1d -s <baseline> --framework jax` trains to the mnist1d
validation target with each JAX baseline, as tests/test_baselines_e2e.py and
test_baselines_mnist1d.py check for the PyTorch ones.

Each run uses the submission's tuned mnist1d point (the PyTorch baseline's: the JAX baseline is the
same algorithm, see tests/test_jax_baselines_parity.py), evaluates every 100 steps so that the step
at which the target is reached does not depend on the machine's speed, and must get there within
step_hint steps (the target is the tuned AdamW run's accuracy after step_hint steps). The runs go
through the real CLI (`algoperf.cli.main`) one after the other in one fresh process on one CPU
device (as `algoperf run` has by default): a process per run would pay JAX's start-up seven times.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workloads import registry

from conftest import REPO, read_eval_rows, read_summary

EVAL_EVERY = 100  # 50 on the PyTorch side; every 100 halves the evals, a third of a run's work
RUNS = {"adamw": "external", "nadamw": "external", "sgd": "external", "schedule_free": "external",
        "shampoo": "external", "kfac": "external", "schedule_free_self_tuning": "self"}

# Runs each trial with the CLI's own entry point; prints {submission: exit code or traceback}.
DRIVER = """
import json, sys, traceback
from algoperf import cli
runs, step_hint, eval_every, folder = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
codes = {}
for name, ruleset in runs.items():
    try:
        codes[name] = cli.main(["run", "-w", "mnist1d", "-s", name, "--framework", "jax", "--ruleset", ruleset,
                                "--stop-at", "validation", "--eval-every", eval_every, "--max-steps", step_hint,
                                "--max-runtime", "600", "--experiment-dir", folder, "--name", name, "--quiet"])
    except BaseException:
        codes[name] = traceback.format_exc()
print(json.dumps(codes))
"""


# AdamW, Shampoo and K-FAC in `make test`; the others in `make test-heavy`.
IN_MAKE_TEST = {"adamw", "shampoo", "kfac"}


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory) -> tuple[Path, dict]:
    """Runs the baselines this session collected (all with `-m heavy` or no marker filter)."""
    collected = {item.callspec.params["submission"] for item in request.session.items
                 if item.originalname == "test_jax_baseline_reaches_the_mnist1d_target_within_step_hint_steps"}
    selected = {name: ruleset for name, ruleset in RUNS.items() if name in collected}
    folder = tmp_path_factory.mktemp("jax_e2e")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    out = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(selected), str(registry.get("mnist1d").step_hint),
         str(EVAL_EVERY), str(folder)], cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stderr[-3000:]
    return folder, json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("submission", [n if n in IN_MAKE_TEST else pytest.param(n, marks=pytest.mark.heavy)
                                        for n in RUNS])
def test_jax_baseline_reaches_the_mnist1d_target_within_step_hint_steps(runs, submission):
    folder, codes = runs
    assert codes[submission] == 0, codes[submission]
    info = registry.get("mnist1d")
    trial = folder / submission / "study_0" / "mnist1d_jax" / "trial_1"
    summary = read_summary(trial)
    assert summary["status"] == "reached", summary
    rows = read_eval_rows(trial)
    reached = [r for r in rows if float(r["validation/accuracy"]) >= info.validation_target]
    assert reached and reached[0] is rows[-1]  # the run stops at the first eval on target
    assert int(rows[-1]["global_step"]) <= info.step_hint
    assert summary["time_to_target_s"] == pytest.approx(float(rows[-1]["score"]))
