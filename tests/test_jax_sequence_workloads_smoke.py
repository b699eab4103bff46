"""The JAX workloads of issue 13 (LibriSpeech Conformer and DeepSpeech, WMT, OGBG) and their
variants: `algoperf run --framework jax -s adamw --data synthetic --max-steps 3` completes and
writes its eval rows, as the PyTorch smoke runs do (in `make test-heavy`: see RUNS)."""

from __future__ import annotations

import pytest

from workloads import registry

from conftest import read_eval_rows, read_summary, run_cli

BASES = ("librispeech_conformer", "librispeech_deepspeech", "ogbg", "wmt")
NAMES = [name for name, info in sorted(registry.all_workloads().items())
         if info.base_name in BASES and "jax" in info.implementations]
# Every run in `make test-heavy`: measured on this 2-core machine under load, the base runs take
# 18-20 s (OGBG) and 40-60 s (LibriSpeech, WMT: their train and eval steps' compiles), over the
# ~20 s a smoke run may cost in `make test`. The parity tests in test_jax_<workload>.py cover the
# models in `make test`.
RUNS = [pytest.param(name, marks=pytest.mark.heavy) for name in NAMES]
# One device, as test_jax_workloads_smoke.py runs the other JAX workloads: the run checks that a
# workload trains and evaluates end to end; the 8-device sharded step is checked against the
# single-device one in test_jax_<workload>.py. Batch 8: a batch of OGBG graphs per device must
# hold its largest synthetic molecule (44 atoms, the budget being 26 per graph).
ONE_DEVICE = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}


@pytest.mark.slow
@pytest.mark.parametrize("name", RUNS)
def test_synthetic_jax_run_completes_and_writes_eval_rows(tmp_path, name):
    out = run_cli(
        "run", "-w", name, "--framework", "jax", "-s", "adamw", "--data", "synthetic",
        "--max-steps", "3", "--batch-size", "8", "--experiment-dir", str(tmp_path), "--name",
        "smoke", "--quiet", "--stop-at", "never", env=ONE_DEVICE,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    trial = tmp_path / "smoke" / "study_0" / f"{name}_jax" / "trial_1"
    assert read_summary(trial)["status"] == "max_steps"
    rows = read_eval_rows(trial)
    assert [r["global_step"] for r in rows] == ["1", "3"]
    metric = registry.get(name).target_metric_name
    assert rows[-1][f"validation/{metric}"] != ""


def test_every_variant_of_the_four_bases_has_a_jax_implementation():
    assert len(NAMES) == 16
