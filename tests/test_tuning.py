"""Search spaces and seeded quasi-random sampling (RULES.md, Tuning)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import qmc

from algoperf import tuning
from algoperf.random_utils import derive_seed

SPACE = {
    "learning_rate": {"min": 1e-4, "max": 1e-1, "scaling": "log"},
    "weight_decay": {"min": 0.0, "max": 0.5, "scaling": "linear"},
    "warmup": {"feasible_points": [0.02, 0.05, 0.1]},
}


def test_sampling_is_reproducible():
    assert tuning.sample(SPACE, 3, 7, "mnist1d", 1) == tuning.sample(SPACE, 3, 7, "mnist1d", 1)


def test_studies_get_distinct_points():
    points = [tuning.sample(SPACE, 1, 0, "mnist1d", study)["learning_rate"] for study in range(5)]
    assert len(set(points)) == 5


def test_trials_of_a_study_are_distinct():
    points = [tuning.sample(SPACE, t, 0, "mnist1d", 0)["learning_rate"] for t in range(1, 6)]
    assert len(set(points)) == 5


def test_trial_index_is_stable_across_processes():
    code = (
        "import json; from algoperf import tuning; "
        f"print(json.dumps(tuning.sample({SPACE!r}, 4, 11, 'wmt', 2)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == tuning.sample(SPACE, 4, 11, "wmt", 2)


def test_points_follow_the_scrambled_halton_sequence_and_scaling():
    # The closed form: u from scipy's scrambled Halton for (seed, workload, study), then
    # log: exp(log lo + u (log hi - log lo)); linear: lo + u (hi - lo); discrete: points[floor(u n)].
    names = sorted(SPACE)
    halton = qmc.Halton(d=3, scramble=True, seed=derive_seed(5, "search", "ogbg", 1))
    us = halton.random(4)
    for trial in range(1, 5):
        u = dict(zip(names, us[trial - 1]))
        got = tuning.sample(SPACE, trial, 5, "ogbg", 1)
        lr = math.exp(math.log(1e-4) + u["learning_rate"] * (math.log(1e-1) - math.log(1e-4)))
        assert got["learning_rate"] == pytest.approx(lr, rel=1e-12)
        assert got["weight_decay"] == pytest.approx(0.5 * u["weight_decay"], rel=1e-12)
        assert got["warmup"] == [0.02, 0.05, 0.1][int(u["warmup"] * 3)]


@settings(max_examples=50, deadline=None)
@given(trial=st.integers(1, 200), seed=st.integers(0, 2**31), study=st.integers(0, 10))
def test_sampled_points_stay_in_range(trial, seed, study):
    point = tuning.sample(SPACE, trial, seed, "mnist1d", study)
    assert 1e-4 <= point["learning_rate"] <= 1e-1
    assert 0.0 <= point["weight_decay"] <= 0.5
    assert point["warmup"] in (0.02, 0.05, 0.1)


def test_list_search_space_is_used_as_given():
    space = [{"learning_rate": 0.1}, {"learning_rate": 0.2}]
    assert tuning.sample(space, 2, 0, "mnist1d", 3) == {"learning_rate": 0.2}
    with pytest.raises(tuning.SearchSpaceError, match="no trial 3"):
        tuning.sample(space, 3, 0, "mnist1d", 0)


@pytest.mark.parametrize(
    "space, message",
    [
        ({}, "expected an object"),
        ({"lr": {"min": 1.0}}, "needs 'min' and 'max'"),
        ({"lr": {"min": 2.0, "max": 1.0}}, "min <= max"),
        ({"lr": {"min": -1.0, "max": 1.0, "scaling": "log"}}, "not positive"),
        ({"lr": {"min": 1.0, "max": 2.0, "scaling": "cubic"}}, "scaling must be"),
        ({"lr": {"feasible_points": []}}, "non-empty list"),
        ([1, 2], "list of objects"),
    ],
)
def test_bad_search_spaces_are_rejected(space, message):
    with pytest.raises(tuning.SearchSpaceError, match=message):
        tuning.validate(space)


def test_trial_seeds_differ_and_are_reproducible():
    from algoperf.runner import trial_seed

    seeds = {trial_seed(0, "mnist1d", s, t) for s in range(3) for t in range(1, 6)}
    assert len(seeds) == 15
    assert trial_seed(0, "mnist1d", 1, 2) == trial_seed(0, "mnist1d", 1, 2)
