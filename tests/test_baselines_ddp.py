"""Every PyTorch baseline under `algoperf run --devices 2` (two gloo processes on the CPU): after 30
steps both ranks hold the same parameters and the same optimizer state, and these equal one
process's on the same global batch up to float rounding (issue 10).

Each run trains a thin wrapper around the baseline's own `pytorch_submission.py` that, after its
last step, saves every parameter and every optimizer-state tensor of its rank. K-FAC runs with the
exact (type-2) Fisher, so that one process and two compute the same factors (a Monte-Carlo sample
differs between them), inverses every 10 steps and factors every 10, so that all-reduced factors
are inverted and applied three times within the 30 steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import REPO, run_cli

STEPS = 30
BATCH = 32  # the global batch: 16 examples per rank
BASELINES = ["adamw", "nadamw", "sgd", "shampoo", "kfac", "schedule_free"]
# Shampoo's inverse fourth roots of (L + eps I) scale the directions where the early statistics are
# nearly 0 by up to eps^(-1/4): the float32 rounding in which two ranks and one process differ is
# amplified there (element-wise differences reach 5e-4 after 30 steps, while both ranks stay bit
# for bit equal), so one process is compared in norm: measured 6.3e-4 (this test, -s prints it),
# bound 2e-3.
AMPLIFIED = {"shampoo": 2e-3}
OVERRIDES = {"kfac": {"fisher_type": "type2", "inverse_frequency": 10, "factor_frequency": 10}}

WRAPPER = '''
import os

import torch
import torch.distributed as dist

from submissions.{name} import pytorch_submission as base

get_batch_size = base.get_batch_size
init_optimizer_state = base.init_optimizer_state
data_selection = base.data_selection
if hasattr(base, "prepare_for_eval"):
    prepare_for_eval = base.prepare_for_eval


def tensors(tree):
    """Every tensor of a nested state dict, in a fixed order."""
    if isinstance(tree, torch.Tensor):
        return [tree.detach().cpu().reshape(-1)]
    if isinstance(tree, dict):
        return [t for k in sorted(tree, key=str) for t in tensors(tree[k])]
    if isinstance(tree, (list, tuple)):
        return [t for v in tree for t in tensors(v)]
    return []


def update_params(workload, current_param_container, current_params_types, model_state, hyperparameters,
                  batch, loss_type, optimizer_state, eval_results, global_step, rng, train_state=None):
    out = base.update_params(workload, current_param_container, current_params_types, model_state,
                             hyperparameters, batch, loss_type, optimizer_state, eval_results, global_step,
                             rng)
    if global_step == {steps} - 1:
        rank = dist.get_rank() if dist.is_initialized() else 0
        model = getattr(out[1], "module", out[1])
        torch.save({{"params": torch.cat([p.detach().reshape(-1) for p in model.parameters()]),
                    "state": tensors(out[0]["optimizer"].state_dict())}},
                   os.path.join(os.environ["BASELINE_DDP_OUT"], "rank%d.pt" % rank))
    return out
'''


def tuned_point(name: str) -> dict:
    point = json.loads((REPO / "submissions" / name / "tuned_hyperparameters.json").read_text())["mnist1d"]
    return {**point, **OVERRIDES.get(name, {})}


def train(name: str, tmp_path: Path, devices: int) -> list[dict]:
    """The saved parameters and optimizer state of every rank after STEPS steps."""
    folder = tmp_path / f"{name}_{devices}"
    folder.mkdir()
    submission = folder / "submission.py"
    submission.write_text(WRAPPER.format(name=name, steps=STEPS))
    out = run_cli("run", "-w", "mnist1d", "-s", str(submission), "--data", "synthetic", "--hparams",
                  json.dumps(tuned_point(name)), "--max-steps", str(STEPS), "--batch-size", str(BATCH),
                  "--eval-every", str(STEPS), "--max-runtime", "100000", "--stop-at", "never", "--quiet",
                  "--devices", str(devices),
                  "--experiment-dir", str(tmp_path / "experiments"), "--name", f"{name}_{devices}",
                  env={"BASELINE_DDP_OUT": str(folder)})
    assert out.returncode == 0, out.stderr[-3000:]
    return [torch.load(folder / f"rank{r}.pt") for r in range(devices)]


@pytest.mark.slow
# K-FAC, whose factors are all-reduced by the optimizer itself, in `make test`; the others, whose
# gradients DDP averages, in `make test-heavy` (half a minute each).
@pytest.mark.parametrize("name", [n if n == "kfac" else pytest.param(n, marks=pytest.mark.heavy) for n in BASELINES])
def test_two_ranks_stay_identical_and_match_one_process(name, tmp_path):
    rank0, rank1 = train(name, tmp_path, devices=2)
    assert torch.equal(rank0["params"], rank1["params"])
    assert len(rank0["state"]) == len(rank1["state"]) > 0
    for a, b in zip(rank0["state"], rank1["state"]):
        assert torch.equal(a, b)
    (single,) = train(name, tmp_path, devices=1)
    # The two ranks sum their gradients in another order than one process: equal up to rounding.
    if name in AMPLIFIED:
        relative = torch.linalg.vector_norm(rank0["params"] - single["params"]) / torch.linalg.vector_norm(single["params"])
        print(f"{name}: |2 ranks - 1 process| / |1 process| = {relative:.2e}")
        assert relative < AMPLIFIED[name]
    else:
        torch.testing.assert_close(rank0["params"], single["params"], rtol=1e-4, atol=1e-5)
