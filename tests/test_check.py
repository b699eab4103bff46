"""`algoperf check`: every baseline passes, every deliberately broken submission is caught by the
check meant for it at the line marked `BROKEN: <check>` in tests/fixtures/broken_submissions/."""

from __future__ import annotations

import json
import os
import re
import textwrap
from pathlib import Path

import pytest

from algoperf import cli
from algoperf.check import check_submission
from algoperf.check import hyperparameters as hp_check
from algoperf.check.report import FAIL, PASS, SKIP, WARN
from algoperf.check.source import CodeBase
from algoperf.submission import FRAMEWORKS, SUBMISSIONS_ROOT

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "broken_submissions"
MARKER = re.compile(r"BROKEN: ([\w:. ]+?)(?:\"|$)")

# The checks that read the source only: a fixture whose marks are all static is never imported
# (importing `monkeypatch` would patch torch for the rest of this process).
STATIC = {"api", "private_access", "clock", "logs_dir", "env_vars", "files", "monkeypatch",
          "train_state_writes", "host_sync", "search_space", "hyperparameters"}
EXTERNAL = {"hparams_mismatch", "search_space_invalid"}
WARNING_CHECKS = {"host_sync", "host_sync_observed"}


def marks(folder: Path) -> list[tuple[str, Path, int]]:
    """(check, file, line) for every `BROKEN: <check> [<check> ...]` mark in a fixture's files."""
    found = []
    for path in sorted(folder.iterdir()):
        if path.suffix not in (".py", ".json"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            m = MARKER.search(line)
            if m:
                found += [(check, path.resolve(), number) for check in m.group(1).split()]
    return found


def by_name(results: list) -> dict:
    return {r.name: r for r in results}


BROKEN = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir() and marks(p))


def test_every_broken_fixture_marks_what_it_breaks() -> None:
    unmarked = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir() and not marks(p))
    assert unmarked == ["no_learning", "valid"]  # judged by the loss curve / by passing


@pytest.mark.parametrize("name", BROKEN)
def test_broken_submission_is_caught_at_its_line(name: str) -> None:
    folder = FIXTURES / name
    expected = marks(folder)
    static = all(check in STATIC for check, _, _ in expected)
    _, results = check_submission(
        str(folder), ruleset="external" if name in EXTERNAL else "self", workloads=["mnist1d"],
        smoke_steps=0, static_only=static,
    )
    rows = by_name(results)
    for check, path, line in expected:
        row = rows[check]
        assert row.status == (WARN if check in WARNING_CHECKS else FAIL), (check, row.reason)
        places = {(f.where.path.resolve(), f.where.line) for f in row.findings if f.where}
        assert (path, line) in places, f"{check} did not report {path.name}:{line}; it reported {places}"


@pytest.fixture(scope="module")
def valid_results() -> list:
    _, results = check_submission(str(FIXTURES / "valid"), ruleset="self", workloads=["mnist1d", "ogbg"],
                                  smoke_steps=20)
    return results


def test_the_unbroken_base_passes_every_check(valid_results: list) -> None:
    assert {r.name: r.status for r in valid_results if r.status != PASS} == {}
    names = [r.name for r in valid_results]
    assert names[:2] == ["api", "private_access"] and "smoke_mnist1d" in names
    assert "step:mnist1d" in names and "step:ogbg" in names


def test_smoke_run_reports_the_falling_loss(valid_results: list) -> None:
    smoke = by_name(valid_results)["smoke_mnist1d"]
    first, last = (float(x) for x in re.findall(r"train loss ([\d.]+) \(step 1\) -> ([\d.]+) \(step 20\)",
                                                smoke.reason)[0])
    assert last < first


def test_smoke_run_fails_when_the_loss_does_not_fall() -> None:
    _, results = check_submission(str(FIXTURES / "no_learning"), ruleset="self", workloads=[],
                                  smoke_steps=10)
    smoke = by_name(results)["smoke_mnist1d"]
    assert smoke.status == FAIL and "did not fall" in smoke.findings[0].message


def test_environment_is_restored_after_a_submission_sets_a_variable() -> None:
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    _, results = check_submission(str(FIXTURES / "env_vars"), ruleset="self", workloads=[], smoke_steps=0)
    assert by_name(results)["import"].status == PASS  # the module ran its os.environ[...] = "0"
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == before


# ---- the baselines -------------------------------------------------------------------------


def _ruleset(name: str) -> str:
    return "self" if name.endswith("self_tuning") else "external"


BASELINES = [(path.parent.name, framework) for framework in FRAMEWORKS
             for path in sorted(SUBMISSIONS_ROOT.glob(f"*/{framework}_submission.py"))]


@pytest.mark.parametrize(("name", "framework"), BASELINES, ids=[f"{n}-{f}" for n, f in BASELINES])
def test_baseline_passes(name: str, framework: str) -> None:
    """Static and import checks, and for PyTorch synthetic mnist1d steps (JAX compiles each
    submission's step for ~20 s here: one JAX baseline steps below, all in test-heavy)."""
    _, results = check_submission(name, ruleset=_ruleset(name), framework=framework,
                                  workloads=["mnist1d"] if framework == "pytorch" else [], smoke_steps=0)
    failed = {r.name: [f.text() for f in r.findings] for r in results if r.status == FAIL}
    assert failed == {}
    if framework == "pytorch":
        assert by_name(results)["step:mnist1d"].status == PASS


