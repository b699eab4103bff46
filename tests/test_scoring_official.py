"""The scorer checks what it scores (RULES.md, Scoring; scoring/official.py).

Logs written by this harness carry flags_<p>.json: their rows past the budget never count, and a
run with flags the rules fix is unofficial (left out unless --include-unofficial). Logs of the
reference harness (no flags file, or absl's) are scored as the reference scorer does.
"""

from __future__ import annotations

import csv
import json
import math

import pytest
from scoring_logs import (
    TARGETS,
    reaching_at,
    write_flags,
    write_reference_flags,
    write_trial,
)

from scoring import cli  # `algoperf score` is this sub-command
from scoring import score as score_lib
from scoring.logs import Target

PAST_BUDGET = [(50.0, 0.1), (120.0, 0.9)]  # reaches the target at 120 s; the budget is 100 s


def targets() -> dict[str, Target]:
    return {
        w: Target(t["metric"], t["target"], t["higher_is_better"], t["budget"])
        for w, t in TARGETS.items()
    }


def score(root, **kw):
    return score_lib.score([root], targets=targets(), bootstrap=0, **kw)


def trials_csv(result, out) -> dict[tuple[str, int, int], dict[str, str]]:
    score_lib.write_outputs(result, out)
    with open(out / "trials.csv", newline="") as f:
        return {(r["submission"], int(r["study"]), int(r["trial"])): r for r in csv.DictReader(f)}


# ---- the budget ------------------------------------------------------------------------------
def test_rows_past_the_budget_never_count_in_our_logs(tmp_path):
    write_flags(write_trial(tmp_path, "late", 0, "wa", 1, PAST_BUDGET))
    write_flags(write_trial(tmp_path, "edge", 0, "wa", 1, [(50.0, 0.1), (100.0, 0.9)]))
    result = score(tmp_path)
    assert result.medians[("late", "wa")] == math.inf
    assert result.medians[("edge", "wa")] == 100.0  # at the budget is not past it
    rows = trials_csv(result, tmp_path / "out")
    assert rows[("late", 0, 1)]["evals_past_budget"] == "1"
    assert rows[("late", 0, 1)]["num_evals"] == "1"
    assert rows[("late", 0, 1)]["harness"] == "algoperf"
    assert rows[("edge", 0, 1)]["evals_past_budget"] == "0"
    assert "late: 1 eval row(s) past the budget not counted" in (
        tmp_path / "out" / "missing.txt"
    ).read_text()


def test_a_row_past_the_budget_cannot_win_the_study(tmp_path):
    # Trial 1 reaches at eval index 1 but past the budget (120 s); trial 2 at index 2, 90 s.
    # The reference's earliest-index selection would take trial 1 if its row counted.
    write_flags(write_trial(tmp_path, "s1", 0, "wa", 1, PAST_BUDGET))
    write_flags(write_trial(tmp_path, "s1", 0, "wa", 2, [(30.0, 0.1), (60.0, 0.2), (90.0, 0.9)]))
    assert score(tmp_path).medians[("s1", "wa")] == 90.0


def test_reference_logs_are_scored_without_a_budget_check(tmp_path):
    # As the reference scorer: the published v0.5 scores include rows past the budget.
    write_trial(tmp_path, "no_flags", 0, "wa", 1, PAST_BUDGET)
    write_reference_flags(write_trial(tmp_path, "absl_flags", 0, "wa", 1, PAST_BUDGET))
    result = score(tmp_path)
    assert result.medians[("no_flags", "wa")] == 120.0
    assert result.medians[("absl_flags", "wa")] == 120.0
    rows = trials_csv(result, tmp_path / "out")
    for key in (("no_flags", 0, 1), ("absl_flags", 0, 1)):
        assert rows[key]["harness"] == "reference"
        assert rows[key]["evals_past_budget"] == "0" and rows[key]["counted"] == "yes"


def test_reference_logs_with_changed_flags_are_not_judged_by_our_flags(tmp_path):
    # The reference's max_global_steps is not our max_steps: its logs are scored as they are.
    path = write_trial(tmp_path, "s1", 0, "wa", 1, reaching_at(30))
    flags = write_reference_flags(path)
    flags.write_text(json.dumps({**json.loads(flags.read_text()), "max_global_steps": 10}))
    assert score(tmp_path).medians[("s1", "wa")] == 30.0


