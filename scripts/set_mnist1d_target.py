"""The target-setting procedure for mnist1d (AlgoPerf's, scaled to a CPU).

For each of `--seeds` seeds, run the tuned AdamW baseline's first `--trials` search-space points
for step_hint steps (no early stop), keep the trial with the best final validation accuracy;
the validation (test) target is the median over seeds of that trial's final validation (test)
accuracy, rounded down to 3 decimals. Prints the runs, then `validation_target=<v>` last.

    .venv/bin/python scripts/set_mnist1d_target.py --seeds 3 --trials 5
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
from pathlib import Path

from algoperf import runner, tuning
from algoperf import submission as submission_lib
from workloads import registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--submission", default="adamw")
    args = parser.parse_args()
    info = registry.get("mnist1d")
    source = submission_lib.resolve(args.submission)
    assert source.search_space is not None
    space = tuning.load_search_space(source.search_space)
    finals_val, finals_test, times = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            best = None
            for trial in range(1, args.trials + 1):
                config = runner.TrialConfig(
                    workload="mnist1d", submission=args.submission,
                    trial_dir=Path(tmp) / f"seed{seed}" / f"trial_{trial}",
                    hyperparameters=tuning.sample(space, trial, seed, "mnist1d", 0),
                    seed=runner.trial_seed(seed, "mnist1d", 0, trial),
                    max_steps=info.step_hint, max_runtime=math.inf, stop_at="never", eval_every=250,
                )
                result = runner.train_once(config)
                val = result.last_eval["validation/accuracy"]
                test = result.last_eval["test/accuracy"]
                print(f"seed {seed} trial {trial}: validation {val:.4f} test {test:.4f} "
                      f"({result.phases['submission']:.1f} s)", flush=True)
                if best is None or val > best[0]:
                    best = (val, test, result.phases["submission"])
            assert best is not None
            finals_val.append(best[0])
            finals_test.append(best[1])
            times.append(best[2])
    val_target = math.floor(statistics.median(finals_val) * 1000) / 1000
    test_target = math.floor(statistics.median(finals_test) * 1000) / 1000
    print(f"median submission time of the best runs: {statistics.median(times):.1f} s")
    print(f"test_target={test_target}")
    print(f"validation_target={val_target}")


if __name__ == "__main__":
    main()
