"""Scoring reads this harness's logs and the reference's, and never crashes on bad ones."""

from __future__ import annotations

import math

from scoring_logs import HEADER, TARGETS, reaching_at, write_trial

from algoperf import cli
from scoring import score as score_lib
from scoring.logs import Target

HEADER_COLUMNS = HEADER.split(",")


def targets() -> dict[str, Target]:
    return {
        w: Target(t["metric"], t["target"], t["higher_is_better"], t["budget"])
        for w, t in TARGETS.items()
    }


def score(root):
    return score_lib.score([root], targets=targets(), bootstrap=0)


def test_truncated_csv_warns_and_counts_as_not_reached(tmp_path):
    path = write_trial(tmp_path, "s1", 0, "wa", 1, reaching_at(10, index=2))
    text = path.read_text()
    path.write_text(text[: len(text) - 30])
    write_trial(tmp_path, "s2", 0, "wa", 1, reaching_at(12))
    result = score(tmp_path)
    assert any(str(path) in w and "truncated" in w for w in result.warnings)
    assert result.medians[("s1", "wa")] == math.inf


def test_unreadable_bytes_warn(tmp_path):
    path = write_trial(tmp_path, "s1", 0, "wa", 1, reaching_at(10))
    path.write_bytes(b"\xff\xfe\x00garbage")
    result = score(tmp_path)
    assert any(str(path) in w for w in result.warnings)


def test_missing_metric_column_warns(tmp_path):
    path = write_trial(tmp_path, "s1", 0, "wa", 1, reaching_at(10))
    path.write_text(path.read_text().replace("validation/accuracy", "validation/acc"))
    write_trial(tmp_path, "s2", 0, "wa", 1, reaching_at(12))
    result = score(tmp_path)
    assert any("no validation/accuracy column" in w and str(path) in w for w in result.warnings)
    assert result.medians[("s1", "wa")] == math.inf


def test_unknown_workload_warns_and_is_not_scored(tmp_path):
    write_trial(tmp_path, "s1", 0, "wa", 1, reaching_at(10))
    strange = write_trial(tmp_path, "s1", 0, "teleportation", 1, reaching_at(10))
    result = score(tmp_path)
    assert result.workloads == ["wa"]
    assert any(str(strange) in w and "not in the registry" in w for w in result.warnings)


def test_mixed_frameworks_keep_the_majority_and_name_the_other_files(tmp_path):
    write_trial(tmp_path, "s1", 0, "wa", 1, reaching_at(10), framework="pytorch")
    write_trial(tmp_path, "s1", 0, "wa", 2, reaching_at(12), framework="pytorch")
    odd = write_trial(tmp_path, "s1", 0, "wa", 3, reaching_at(2), framework="jax")
    result = score(tmp_path)
    assert result.medians[("s1", "wa")] == 10.0  # the faster jax trial is not counted
    warning = next(w for w in result.warnings if "several frameworks" in w)
    assert str(odd) in warning and "jax, pytorch" in warning and "only the pytorch" in warning


def test_logs_under_a_team_folder_and_a_submission_folder_given_directly(tmp_path):
    write_trial(tmp_path / "team_a", "adamw", 0, "wa", 1, reaching_at(10))
    write_trial(tmp_path / "team_b", "sgd", 0, "wa", 1, reaching_at(20))
    result = score(tmp_path)
    assert result.submissions == ["adamw", "sgd"]
    alone = score_lib.score([tmp_path / "team_b" / "sgd"], targets=targets(), bootstrap=0)
    assert alone.submissions == ["sgd"] and alone.medians[("sgd", "wa")] == 20.0


def test_reference_layout_without_study_folders_and_trial_0(tmp_path):
    # The reference's older layout: <experiment>-<timestamp>/<workload>_<framework>/trial_<i>/,
    # trials counted from 0; it is read as study 0 of <experiment>.
    path = write_trial(tmp_path, "x", 0, "wa", 0, reaching_at(10, index=1))
    old = tmp_path / "exp-2023-10-11-16-58-40" / "wa_jax" / "trial_0"
    old.mkdir(parents=True)
    path.rename(old / "eval_measurements.csv")
    result = score(tmp_path)
    assert result.submissions == ["exp"]
    assert result.study_times[("exp", "wa")] == {0: 10.0}
    assert result.trials[0].framework == "jax" and result.trials[0].trial == 0


def test_reference_rows_with_empty_and_nan_metrics(tmp_path):
    # The reference writes an empty cell where a split was not evaluated, and nan after divergence.
    path = write_trial(tmp_path, "s1", 0, "wa", 1, [(5.0, 0.1), (9.0, 0.2), (12.0, 0.9)])
    lines = path.read_text().splitlines()
    cells = lines[1].split(",")
    cells[HEADER_COLUMNS.index("validation/accuracy")] = ""
    lines[1] = ",".join(cells)
    lines[2] = lines[2].replace(",0.2,", ",nan,")
    path.write_text("\n".join(lines) + "\n")
    result = score(tmp_path)
    assert result.warnings == []
    assert result.medians[("s1", "wa")] == 12.0