# ---- unofficial runs -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"data": "synthetic"}, "data=synthetic"),
        ({"max_runtime": 60.0}, "max_runtime=60.0"),
        ({"eval_every": 5}, "eval_every=5"),
        ({"batch_size": 8}, "batch_size=8"),
        ({"max_steps": 10}, "max_steps=10"),
    ],
)
def test_a_run_with_a_changed_flag_is_unofficial(tmp_path, change, reason):
    write_flags(write_trial(tmp_path, "s1", 0, "wa", 1, reaching_at(40)))
    write_flags(write_trial(tmp_path, "s1", 0, "wa", 2, reaching_at(20)), **change)  # faster
    result = score(tmp_path)
    assert result.medians[("s1", "wa")] == 40.0  # trial 2 is left out
    rows = trials_csv(result, tmp_path / "out")
    assert rows[("s1", 0, 2)]["counted"] == "no"
    assert rows[("s1", 0, 2)]["unofficial"].startswith(reason + " (")
    assert rows[("s1", 0, 2)]["time_to_target"] == "20.0"  # listed with its time all the same
    assert rows[("s1", 0, 1)]["counted"] == "yes" and rows[("s1", 0, 1)]["unofficial"] == ""
    included = score(tmp_path, include_unofficial=True)
    assert included.medians[("s1", "wa")] == 20.0
    assert trials_csv(included, tmp_path / "out2")[("s1", 0, 2)]["counted"] == "yes"


def test_default_flags_and_missing_keys_are_official(tmp_path):
    # A key that is missing or null means the flag's default.
    write_flags(write_trial(tmp_path, "full", 0, "wa", 1, reaching_at(30)))
    sparse = write_trial(tmp_path, "sparse", 0, "wa", 1, reaching_at(30))
    (sparse.parent / "flags_0.json").write_text(json.dumps({"workload": "wa", "data": None}))
    result = score(tmp_path)
    assert all(not t.unofficial and t.harness == "algoperf" for t in result.trials)
    assert result.medians[("full", "wa")] == result.medians[("sparse", "wa")] == 30.0


def test_a_resumed_run_with_a_changed_flag_is_unofficial(tmp_path):
    path = write_trial(tmp_path, "s1", 0, "wa", 1, reaching_at(30))
    write_flags(path, preemption=0)
    write_flags(path, preemption=1, max_steps=500)
    write_flags(write_trial(tmp_path, "s2", 0, "wa", 1, reaching_at(60)))
    result = score(tmp_path)
    assert result.trials[0].unofficial == ("max_steps=500 (a step cap the rules do not have)",)
    assert result.medians[("s1", "wa")] == math.inf
    assert result.missing["s1"][0] == "wa: only unofficial trials (counted as infinite)"
    assert "1 unofficial trial(s) left out" in result.missing["s1"][1]


def test_a_run_under_another_rule_set_is_unofficial(tmp_path):
    write_flags(write_trial(tmp_path, "self", 0, "wa", 1, reaching_at(30)), ruleset="self")
    write_flags(write_trial(tmp_path, "old", 0, "wa", 1, reaching_at(30)), rules="v0.5")
    write_flags(write_trial(tmp_path, "ok", 0, "wa", 1, reaching_at(60)))
    reasons = {t.submission: t.unofficial for t in score(tmp_path).trials}
    assert reasons == {
        "self": ("ruleset=self (scored as external tuning)",),
        "old": ("rules=v0.5 (scored under v0.6)",),
        "ok": (),
    }
    as_self = score_lib.score([tmp_path], targets=targets(), bootstrap=0, ruleset="self")
    assert {t.submission for t in as_self.trials if not t.unofficial} == {"self"}