@pytest.mark.slow
def test_adamw_baseline_smoke_run() -> None:
    _, results = check_submission("adamw", workloads=[], smoke_steps=10)
    statuses = {r.name: r.status for r in results}
    assert statuses["smoke_mnist1d"] == PASS and FAIL not in statuses.values()


@pytest.mark.slow
def test_a_jax_baseline_steps_on_mnist1d() -> None:
    if ("adamw", "jax") not in BASELINES:
        pytest.skip("no JAX AdamW baseline yet")
    _, results = check_submission("adamw", framework="jax", workloads=["mnist1d"], smoke_steps=0)
    step = by_name(results)["step:mnist1d"]
    assert step.status == PASS or step.reason.startswith("jax not supported yet")
    assert by_name(results)["param_shapes"].status in (PASS, SKIP)


@pytest.mark.heavy
@pytest.mark.parametrize(("name", "framework"), BASELINES, ids=[f"{n}-{f}" for n, f in BASELINES])
def test_baseline_passes_the_full_default_check_on_small_workloads(name: str, framework: str) -> None:
    _, results = check_submission(name, ruleset=_ruleset(name), framework=framework,
                                  workloads=["mnist1d", "ogbg"])
    assert {r.name: [f.text() for f in r.findings] for r in results if r.status == FAIL} == {}


# ---- the static analysis, on small sources -----------------------------------------------------


def _write(tmp_path: Path, body: str, space: dict | None = None) -> Path:
    path = tmp_path / "pytorch_submission.py"
    path.write_text(textwrap.dedent(body))
    if space is not None:
        (tmp_path / "tuning_search_space.json").write_text(json.dumps(space))
    return path


API = """
def get_batch_size(workload_name):
    return 8

def update_params(workload, current_param_container, current_params_types, model_state,
                  hyperparameters, batch, loss_type, optimizer_state, eval_results, global_step, rng):
    return optimizer_state, current_param_container, model_state

def data_selection(workload, input_queue, optimizer_state, current_param_container, model_state,
                   hyperparameters, global_step, rng):
    return next(input_queue)
"""


def test_reads_through_a_helper_take_the_key_from_the_call_site(tmp_path: Path) -> None:
    path = _write(tmp_path, API + """
def hparam(hyperparameters, name, default):
    return default if hyperparameters is None else getattr(hyperparameters, name)

def optional(h, name, default):
    return getattr(h, name, default)

def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
    return {"lr": hparam(hyperparameters, "learning_rate", 0.1),
            "clip": optional(hyperparameters, "grad_clip", None)}
""", space={"learning_rate": {"feasible_points": [0.1]}})
    reads = hp_check.submission_reads(CodeBase(path))
    assert {(r.key, r.optional, r.where.line) for r in reads} == {
        ("learning_rate", False, 20), ("grad_clip", True, 21)}
    result = hp_check.check_hyperparameters(CodeBase(path), "external", tmp_path / "tuning_search_space.json")
    assert result.status == PASS and "grad_clip" in result.reason


def test_a_wrapper_class_with_defaults_makes_optional_reads(tmp_path: Path) -> None:
    path = _write(tmp_path, API + """
DEFAULTS = {"learning_rate": 0.1}

class Defaults:
    def __init__(self, hyperparameters):
        self._hp = hyperparameters

    def __getattr__(self, name):
        return getattr(self._hp, name, DEFAULTS.get(name))

def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
    h = Defaults(hyperparameters)
    return {"lr": h.learning_rate, "wd": h.weight_decay}
""")
    reads = hp_check.submission_reads(CodeBase(path))
    assert {(r.key, r.optional) for r in reads} == {("learning_rate", True), ("weight_decay", True)}


def test_reads_guarded_by_hasattr_or_except_attributeerror_are_optional(tmp_path: Path) -> None:
    path = _write(tmp_path, API + """
def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
    smoothing = hyperparameters.label_smoothing if hasattr(hyperparameters, "label_smoothing") else 0.0
    if hasattr(hyperparameters, "grad_clip"):
        clip = hyperparameters.grad_clip
    else:
        clip = hyperparameters.fallback_clip
    try:
        decay = hyperparameters.weight_decay
    except AttributeError:
        decay = 0.0
    return {"s": smoothing, "c": clip, "d": decay}
""")
    reads = {(r.key, r.optional) for r in hp_check.submission_reads(CodeBase(path))}
    assert reads == {("label_smoothing", True), ("grad_clip", True), ("fallback_clip", False),
                     ("weight_decay", True)}