def test_development_workloads_stay_out_of_the_benchmark_score(tmp_path, capsys):
    from scoring_logs import write_curve

    write_curve(tmp_path, "s1", 0, "fastmri", 1, [10.0], [0.9], "ssim")
    write_curve(tmp_path, "s2", 0, "fastmri", 1, [20.0], [0.9], "ssim")
    write_curve(tmp_path, "s2", 0, "mnist", 1, [1.0], [0.999], "accuracy")
    result = score_lib.score([tmp_path], bootstrap=0)
    assert result.workloads == ["fastmri"]
    assert any("mnist is a development workload" in w for w in result.warnings)
    only = score_lib.score([tmp_path], workloads=["mnist"], bootstrap=0)
    assert only.workloads == ["mnist"]
    assert only.missing["s1"] == ["mnist: no logs (counted as infinite)"]
    assert (
        cli.main(["score", str(tmp_path), "--out", str(tmp_path / "o"), "--workloads", "wmt"]) == 2
    )
    assert "--workloads wmt: no logs" in capsys.readouterr().err


def test_workload_times_table_has_bootstrap_intervals(tmp_path):
    for study, t in enumerate((10.0, 20.0, 30.0)):
        write_trial(tmp_path / "logs", "s1", study, "wa", 1, reaching_at(t))
    write_trial(tmp_path / "logs", "s2", 0, "wa", 1, reaching_at(100.0))
    result = score_lib.score([tmp_path / "logs"], targets=targets(), bootstrap=200, seed=3)
    score_lib.write_outputs(result, tmp_path / "out")
    rows = (tmp_path / "out" / "workload_times.csv").read_text().splitlines()
    assert (
        rows[0] == "submission,workload,time,time_low,time_high,studies,studies_reached,scored_time"
    )
    s1 = rows[1].split(",")
    assert s1[:3] == ["s1", "wa", "20.0"] and s1[5:] == ["3", "3", "20.0"]
    assert 10.0 <= float(s1[3]) <= 20.0 <= float(s1[4]) <= 30.0
    assert rows[2].split(",")[-1] == "inf"  # 100 > 4 x 20: cut off


def test_empty_logs_dir_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["score", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "No eval_measurements.csv found" in capsys.readouterr().err


def test_score_command_writes_every_table(tmp_path, capsys):
    for sub, t in (("s1", 10.0), ("s2", 30.0)):
        write_trial(tmp_path / "logs", sub, 0, "mnist1d", 1, [(t / 2, 0.5), (t, 0.99)])
    out = tmp_path / "out"
    assert cli.main(["score", str(tmp_path / "logs"), "--out", str(out), "--bootstrap", "50"]) == 0
    printed = capsys.readouterr().out
    assert printed.index("s1") < printed.index("s2")  # ranked
    lines = (out / "scores.csv").read_text().splitlines()
    assert lines[0].startswith("submission,score,score_low,score_high")
    assert lines[1].split(",")[:2] == ["s1", "1.0"]
    ttt = (out / "time_to_targets.csv").read_text().splitlines()
    assert ttt[0] == "submission,mnist1d" and "s2,30.0" in ttt
    assert (out / "performance_profile.csv").read_text().count("\n") == 101
    assert "trial" in (out / "trials.csv").read_text().splitlines()[0]


def test_bad_targets_files_are_usage_errors(tmp_path, capsys):
    write_trial(tmp_path / "logs", "s1", 0, "wa", 1, reaching_at(10))
    for name, text, expected in (
        ("broken.json", "{", "cannot be read as JSON"),
        ("list.json", "[1, 2]", "expected an object"),
        ("no_target.json", '{"wa": {"metric": "accuracy"}}', "entry 'wa' needs a numeric 'target'"),
        (
            "text_target.json",
            '{"wa": {"metric": "accuracy", "target": "high"}}',
            "numeric 'target'",
        ),
    ):
        path = tmp_path / name
        path.write_text(text)
        argv = [
            "score",
            str(tmp_path / "logs"),
            "--targets",
            str(path),
            "--out",
            str(tmp_path / "o"),
        ]
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert str(path) in err and expected in err


def test_unwritable_out_is_a_usage_error(tmp_path, capsys):
    write_trial(tmp_path / "logs", "s1", 0, "mnist1d", 1, reaching_at(10))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    assert (
        cli.main(["score", str(tmp_path / "logs"), "--out", str(blocker), "--bootstrap", "0"]) == 2
    )
    assert "cannot write to --out" in capsys.readouterr().err


def test_nul_bytes_and_non_numeric_cells_warn(tmp_path):
    nul = write_trial(tmp_path, "s1", 0, "wa", 1, reaching_at(10))
    nul.write_bytes(nul.read_bytes().replace(b"0.9", b"\x00.9"))
    word = write_trial(tmp_path, "s2", 0, "wa", 1, reaching_at(10))
    word.write_text(word.read_text().replace(",0.9,", ",high,"))
    write_trial(tmp_path, "s3", 0, "wa", 1, reaching_at(12))
    result = score(tmp_path)
    assert {str(nul), str(word)} <= {w.split(": ")[0] for w in result.warnings}
    assert result.medians[("s1", "wa")] == result.medians[("s2", "wa")] == math.inf
    assert result.medians[("s3", "wa")] == 12.0


def test_score_and_report_run_without_any_framework(tmp_path):
    # torch and jax made unimportable: scoring reads files and registry metadata only.
    import subprocess
    import sys

    write_trial(tmp_path / "logs", "s1", 0, "mnist1d", 1, [(5.0, 0.5), (9.0, 0.99)])
    code = (
        "import sys\n"
        "for name in ('torch', 'jax', 'tensorflow', 'algoperf.runner'):\n"
        "    sys.modules[name] = None\n"
        "from scoring import cli\n"
        f"args = [{str(tmp_path / 'logs')!r}, '--out', {str(tmp_path / 'out')!r}, '--bootstrap', '20']\n"
        "assert cli.main(['score', *args]) == 0\n"
        "assert cli.main(['report', *args]) == 0\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "report.html").exists()