def test_an_unreadable_flags_file_makes_the_trial_unofficial(tmp_path):
    path = write_trial(tmp_path, "s1", 0, "wa", 1, reaching_at(30))
    (path.parent / "flags_0.json").write_text('{"data": "re')
    write_flags(write_trial(tmp_path, "s2", 0, "wa", 1, reaching_at(60)))
    result = score(tmp_path)
    assert result.trials[0].unofficial == (
        "flags_0.json cannot be read, so how the trial ran cannot be checked",
    )
    assert any(str(path.parent / "flags_0.json") in w for w in result.warnings)
    assert result.medians[("s1", "wa")] == math.inf


def test_smoke_runs_in_another_framework_do_not_displace_the_official_ones(tmp_path):
    # One framework is scored per submission and workload: the one with the most official
    # trials, not the one with the most trials (here three synthetic-data jax runs).
    write_flags(write_trial(tmp_path, "s1", 0, "wa", 1, reaching_at(30)))
    for trial in (1, 2, 3):
        smoke = write_trial(tmp_path, "s1", 0, "wa", trial, reaching_at(5), framework="jax")
        write_flags(smoke, data="synthetic", framework="jax")
    result = score(tmp_path)
    assert result.medians[("s1", "wa")] == 30.0
    assert sum("several frameworks" in w for w in result.warnings) == 3


# ---- through `algoperf score` ----------------------------------------------------------------
def write_targets(tmp_path):
    path = tmp_path / "targets.json"
    path.write_text(json.dumps(TARGETS))
    return path


def test_score_command_leaves_unofficial_trials_out_unless_asked(tmp_path, capsys):
    logs = tmp_path / "logs"
    write_flags(write_trial(logs, "official", 0, "wa", 1, reaching_at(40)))
    write_flags(write_trial(logs, "smoke", 0, "wa", 1, reaching_at(20)), data="synthetic")
    common = ["score", str(logs), "--targets", str(write_targets(tmp_path)), "--bootstrap", "0"]

    def scores(out):
        rows = (out / "scores.csv").read_text().splitlines()[1:]
        return {r.split(",")[0]: float(r.split(",")[1]) for r in rows}

    assert cli.main([*common, "--exact", "--out", str(tmp_path / "a")]) == 0
    assert scores(tmp_path / "a") == {"official": 1.0, "smoke": 0.0}
    missing = (tmp_path / "a" / "missing.txt").read_text()
    assert "smoke: wa: only unofficial trials (counted as infinite)" in missing
    assert "smoke: 1 unofficial trial(s) left out (see trials.csv; --include-unofficial" in missing
    argv = [*common, "--exact", "--include-unofficial", "--out", str(tmp_path / "b")]
    assert cli.main(argv) == 0
    # smoke 20 s is the best; official 40 s has ratio 2: (4 - 2) / 3.
    assert scores(tmp_path / "b") == pytest.approx({"official": 2 / 3, "smoke": 1.0})


def test_score_command_with_only_unofficial_trials_says_so(tmp_path, capsys):
    logs = tmp_path / "logs"
    write_flags(write_trial(logs, "smoke", 0, "wa", 1, reaching_at(20)), max_steps=10)
    argv = ["score", str(logs), "--targets", str(write_targets(tmp_path)), "--out", str(tmp_path)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "All 1 trials" in err and "max_steps=10" in err and "--include-unofficial" in err


def test_self_tuning_scores_against_the_presets_longer_budget(tmp_path):
    # --targets budget 100 s is the workload's; self-tuning (v0.6) multiplies it by 1.5, so a
    # self-tuning run's row at 120 s counts there and is past the budget under external tuning.
    logs = tmp_path / "logs"
    write_flags(write_trial(logs, "s1", 0, "wa", 1, PAST_BUDGET), ruleset="self")
    common = ["score", str(logs), "--targets", str(write_targets(tmp_path)), "--bootstrap", "0"]
    assert cli.main([*common, "--ruleset", "self", "--out", str(tmp_path / "self")]) == 0
    ttt = (tmp_path / "self" / "time_to_targets.csv").read_text().splitlines()
    assert ttt == ["submission,wa", "s1,120.0"]
    argv = [*common, "--include-unofficial", "--out", str(tmp_path / "external")]
    assert cli.main(argv) == 0
    ttt = (tmp_path / "external" / "time_to_targets.csv").read_text().splitlines()
    assert ttt == ["submission,wa", "s1,inf"]
