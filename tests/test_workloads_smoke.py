"""Every registered workload and variant: `algoperf run --data synthetic --max-steps 3` with AdamW
completes and writes its eval rows; `algoperf workloads` lists them all."""

from __future__ import annotations

import json

import pytest

from algoperf import cli
from workloads import registry

from conftest import read_eval_rows, read_summary, run_cli, trial_path

ALL = sorted(registry.all_workloads())
# The base workloads run in `make test`, but for those whose full-size model takes the longest to
# build and step on the CPU (their models are checked in test_<workload>.py and
# against their JAX twins); those and every variant (same pipeline, another model) are marked
# heavy and run by `make test-heavy`, which keeps `make test` within its time goal.
FULL_SIZE = {"criteo1tb", "fastmri", "imagenet_resnet", "imagenet_vit", "librispeech_deepspeech", "wmt"}
RUNS = [name if registry.get(name).base is None and name not in FULL_SIZE
        else pytest.param(name, marks=pytest.mark.heavy) for name in ALL]


@pytest.mark.slow
@pytest.mark.parametrize("name", RUNS)
def test_synthetic_run_completes_and_writes_eval_rows(tmp_path, name):
    # A process per run, as a user runs it: a 539M-parameter model's memory goes with it.
    out = run_cli(
        "run", "-w", name, "-s", "adamw", "--data", "synthetic", "--max-steps", "3", "--batch-size", "2",
        "--experiment-dir", str(tmp_path), "--name", "smoke", "--quiet", "--stop-at", "never",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    trial = trial_path(tmp_path, "smoke", workload=name)
    assert read_summary(trial)["status"] == "max_steps"
    rows = read_eval_rows(trial)
    assert [r["global_step"] for r in rows] == ["1", "3"]
    metric = registry.get(name).target_metric_name
    assert f"validation/{metric}" in rows[-1] and rows[-1][f"validation/{metric}"] != ""


def test_workloads_lists_every_workload_and_variant_as_json(capsys):
    assert cli.main(["workloads", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(item["name"] for item in listed) == ALL
    for item in listed:
        info = registry.get(item["name"])
        assert item["validation_target"] == info.validation_target
        assert item["max_allowed_runtime_sec"] == info.max_allowed_runtime_sec


def test_workloads_counts_parameters_of_a_model(capsys):
    assert cli.main(["workloads", "mnist", "--count-params", "--json"]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert item["n_params"] == 101_770 == registry.get("mnist").n_params["pytorch"]


def test_registry_imports_no_framework():
    import subprocess
    import sys

    code = ("import sys; from workloads import registry; registry.all_workloads(); import scoring; "
            "bad = [m for m in ('torch', 'jax', 'tensorflow') if m in sys.modules]; print(bad); "
            "sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_help_and_workloads_work_without_torch():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'jax'):\n"
        "            raise ModuleNotFoundError(f'blocked: {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from algoperf import cli\n"
        "sys.exit(cli.main(['workloads', '--json']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "mnist1d" in out.stdout
