"""`algoperf report`: the HTML page (self-contained, rendered in headless Chromium) and Markdown."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scoring_logs import write_curve

from algoperf import cli

META = {
    "git_hash": "0123456789abcdef0123456789abcdef01234567",
    "hardware": {"cpu": "Test CPU 9000", "cpu_count": 8, "accelerators": ["Test GPU"] * 8},
    "packages": {"algoperf": "0.1.0", "numpy": "2.0.0", "torch": "2.5.0"},
}


def make_logs(root: Path) -> Path:
    """3 submissions x 2 registry workloads x 3 studies x 2 trials, with meta_data files."""
    rng = np.random.default_rng(0)
    speeds = {"fast": 1.0, "middle": 1.3, "slow": 2.2}
    specs = {"criteo1tb": ("loss", 0.20, 0.12), "fastmri": ("ssim", 0.50, 0.75)}
    for sub, speed in speeds.items():
        for workload, (metric, start, end) in specs.items():
            for study in range(3):
                for trial in (1, 2):
                    t = np.linspace(100, 3000, 30)
                    scale = 600 * speed * rng.uniform(0.9, 1.1) * (1 + 0.2 * trial)
                    values = end + (start - end) * np.exp(-t / scale)
                    path = write_curve(
                        root, sub, study, workload, trial, list(t), list(values), metric
                    )
                    (path.parent / "meta_data_0.json").write_text(json.dumps(META))
    return root


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    logs = make_logs(tmp / "logs")
    out = tmp / "report"
    assert cli.main(["report", str(logs), "--out", str(out), "--bootstrap", "200"]) == 0
    return out


def test_report_files_and_figures(report_dir):
    for stem in ("performance_profiles", "time_to_target", "curves_criteo1tb", "curves_fastmri"):
        assert (report_dir / f"{stem}.png").stat().st_size > 5_000
        assert (report_dir / f"{stem}.svg").read_text().lstrip().startswith("<?xml")
    for name in ("scores.csv", "time_to_targets.csv", "workload_times.csv", "trials.csv"):
        assert (report_dir / name).exists()


def test_html_is_self_contained(report_dir):
    page = (report_dir / "report.html").read_text()
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert len(sources) == 4 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<link" not in page and "<script" not in page


def test_markdown_leaderboard_is_ranked_with_intervals(report_dir):
    md = (report_dir / "report.md").read_text()
    rows = [line for line in md.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [r.split("|")[2].strip() for r in rows] == ["fast", "middle", "slow"]
    cells = rows[0].split("|")
    assert cells[3].strip() == "1.0000" and re.fullmatch(r" \[\d\.\d{3}, \d\.\d{3}\] ", cells[4])
    assert cells[6].strip() == "1.00" and cells[7].strip() == "1.00"  # fast is best on both


def test_provenance_names_rules_hardware_packages_and_git_hashes(report_dir):
    md = (report_dir / "report.md").read_text()
    prov = md[md.index("## Provenance") :]
    assert "v0.6, external tuning" in prov
    assert "Test CPU 9000 x8, Test GPU" in prov
    assert "torch 2.5.0" in prov
    assert "0123456789ab" in prov  # the runs' harness git hash
    assert "scored by" in prov


@pytest.mark.slow
def test_report_renders_in_headless_chromium(report_dir, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (`make browser` installs it)")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1280,2000",
            (report_dir / "report.html").as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=float)
    assert pixels.shape == (2000, 1280, 3)
    gray = pixels.mean(axis=2)
    assert gray.std() > 20  # text, tables and plots, not a blank page
    assert (gray < 100).mean() > 0.005  # dark ink: text and lines
    colored = (pixels.max(axis=2) - pixels.min(axis=2)) > 60
    assert colored.mean() > 0.002  # the plots' coloured lines and bars were drawn
    # The lower half holds the figures: it is not empty either.
    assert gray[1000:].std() > 20


@pytest.mark.slow
def test_score_and_report_on_logs_written_by_tune(tmp_path, capsys):
    common = [
        "tune",
        "-w",
        "mnist1d",
        "--data",
        "synthetic",
        "--max-steps",
        "10",
        "--eval-every",
        "5",
        "--studies",
        "2",
        "--trials",
        "1",
        "--quiet",
        "--experiment-dir",
        str(tmp_path / "exp"),
    ]
    assert cli.main([*common, "-s", "adamw"]) == 0
    assert cli.main([*common, "-s", "sgd"]) == 0
    targets = tmp_path / "targets.json"
    targets.write_text('{"mnist1d": {"target": 0.2}}')  # synthetic labels: a reachable target
    out = tmp_path / "report"
    argv = ["report", str(tmp_path / "exp"), "--out", str(out), "--targets", str(targets)]
    # Smoke-test flags make every trial unofficial: nothing counts unless asked for.
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "All 4 trials" in err and "data=synthetic" in err and "--include-unofficial" in err
    assert cli.main([*argv, "--include-unofficial"]) == 0
    scores = (out / "scores.csv").read_text().splitlines()
    assert {line.split(",")[0] for line in scores[1:]} == {"adamw", "sgd"}
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "adamw" in html and "Provenance" in html
    assert (out / "performance_profiles.svg").exists() and (out / "curves_mnist1d.png").exists()
    # Each trial's time to target equals a plain pandas reading of its eval_measurements.csv.
    import pandas as pd

    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 4 and set(trials["study"]) == {0, 1}
    assert set(trials["harness"]) == {"algoperf"} and set(trials["counted"]) == {"yes"}
    for reasons in trials["unofficial"]:
        assert {"data=synthetic", "max_steps=10", "eval_every=5"} <= {
            r.split(" (")[0] for r in reasons.split("; ")
        }
    for row in trials.itertuples():
        evals = pd.read_csv(row.path)
        hit = evals[evals["validation/accuracy"] >= 0.2]
        expected = hit["score"].iloc[0] if len(hit) else np.inf
        assert row.time_to_target == expected
    meta = json.loads(next((tmp_path / "exp").rglob("meta_data_0.json")).read_text())
    if meta.get("git_hash"):
        assert meta["git_hash"][:12] in (out / "report.md").read_text()


def test_reference_meta_data_format_is_read():
    from scoring.report import run_facts

    reference = {
        "cpu_model_name": "AMD EPYC 7B12",
        "cpu_count": 96,
        "gpu_model_name": "NVIDIA A100-SXM4-40GB",
        "gpu_count": 8,
        "python_version": "3.11.10",
        "git_commit_hash": "fedcba9876543210fedcba9876543210fedcba98",
        "workload.target_metric_name": "accuracy",
    }
    assert run_facts(reference) == {
        "hardware": "AMD EPYC 7B12 x96, 8 x NVIDIA A100-SXM4-40GB",
        "packages": "python 3.11.10",
        "harness git hash": "fedcba987654",
    }
    assert run_facts(["not", "a", "dict"]) == {}
    assert run_facts({"hardware": "garbled", "packages": 3}) == {}


def test_time_to_target_figure_wraps_many_workloads(tmp_path):
    from scoring_logs import reaching_at, write_trial

    from scoring import plots
    from scoring import score as score_lib
    from scoring.logs import Target

    names = [f"w{i}" for i in range(9)]
    targets = {w: Target("accuracy", 0.5, True, 100.0) for w in names}
    for w in names:
        write_trial(tmp_path / "logs", "s1", 0, w, 1, reaching_at(10))
    result = score_lib.score([tmp_path / "logs"], targets=targets, bootstrap=0)
    png = plots.time_to_target(result, tmp_path)
    width, height = Image.open(png).size
    assert width < 1600 and height > width / 2  # 3 rows of 4, not one 9-wide strip