def test_a_read_the_space_lacks_fails_and_an_unread_key_fails(tmp_path: Path) -> None:
    path = _write(tmp_path, API + """
def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
    return {"lr": hyperparameters.learning_rate, "b": hyperparameters.beta1}
""", space={"learning_rate": {"feasible_points": [0.1]}, "beta2": {"feasible_points": [0.9]}})
    result = hp_check.check_hyperparameters(CodeBase(path), "external", tmp_path / "tuning_search_space.json")
    messages = sorted(f.message.split(",")[0] for f in result.findings)
    assert result.status == FAIL
    assert messages == ["'beta2' is in the search space but the submission never reads it: tuning trials would "
                        "be spent on a knob that does nothing", "reads hyperparameters.beta1"]


def test_dropout_keys_of_the_space_are_read_by_the_harness(tmp_path: Path) -> None:
    path = _write(tmp_path, API + """
def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
    return {"lr": hyperparameters.learning_rate}
""", space={"learning_rate": {"feasible_points": [0.1]}, "dropout_rate": {"feasible_points": [0.1]},
            "aux_dropout_rate": {"feasible_points": [0.0]}})
    result = hp_check.check_hyperparameters(CodeBase(path), "external", tmp_path / "tuning_search_space.json")
    assert result.status == PASS


def test_periodic_host_sync_is_allowed_and_every_step_sync_warns(tmp_path: Path) -> None:
    from algoperf.check.static import check_host_sync

    path = _write(tmp_path, API.replace(
        "    return optimizer_state, current_param_container, model_state",
        "    loss = workload.loss_fn(batch['targets'], batch['inputs'])['summed']\n"
        "    if global_step % 100 == 0:\n"
        "        print(loss.item())\n"
        "    value = float(loss)\n"
        "    return optimizer_state, current_param_container, model_state"))
    result = check_host_sync(CodeBase(path))
    assert [(f.severity, f.where.line) for f in result.findings] == [(WARN, 10)]  # float(loss)
    assert result.note.endswith(f"{path.name}:9")  # loss.item() under `global_step % 100 == 0`


def test_importing_harness_internals_is_private_access_under_either_package_name(tmp_path: Path) -> None:
    from algoperf.check.static import check_private_access

    path = _write(tmp_path, """
from algoperf import spec
from algorithmic_efficiency.pytorch_utils import pytorch_setup
from algorithmic_efficiency.workloads.mnist import workload
import algoperf.runner
""" + API)
    assert [f.where.line for f in check_private_access(CodeBase(path)).findings] == [4, 5]


def test_files_built_from_the_submission_folder_pass(tmp_path: Path) -> None:
    from algoperf.check.static import check_files

    path = _write(tmp_path, API + """
import json
from pathlib import Path

TUNED = json.loads((Path(__file__).parent / "tuned.json").read_text())
""")
    assert check_files(CodeBase(path)).status == PASS


def test_jax_globals_and_host_syncs_are_found_in_a_jax_submission(tmp_path: Path) -> None:
    from algoperf.check.static import check_host_sync, check_monkeypatch

    path = tmp_path / "jax_submission.py"
    path.write_text(textwrap.dedent(API.replace(
        "    return optimizer_state, current_param_container, model_state",
        "    loss = jnp.mean(batch['inputs'])\n"
        "    print(float(loss))\n"
        "    return optimizer_state, current_param_container, model_state")) + textwrap.dedent("""
import jax
import jax.numpy as jnp

jax.config.update("jax_default_matmul_precision", "bfloat16")
"""))
    code = CodeBase(path)
    assert [f.where.line for f in check_host_sync(code).findings] == [8]
    assert [f.where.line for f in check_monkeypatch(code).findings] == [18]


# ---- the command -------------------------------------------------------------------------------


def test_cli_exit_code_and_json_name_the_file_and_line(capsys: pytest.CaptureFixture[str]) -> None:
    folder = FIXTURES / "clock"
    code = cli.main(["check", str(folder), "--ruleset", "self", "--static", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["ok"] is False
    clock = next(c for c in report["checks"] if c["name"] == "clock")
    (check, path, line), = marks(folder)
    assert clock["status"] == FAIL and clock["findings"][0]["line"] == line
    assert Path(clock["findings"][0]["file"]).resolve() == path


def test_cli_passes_a_valid_submission_with_exit_code_zero(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["check", str(FIXTURES / "valid"), "--ruleset", "self", "--static"])
    out = capsys.readouterr().out
    assert code == 0 and "OK: 11 passed" in out


def test_cli_unknown_workload_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["check", "adamw", "--workloads", "mnist1dd"])
    assert code == 2 and "mnist1d" in capsys.readouterr().err


def test_a_workload_without_the_framework_is_skipped_with_a_reason() -> None:
    from workloads import registry

    lacking = sorted(n for n, i in registry.all_workloads().items() if "jax" not in i.implementations
                     and not i.is_variant)
    if not lacking:
        pytest.skip("every base workload has a JAX implementation")
    from algoperf.check.dynamic import Watch, check_steps
    from algoperf.submission import SubmissionSource

    source = SubmissionSource("x", FIXTURES / "valid" / "pytorch_submission.py", "jax", None)
    result = check_steps(source, None, Watch(CodeBase(source.path), "jax"), "self", lacking[0], 8)  # type: ignore[arg-type]
    assert result.status == SKIP and result.reason.startswith("jax not supported yet")
