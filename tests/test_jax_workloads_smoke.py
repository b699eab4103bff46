"""Every JAX workload of issue 12 and its variants: `algoperf run --framework jax --data synthetic
--max-steps 3` with the JAX AdamW baseline completes and writes its eval rows,
as the PyTorch smoke runs do (CIFAR in `make test`, the rest in `make test-heavy`)."""

from __future__ import annotations

import pytest

from workloads import registry

from conftest import read_eval_rows, read_summary, run_cli

BASES = ("cifar", "criteo1tb", "fastmri", "imagenet_resnet", "imagenet_vit")
NAMES = [name for name, info in sorted(registry.all_workloads().items())
         if info.base_name in BASES and "jax" in info.implementations]
# CIFAR's run in `make test`; the other bases' (half a minute to a minute each, mostly compiling
# the full-size model) and every variant's in `make test-heavy`.
RUNS = [name if name == "cifar" else pytest.param(name, marks=pytest.mark.heavy) for name in NAMES]
# One device and a batch of 2, as the PyTorch smoke runs: the runs check that a workload trains and
# evaluates end to end; sharded steps are checked in test_jax_<workload>.py (and the runner's on
# 8 devices in test_jax_runner.py). On 8 host devices the JAX baselines' replicated parameters
# and Adam moments of the full Criteo model (2 GB of table) would not fit in this machine's memory.
ONE_DEVICE = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}


@pytest.mark.slow
@pytest.mark.parametrize("name", RUNS)
def test_synthetic_jax_run_completes_and_writes_eval_rows(tmp_path, name):
    out = run_cli(
        "run", "-w", name, "--framework", "jax", "-s", "adamw", "--data", "synthetic",
        "--max-steps", "3", "--batch-size", "2", "--experiment-dir", str(tmp_path), "--name", "smoke",
        "--quiet", "--stop-at", "never", env=ONE_DEVICE,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    trial = tmp_path / "smoke" / "study_0" / f"{name}_jax" / "trial_1"
    assert read_summary(trial)["status"] == "max_steps"
    rows = read_eval_rows(trial)
    assert [r["global_step"] for r in rows] == ["1", "3"]
    metric = registry.get(name).target_metric_name
    assert rows[-1][f"validation/{metric}"] != ""


def test_every_variant_of_the_five_bases_has_a_jax_implementation():
    assert len(NAMES) == 17
