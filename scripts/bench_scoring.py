"""Scoring speed: 4,000 eval CSVs (300,000 rows) in the reference layout, scored end to end.

20 submissions x 8 workloads x 5 studies x 5 trials, 75 evals each, written in AlgoPerf's
column layout; then the whole `algoperf score` pipeline (reading, trial selection, medians,
profiles, 1,000 bootstrap resamples, output files, the printed table) is timed, run as
`algoperf score` in this process. Prints `seconds=<t>` last.

`--layout ours` also writes this harness's `flags_0.json` into every trial folder, so the flags
check and the budget check (scoring/official.py) are on the clock too.

    .venv/bin/python scripts/bench_scoring.py [--layout ours]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from algoperf import cli

HEADER = (
    "accumulated_eval_time,accumulated_logging_time,accumulated_submission_time,global_step,"
    "preemption_count,score,test/accuracy,test/loss,test/num_examples,total_duration,"
    "train/accuracy,train/loss,validation/accuracy,validation/loss,validation/num_examples"
)


# A default `algoperf run`'s flags (the keys the scorer checks), as the runner writes them.
OUR_FLAGS = {
    "data": "real",
    "max_steps": None,
    "max_runtime": None,
    "eval_every": None,
    "batch_size": None,
    "ruleset": "external",
    "rules": "v0.6",
    "framework": "pytorch",
    "seed": 0,
}


def generate(
    root: Path,
    submissions: int,
    workloads: int,
    studies: int,
    trials: int,
    evals: int,
    flags: bool = False,
) -> int:
    rng = np.random.default_rng(0)
    files = 0
    for s in range(submissions):
        speed = rng.uniform(0.5, 2.0)
        for w in range(workloads):
            for k in range(studies):
                for i in range(1, trials + 1):
                    d = root / f"sub{s:02d}" / f"study_{k}" / f"w{w}_pytorch" / f"trial_{i}"
                    d.mkdir(parents=True)
                    t = np.cumsum(rng.uniform(50, 150, evals)) * speed
                    acc = 1.0 - np.exp(
                        -np.arange(1, evals + 1) / (20 * speed * rng.uniform(0.8, 1.2))
                    )
                    rows = [HEADER] + [
                        f"{j},{j * 0.1:.3f},{t[j]:.4f},{(j + 1) * 100},0,{t[j]:.4f},{acc[j]:.5f},0.5,10000,"
                        f"{t[j] + j:.3f},{acc[j]:.5f},0.4,{acc[j]:.5f},0.5,50000"
                        for j in range(evals)
                    ]
                    (d / "eval_measurements.csv").write_text("\n".join(rows) + "\n")
                    if flags:
                        (d / "flags_0.json").write_text(json.dumps(OUR_FLAGS))
                    files += 1
    return files


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--submissions", type=int, default=20)
    parser.add_argument("--workloads", type=int, default=8)
    parser.add_argument("--studies", type=int, default=5)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--evals", type=int, default=75)
    parser.add_argument(
        "--layout",
        choices=("reference", "ours"),
        default="reference",
        help="reference: eval CSVs only; ours: with this harness's flags_0.json in every trial",
    )
    args = parser.parse_args()
    targets = {
        f"w{w}": {"metric": "accuracy", "target": 0.9, "higher_is_better": True, "budget": 20_000.0}
        for w in range(args.workloads)
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "logs"
        files = generate(
            root,
            args.submissions,
            args.workloads,
            args.studies,
            args.trials,
            args.evals,
            flags=args.layout == "ours",
        )
        print(f"{files} files, {files * args.evals} rows")
        targets_file = Path(tmp) / "targets.json"
        targets_file.write_text(json.dumps(targets))
        out = Path(tmp) / "out"
        command = ["score", str(root), "--targets", str(targets_file), "--out", str(out)]
        printed = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(printed):
            code = cli.main(command)  # `algoperf score ...`, in this process
        seconds = time.perf_counter() - start
        if code != 0:
            raise SystemExit(f"algoperf score failed with exit code {code}:\n{printed.getvalue()}")
        best = (out / "scores.csv").read_text().splitlines()[1].split(",")[:2]
    print(
        f"command: algoperf {' '.join(command[:1])} LOGS --targets FILE --out OUT "
        f"(1,000 bootstrap resamples; {args.layout} layout)"
    )
    print(f"best: {best[0]} score {float(best[1]):.4f}")
    print(f"seconds={seconds:.3f}")


if __name__ == "__main__":
    main()
