"""Under external tuning a baseline reads its hyperparameters from the search space and nowhere
else (RULES.md, Tuning): a name the space lacks is an error naming it and the file; defaults
apply only under self-tuning (hyperparameters is None)."""

from __future__ import annotations

import copy
import importlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from algoperf import tuning
from submissions.torch_training import hparam, optional_hparam
from workloads import registry

from conftest import REPO

EXTERNAL = ["adamw", "nadamw", "sgd", "shampoo", "kfac", "schedule_free"]
# Knobs whose absence means "off" or "as given" (read with optional_hparam, as the reference
# baselines read grad_clip with hasattr): a search space may leave them out.
OPTIONAL = {"grad_clip", "step_hint_factor", "preconditioner_dtype"}


def space_path(name: str) -> Path:
    return REPO / "submissions" / name / "tuning_search_space.json"


def first_point(name: str) -> dict[str, Any]:
    return tuning.sample(tuning.load_search_space(space_path(name)), 1, 0, "mnist1d", 0)


class Recorder:
    """Hyperparameters that remember every name read, required (attribute) or probed (getattr
    with a default goes through __getattr__ too, so both land here)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.read: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        self.read.add(name)
        return getattr(self._inner, name)


def one_step(name: str, hyperparameters: Any) -> None:
    """init_optimizer_state and one update_params of a baseline on a small mnist1d batch."""
    module = importlib.import_module(f"submissions.{name}.pytorch_submission")
    workload = registry.load("mnist1d", "pytorch", data="synthetic")
    model, state = workload.init_model_fn(0)
    batch = next(iter(workload.build_input_queue(0, "train", None, 16)))
    opt_state = module.init_optimizer_state(workload, model, state, hyperparameters, 0)
    module.update_params(
        workload=workload, current_param_container=model, current_params_types=workload.model_params_types,
        model_state=state, hyperparameters=hyperparameters, batch=batch, loss_type=workload.loss_type,
        optimizer_state=opt_state, eval_results=[], global_step=0, rng=0,
    )


def test_a_missing_hyperparameter_names_itself_and_the_search_space_file():
    hp = tuning.as_hyperparameters({"learning_rate": 0.1}, source="my/space.json")
    with pytest.raises(tuning.MissingHyperparameterError) as err:
        hp.beta2  # noqa: B018
    assert "'beta2'" in str(err.value) and "my/space.json" in str(err.value)
    assert hp.learning_rate == 0.1


def test_optional_probes_keep_the_reference_namedtuple_behaviour():
    # hasattr / getattr with a default are how reference submissions read optional knobs.
    hp = tuning.as_hyperparameters({"learning_rate": 0.1})
    assert not hasattr(hp, "grad_clip")
    assert getattr(hp, "grad_clip", None) is None
    assert hp._asdict() == {"learning_rate": 0.1}
    assert copy.deepcopy(hp) == hp


def test_hparam_uses_the_default_only_under_self_tuning():
    assert hparam(None, "learning_rate", 0.5) == 0.5
    hp = tuning.as_hyperparameters({"learning_rate": 0.1}, source="s.json")
    assert hparam(hp, "learning_rate", 0.5) == 0.1
    with pytest.raises(tuning.MissingHyperparameterError, match="s.json"):
        hparam(hp, "warmup_factor", 0.05)
    assert optional_hparam(hp, "grad_clip", None) is None


@pytest.mark.parametrize("name", EXTERNAL)
def test_a_search_space_without_a_read_hyperparameter_stops_the_baseline(name, tmp_path):
    point = first_point(name)
    point.pop("learning_rate")
    path = tmp_path / "tuning_search_space.json"
    with pytest.raises(tuning.MissingHyperparameterError) as err:
        one_step(name, tuning.as_hyperparameters(point, source=path))
    assert "'learning_rate'" in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("name", EXTERNAL)
def test_the_shipped_search_space_defines_exactly_what_the_baseline_reads(name):
    space = tuning.load_search_space(space_path(name))
    recorder = Recorder(tuning.as_hyperparameters(first_point(name), source=space_path(name)))
    one_step(name, recorder)
    assert recorder.read - OPTIONAL == set(space), "read but not in the space / in the space but never read"


@pytest.mark.parametrize("name", EXTERNAL)
def test_the_tuned_point_defines_every_search_space_hyperparameter(name):
    tuned = json.loads((REPO / "submissions" / name / "tuned_hyperparameters.json").read_text())
    for workload, point in tuned.items():
        assert set(point) == set(tuning.load_search_space(space_path(name))), workload


@pytest.mark.parametrize("name", ["shampoo_self_tuning", "kfac_self_tuning", "schedule_free_self_tuning"])
def test_self_tuning_baselines_run_on_their_defaults(name):
    torch.manual_seed(0)
    one_step(name, None)
