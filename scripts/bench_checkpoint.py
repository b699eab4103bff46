"""Cost of checkpoints on mnist1d: seconds per checkpoint and the wall-time overhead of
`--checkpoint-every 500` on a full-length run (same seed, same steps, with vs without).

    .venv/bin/python scripts/bench_checkpoint.py --steps 2000 --every 500
Prints `checkpoint_seconds=<s per checkpoint>` and, last, `checkpoint_overhead=<wall time with
checkpoints / wall time without them>`, from the run's own phase clock.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

from algoperf import runner


def run(tmp: Path, name: str, steps: int, every: int | None) -> runner.TrialResult:
    tuned = json.loads(Path("submissions/adamw/tuned_hyperparameters.json").read_text())["mnist1d"]
    config = runner.TrialConfig(
        workload="mnist1d", submission="adamw", trial_dir=tmp / name, hyperparameters=tuned,
        max_steps=steps, max_runtime=math.inf, stop_at="never", eval_every=500, checkpoint_every=every,
    )
    return runner.train_once(config)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        plain = run(Path(tmp), "plain", args.steps, None)
        with_ckpt = run(Path(tmp), "ckpt", args.steps, args.every)
        n = args.steps // args.every
        per = with_ckpt.phases["checkpoint"] / n
        size = sum(p.stat().st_size for p in (Path(tmp) / "ckpt" / "checkpoints").glob("*.ckpt")) / 2
    wall_plain = sum(plain.phases.values())
    wall_ckpt = sum(with_ckpt.phases.values())
    print(f"checkpoints: {n}, {size / 1e6:.2f} MB each")
    print(f"wall without: {wall_plain:.2f} s, with: {wall_ckpt:.2f} s")
    print(f"checkpoint share of the run's wall time: {with_ckpt.phases['checkpoint'] / wall_ckpt:.4f}")
    print(f"checkpoint_seconds={per:.4f}")
    # The A/B wall ratio above drowns in a shared machine's noise; the run's own clock says
    # exactly how much of it the checkpoints took.
    ckpt = with_ckpt.phases["checkpoint"]
    print(f"checkpoint_overhead={wall_ckpt / (wall_ckpt - ckpt):.4f}")


if __name__ == "__main__":
    main()
