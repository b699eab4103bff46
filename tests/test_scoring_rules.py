"""Scoring against hand-computed answers, one rule at a time (RULES.md, Scoring)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scoring_logs import TARGETS, reaching_at, write_trial

from scoring import profiles
from scoring import rules as rules_lib
from scoring import score as score_lib
from scoring.logs import Target, TrialTimes
from scoring.time_to_target import study_time, workload_time

V06 = rules_lib.get("v0.6")
TARGET = Target("accuracy", 0.5, True, 100.0)


def targets() -> dict[str, Target]:
    return {
        w: Target(t["metric"], t["target"], t["higher_is_better"], t["budget"])
        for w, t in TARGETS.items()
    }


def run_score(root, **kw):
    return score_lib.score([root], targets=targets(), bootstrap=0, **kw)


def trial(scores, values) -> TrialTimes:
    t = TrialTimes("s", 0, "wa", "pytorch", 1, path=None)  # type: ignore[arg-type]
    t.scores, t.values = list(scores), list(values)
    return t


def test_three_submissions_known_answer(tmp_path):
    # Best A = 10, best B = 10. Ratios: s1 (1, 2), s2 (2, 1), s3 (5 > 4: cut, 1.5).
    # Exact score = mean over workloads of (4 - r) / 3: s1 = s2 = (3 + 2) / 6, s3 = 2.5 / 6.
    for sub, (ta, tb) in {"s1": (10, 20), "s2": (20, 10), "s3": (50, 15)}.items():
        write_trial(tmp_path, sub, 0, "wa", 1, reaching_at(ta, index=1))
        write_trial(tmp_path, sub, 0, "wb", 1, reaching_at(tb, index=1))
    result = run_score(tmp_path, exact=True)
    got = dict(zip(result.submissions, result.scores))
    assert got["s1"] == pytest.approx(5 / 6)
    assert got["s2"] == pytest.approx(5 / 6)
    assert got["s3"] == pytest.approx(2.5 / 6)
    assert result.times[result.submissions.index("s3")].tolist() == [math.inf, 15.0]
    assert dict(zip(result.submissions, result.ranks.tolist())) == {"s1": 1, "s2": 1, "s3": 3}


def test_trapezoid_score_equals_a_plain_numpy_integral():
    ratios = np.array([[1.0, 2.0, np.inf], [1.5, 1.0, 3.2]])
    tau = np.linspace(1.0, 4.0, 100)
    rho = np.array([[np.mean(r <= t) for t in tau] for r in ratios])
    expected = [np.sum((rho[i, 1:] + rho[i, :-1]) / 2 * np.diff(tau)) / 3.0 for i in range(2)]
    np.testing.assert_allclose(profiles.benchmark_score(ratios, V06), expected, rtol=1e-12)


def test_exact_integral_of_a_step_profile():
    ratios = np.array([[1.0, 2.5, 5.0]])
    # Contributions: 3/3, 1.5/3, 0 -> mean 0.5.
    assert profiles.benchmark_score(ratios, V06, exact=True)[0] == pytest.approx(0.5)


def test_earliest_index_and_fastest_can_disagree():
    # Trial 1 reaches at eval 1 (time 30); trial 2 at eval 2 but sooner in time (25).
    slow_evals = trial([10, 30], [0.1, 0.9])
    fast_later = trial([5, 15, 25], [0.1, 0.2, 0.9])
    assert study_time([slow_evals, fast_later], TARGET, "earliest") == 30
    assert study_time([slow_evals, fast_later], TARGET, "fastest") == 25


def test_ties_at_the_same_index_go_to_the_smaller_time():
    a = trial([10, 30], [0.1, 0.9])
    b = trial([9, 28], [0.1, 0.9])
    assert study_time([a, b], TARGET, "earliest") == 28


def test_a_study_without_a_trial_reaching_the_target_is_infinite():
    assert study_time([trial([1, 2], [0.1, 0.2])], TARGET) == math.inf


def test_minimised_metrics_reach_at_or_below_the_target():
    loss = Target("loss", 0.3, False, 100.0)
    assert study_time([trial([1, 2, 3], [0.5, 0.3, 0.2])], loss) == 2


def test_median_over_an_even_number_of_studies():
    assert workload_time([10.0, 20.0]) == 15.0
    assert workload_time([10.0, 20.0, 40.0, math.inf]) == 30.0
    assert workload_time([10.0, math.inf]) == math.inf
    assert workload_time([]) == math.inf


def test_cutoff_keeps_four_times_the_best_and_drops_more():
    t = np.array([[10.0], [40.0], [40.0001]])
    assert profiles.apply_cutoff(t, 4.0)[:, 0].tolist() == [10.0, 40.0, math.inf]


def test_held_out_gating_caps_the_base_after_the_cutoff():
    # s1's variant (100) is > 4 x the best variant (20): cut; then s1's base follows it.
    t = np.array([[10.0, 100.0], [12.0, 20.0]])
    gated, kept = profiles.gate_held_out(t, ["base", "var"], {"var": "base"}, rules_lib.get("v0.5"))
    assert kept == ["base"]
    assert gated[:, 0].tolist() == [math.inf, 12.0]


def test_held_out_variant_is_gated_by_its_base_before_the_cutoff():
    # s1 never reaches the base, so its fast variant (5) is dropped BEFORE the cutoff; the best
    # variant is then s2's 30 and s2 keeps its base. In another order s2 would lose it.
    t = np.array([[math.inf, 5.0], [10.0, 30.0]])
    gated, _ = profiles.gate_held_out(t, ["base", "var"], {"var": "base"}, rules_lib.get("v0.5"))
    assert gated[:, 0].tolist() == [math.inf, 10.0]


def test_v05_gating_through_score(tmp_path):
    rules = dataclasses.replace(rules_lib.get("v0.5"), held_out_variants=("wa_var",))
    t = {**targets(), "wa_var": Target("accuracy", 0.5, True, 100.0, base="wa")}
    for sub, (base, var) in {"s1": (10, 100), "s2": (12, 20)}.items():
        write_trial(tmp_path, sub, 0, "wa", 1, reaching_at(base))
        write_trial(tmp_path, sub, 0, "wa_var", 1, reaching_at(var))
    result = score_lib.score([tmp_path], rules=rules, targets=t, bootstrap=0, exact=True)
    assert result.workloads == ["wa"]
    assert dict(zip(result.submissions, result.scores.tolist())) == {"s1": 0.0, "s2": 1.0}


def test_v06_does_not_score_variants(tmp_path):
    t = {**targets(), "wa_var": Target("accuracy", 0.5, True, 100.0, base="wa")}
    write_trial(tmp_path, "s1", 0, "wa", 1, reaching_at(10))
    write_trial(tmp_path, "s1", 0, "wa_var", 1, reaching_at(10))
    result = score_lib.score([tmp_path], targets=t, bootstrap=0)
    assert result.workloads == ["wa"]


def test_missing_workload_counts_as_infinite_and_is_reported(tmp_path):
    write_trial(tmp_path, "s1", 0, "wa", 1, reaching_at(10))
    write_trial(tmp_path, "s1", 0, "wb", 1, reaching_at(10))
    write_trial(tmp_path, "s2", 0, "wa", 1, reaching_at(10))
    result = run_score(tmp_path, exact=True)
    assert dict(zip(result.submissions, result.scores.tolist())) == {"s1": 1.0, "s2": 0.5}
    assert result.missing["s2"][0] == "wb: no logs (counted as infinite)"


def test_missing_studies_are_reported(tmp_path):
    for study in range(3):
        write_trial(tmp_path, "s1", study, "wa", 1, reaching_at(10 + study))
    write_trial(tmp_path, "s2", 0, "wa", 1, reaching_at(10))
    result = run_score(tmp_path)
    assert result.missing["s2"][0] == "wa: 1 of 3 studies"
    assert result.medians[("s1", "wa")] == 11.0


def test_runs_short_of_the_rule_set_are_reported(tmp_path):
    # v0.6 external tuning expects 3 studies x 5 trials per workload.
    for study in range(3):
        for trial in range(1, 6):
            write_trial(tmp_path, "full", study, "wa", trial, reaching_at(10))
    for trial in range(1, 3):
        write_trial(tmp_path, "short", 0, "wa", trial, reaching_at(10))
    result = run_score(tmp_path)
    assert "full" not in result.missing
    assert result.missing["short"] == [
        "wa: 1 of 3 studies",
        "fewer runs than v0.6 external tuning expects: wa (1/3 studies; fewer than 5 trials in "
        "study 0)",
    ]
    v05 = score_lib.score([tmp_path], rules="v0.5", targets=targets(), bootstrap=0)
    assert v05.missing["full"] == ["fewer runs than v0.5 external tuning expects: wa (3/5 studies)"]


def test_timestamped_sibling_folders_belong_to_their_submission(tmp_path):
    write_trial(tmp_path, "adamw-2024-05-06-07-08-09", 0, "wa", 1, reaching_at(10))
    write_trial(tmp_path, "adamw-2024-05-07-07-08-09", 1, "wa", 1, reaching_at(20))
    result = run_score(tmp_path)
    assert result.submissions == ["adamw"]
    assert result.medians[("adamw", "wa")] == 15.0


def test_bootstrap_is_seeded_and_brackets_the_score(tmp_path):
    for study, (a, b) in enumerate([(10, 30), (12, 25), (11, 40)]):
        write_trial(tmp_path, "s1", study, "wa", 1, reaching_at(a))
        write_trial(tmp_path, "s2", study, "wa", 1, reaching_at(b))
    r1 = score_lib.score([tmp_path], targets=targets(), bootstrap=300, seed=1)
    r2 = score_lib.score([tmp_path], targets=targets(), bootstrap=300, seed=1)
    np.testing.assert_array_equal(r1.score_ci, r2.score_ci)
    for i in range(2):
        assert r1.score_ci[i, 0] <= r1.scores[i] <= r1.score_ci[i, 1]
    assert r1.rank_ci[r1.submissions.index("s1")].tolist() == [1.0, 1.0]


def test_targets_file_overrides_the_registry(tmp_path):
    write_trial(tmp_path, "s1", 0, "mnist1d", 1, [(5.0, 0.5), (9.0, 0.8)])
    path = tmp_path / "targets.json"
    path.write_text(json.dumps({"mnist1d": {"target": 0.75}}))
    t = score_lib.load_targets_file(path, score_lib.targets_from_registry())
    result = score_lib.score([tmp_path], targets=t, bootstrap=0)
    assert result.medians[("s1", "mnist1d")] == 9.0


times_matrix = st.lists(
    st.lists(st.one_of(st.floats(1.0, 1e4), st.just(math.inf)), min_size=3, max_size=3),
    min_size=2,
    max_size=4,
)


@settings(max_examples=60, deadline=None)
@given(times=times_matrix, exact=st.booleans())
def test_scores_lie_in_zero_one(times, exact):
    ratios = profiles.performance_ratios(profiles.apply_cutoff(np.array(times), 4.0))
    s = profiles.benchmark_score(ratios, V06, exact=exact)
    assert np.all((s >= 0.0) & (s <= 1.0 + 1e-12))


@settings(max_examples=60, deadline=None)
@given(times=times_matrix)
def test_the_best_on_every_workload_scores_one(times):
    t = np.array(times)
    t[0] = np.where(np.isfinite(t).any(axis=0), np.min(t, axis=0) * 0.5, 1.0)
    ratios = profiles.performance_ratios(profiles.apply_cutoff(t, 4.0))
    assert profiles.benchmark_score(ratios, V06)[0] == pytest.approx(1.0)
    assert profiles.benchmark_score(ratios, V06, exact=True)[0] == pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(times=times_matrix, scale=st.floats(0.01, 100.0))
def test_scaling_every_time_changes_nothing(times, scale):
    t = np.array(times)
    base = profiles.benchmark_score(
        profiles.performance_ratios(profiles.apply_cutoff(t, 4.0)), V06, exact=True
    )
    scaled = profiles.benchmark_score(
        profiles.performance_ratios(profiles.apply_cutoff(t * scale, 4.0)), V06, exact=True
    )
    np.testing.assert_allclose(base, scaled, rtol=1e-9, atol=1e-12)


def test_trapezoid_known_answer_between_grid_points():
    # tau_i = 1 + i h, h = 3/99. r = 1.52 lies in (tau_17, tau_18): rho is 0 up to tau_17, 1 from
    # tau_18, so the trapezoids give h/2 + (98 - 17) h = 81.5 h; divided by 3: 81.5 / 99.
    got = profiles.benchmark_score(np.array([[1.52]]), V06)[0]
    assert got == pytest.approx(81.5 / 99, rel=1e-12)
    assert profiles.benchmark_score(np.array([[1.52]]), V06, exact=True)[0] == pytest.approx(
        2.48 / 3
    )


def test_score_command_known_answer_on_registry_workloads(tmp_path, capsys):
    # criteo1tb: loss, minimised (<= 0.123735); fastmri: ssim, maximised (>= 0.723653).
    # A: criteo 1000 s, fastmri 2500 s; B: criteo 1520 s, fastmri 1000 s.
    # Ratios: A (1, 2.5), B (1.52, 1). Trapezoid per workload: r = 1 -> 1; r = 2.5 (between
    # tau_49 and tau_50) -> 49.5 h / 3 = 0.5; r = 1.52 -> 81.5 / 99. Score = mean over workloads.
    from scoring_logs import write_curve

    from scoring import cli as scoring_cli

    logs = tmp_path / "logs"
    for sub, (tc, tf) in {"A": (1000.0, 2500.0), "B": (1520.0, 1000.0)}.items():
        write_curve(logs, sub, 0, "criteo1tb", 1, [tc / 2, tc, tc + 10], [0.2, 0.12, 0.11], "loss")
        write_curve(logs, sub, 0, "fastmri", 1, [tf / 2, tf], [0.5, 0.75], "ssim")
    out = tmp_path / "out"
    assert scoring_cli.main(["score", str(logs), "--out", str(out), "--bootstrap", "0"]) == 0
    rows = [line.split(",") for line in (out / "scores.csv").read_text().splitlines()]
    got = {r[0]: float(r[1]) for r in rows[1:]}
    assert got["A"] == pytest.approx((1 + 0.5) / 2, rel=1e-12)
    assert got["B"] == pytest.approx((81.5 / 99 + 1) / 2, rel=1e-12)
    assert [r[0] for r in rows[1:]] == ["B", "A"]
    times = (out / "time_to_targets.csv").read_text().splitlines()
    assert times == ["submission,criteo1tb,fastmri", "A,1000.0,2500.0", "B,1520.0,1000.0"]
    assert (
        scoring_cli.main(["score", str(logs), "--out", str(out), "--bootstrap", "0", "--exact"])
        == 0
    )
    rows = [line.split(",") for line in (out / "scores.csv").read_text().splitlines()]
    assert {r[0]: float(r[1]) for r in rows[1:]}["B"] == pytest.approx((2.48 / 3 + 1) / 2)


def test_fastest_selection_through_the_command(tmp_path):
    from scoring import cli as scoring_cli

    logs = tmp_path / "logs"
    # Trial 1 reaches at its 2nd eval (30 s); trial 2 at its 3rd eval but at 25 s.
    write_trial(logs, "s1", 0, "wa", 1, [(10, 0.1), (30, 0.9)])
    write_trial(logs, "s1", 0, "wa", 2, [(5, 0.1), (15, 0.2), (25, 0.9)])
    targets_file = tmp_path / "t.json"
    targets_file.write_text(json.dumps(TARGETS))
    common = ["score", str(logs), "--targets", str(targets_file), "--bootstrap", "0"]
    for select, expected in (("earliest", "30.0"), ("fastest", "25.0")):
        out = tmp_path / select
        assert scoring_cli.main([*common, "--out", str(out), "--select", select]) == 0
        assert (out / "time_to_targets.csv").read_text().splitlines()[1] == f"s1,{expected}"


def test_v05_preset_gates_registry_bases_by_their_held_out_variant(tmp_path):
    # criteo1tb_embed_init is v0.5's held-out variant of criteo1tb. A is fastest on the base but
    # never reaches the variant's target: under v0.5 its base is infinite; v0.6 ignores variants.
    from scoring_logs import write_curve

    from scoring import cli as scoring_cli

    logs = tmp_path / "logs"
    write_curve(logs, "A", 0, "criteo1tb", 1, [50.0, 100.0], [0.2, 0.1], "loss")
    write_curve(logs, "A", 0, "criteo1tb_embed_init", 1, [50.0, 100.0], [0.2, 0.19], "loss")
    write_curve(logs, "B", 0, "criteo1tb", 1, [75.0, 150.0], [0.2, 0.1], "loss")
    write_curve(logs, "B", 0, "criteo1tb_embed_init", 1, [100.0, 200.0], [0.2, 0.1], "loss")
    results = {}
    for rules in ("v0.5", "v0.6"):
        out = tmp_path / rules
        argv = ["score", str(logs), "--rules", rules, "--out", str(out), "--bootstrap", "0"]
        assert scoring_cli.main(argv) == 0
        rows = [line.split(",") for line in (out / "scores.csv").read_text().splitlines()[1:]]
        results[rules] = {r[0]: float(r[1]) for r in rows}
    assert results["v0.5"] == {"B": 1.0, "A": 0.0}
    # v0.6: B's ratio is 1.5 (tau index 16.5 of 0..99): 82.5 h / 3 = 82.5 / 99.
    assert results["v0.6"]["A"] == 1.0
    assert results["v0.6"]["B"] == pytest.approx(82.5 / 99, rel=1e-12)


def test_v05_held_out_variants_are_registered_variants():
    from workloads import registry

    known = registry.all_workloads()
    for name in rules_lib.get("v0.5").held_out_variants:
        if name in known:  # workloads still being added are checked once they are registered
            assert known[name].base is not None and known[name].base in known


def test_bootstrap_time_interval_with_unreached_studies_has_no_nan(tmp_path):
    # Studies (10, inf, inf): a resampled median is 10 with probability 7/27 (> 2.5%), else inf.
    write_trial(tmp_path, "s1", 0, "wa", 1, reaching_at(10))
    for study in (1, 2):
        write_trial(tmp_path, "s1", study, "wa", 1, [(5.0, 0.1)])
    result = score_lib.score([tmp_path], targets=targets(), bootstrap=500, seed=0)
    assert result.medians[("s1", "wa")] == math.inf
    assert result.time_ci[("s1", "wa")] == (10.0, math.inf)
    assert result.rank_ci.tolist() == [[1.0, 1.0]]


v05_matrix = st.lists(
    st.lists(st.one_of(st.floats(1.0, 1e4), st.just(math.inf)), min_size=4, max_size=4),
    min_size=2,
    max_size=4,
)
V05_COLUMNS = ["a", "b", "a_var", "b_var"]
V05_HELD = {"a_var": "a", "b_var": "b"}


@settings(max_examples=60, deadline=None)
@given(times=v05_matrix, scale=st.floats(0.01, 100.0), exact=st.booleans())
def test_v05_pipeline_properties(times, scale, exact):
    # Through gating, cutoff, ratios and the integral: scores in [0, 1] and invariant to the unit
    # of time.
    t = np.array(times)
    rules = rules_lib.get("v0.5")
    _, kept, _, s = score_lib._pipeline(t, V05_COLUMNS, V05_HELD, rules, exact)
    _, _, _, s_scaled = score_lib._pipeline(t * scale, V05_COLUMNS, V05_HELD, rules, exact)
    assert kept == ["a", "b"]
    assert np.all((s >= 0.0) & (s <= 1.0 + 1e-12))
    np.testing.assert_allclose(s, s_scaled, rtol=1e-9, atol=1e-12)
    # A submission whose base times are infinite scores 0 whatever its variants do.
    t_dead = t.copy()
    t_dead[0, :2] = np.inf
    _, _, _, s_dead = score_lib._pipeline(t_dead, V05_COLUMNS, V05_HELD, rules, exact)
    assert s_dead[0] == 0.0


def test_tuning_and_scoring_read_one_preset_per_rule_set():
    # One home for rule-set facts: the runner's budget (tuning.budget_multiplier), `tune`'s plan
    # (tuning.RULE_SETS) and the scorer's rules are the same object, not copies kept in step.
    from algoperf import rulesets, tuning

    assert set(tuning.RULE_SETS) == set(rules_lib.RULES) == set(rulesets.PRESETS)
    for name in rulesets.PRESETS:
        assert tuning.RULE_SETS[name] is rules_lib.get(name) is rulesets.get(name)
        for ruleset in ("external", "self"):
            assert tuning.budget_multiplier(ruleset, name) == rulesets.get(
                name
            ).budget_multiplier(ruleset)
    assert tuning.budget_multiplier("self", "v0.6") == 1.5
    assert tuning.budget_multiplier("self", "v0.5") == 3.0
    assert tuning.budget_multiplier("external", "v0.5") == 1.0


def test_scorer_budget_is_the_runner_budget(tmp_path):
    # The budget the scorer checks rows against is the one the runner ran under: the workload's
    # max_allowed_runtime_sec x the same preset's multiplier.
    from algoperf import tuning
    from workloads import registry

    info = registry.get("fastmri")
    for name in rules_lib.RULES:
        for ruleset in ("external", "self"):
            budget = score_lib.targets_from_registry(ruleset, name)["fastmri"].budget
            assert budget == info.max_allowed_runtime_sec * tuning.budget_multiplier(ruleset, name)


def test_rule_set_presets_import_without_any_framework():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for name in ('torch', 'jax', 'tensorflow', 'scipy'):\n"
        "    sys.modules[name] = None\n"
        "from algoperf import rulesets\n"
        "from scoring import rules\n"
        "assert rules.get('v0.5').held_out_variants\n"
    )
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=repo
    )
    assert done.returncode == 0, done.stderr


def test_unknown_tuning_ruleset_is_an_error_naming_it():
    with pytest.raises(ValueError, match="unknown tuning ruleset 'selfish'"):
        rules_lib.get("v0.6").budget_multiplier("selfish")
