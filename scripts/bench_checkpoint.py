"""The cost of checkpoints on a large model: ViT-B/16 trained by AdamW through the real runner.

The model is the imagenet_vit workload's ViT at the ViT-B/16 sizes (width 768, depth 12, 12
heads, MLP 3072, patch 16: Dosovitskiy et al. 2021, Table 1), made as the reference makes its
ViT variants: a subclass of the workload that builds its model with other sizes, registered here
as the benchmark-only variant `imagenet_vit_b16`. Its checkpoint holds the parameters and
AdamW's two moments (3 x 87 M float32 values, about 1 GB). Data: the workload's synthetic
ImageNet (`--data synthetic`), a small batch.

1. The checkpoint alone, on a trial stopped after two steps (so AdamW's moments exist): the
   runner's capture (tensors to numpy), the write (pickle), fsync, the SHA-256 of the index, the
   whole `algoperf.checkpoint.save`, and the read back; MB/s of each.
2. With vs without checkpoints, through `algoperf.runner.train_once`: the same trial with
   `--checkpoint-every E` and without, over C whole cycles (E steps and one checkpoint each). The
   run is C * E + 1 steps long, so that checkpoints fall at E, 2E, ..., C * E (the runner skips
   the checkpoint of a trial's last step) and the cycles are the time from the end of step 1 to
   the end of the last step, evals and set-up left out (both runs evaluate after step 1 and at
   the end). Runs alternate without / with (in ABBA order over rounds) so that a shared
   machine's load hits both alike; the figure is the median over rounds of the ratio of the
   cycles' wall times, with the spread printed.

The period: the reference harness checkpoints after each eval, i.e. every eval_period_time_sec
(420 s for imagenet_vit) of training; E defaults to the number of this machine's steps that come
closest to that, measured in step 1 (`--every` overrides it).

    .venv/bin/python scripts/bench_checkpoint.py --batch-size 4 --cycles 1 --rounds 3

Last line: `checkpoint_overhead=<cycles' wall time with checkpoints / without>`.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from torch import nn

from algoperf import checkpoint as ckpt
from algoperf import runner, trial_checkpoint, tuning
from algoperf import submission as submission_lib
from algoperf.trial_config import TrialConfig
from workloads import registry
from workloads.imagenet_vit import workload as vit_info
from workloads.imagenet_vit.torch_workload import ImagenetVitWorkload, ViT

WORKLOAD = "imagenet_vit_b16"
# ViT-B/16: Dosovitskiy et al. 2021, Table 1 (Base: width 768, 12 layers, MLP 3072, 12 heads).
VIT_B16 = {"width": 768, "depth": 12, "mlp_dim": 3072, "num_heads": 12, "patch_size": 16}


class VitB16Workload(ImagenetVitWorkload):
    """imagenet_vit with the ViT-B/16 model (same head, pooling and initialisation)."""

    def build_model(self) -> nn.Module:
        return ViT(
            **VIT_B16,
            use_glu=bool(self.options.get("use_glu", False)),
            use_post_layer_norm=bool(self.options.get("use_post_layer_norm", False)),
            use_map=bool(self.options.get("use_map", False)),
        )


def register() -> None:
    """Adds the benchmark-only variant to this process's registry (nothing is written)."""
    registry.all_workloads()[WORKLOAD] = vit_info.BASE.variant(
        name=WORKLOAD,
        change="ViT-B/16 sizes (benchmark only)",
        model="ViT-B/16: width 768, depth 12, 12 heads, MLP 3072",
        implementations={"pytorch": f"{__name__}:VitB16Workload"},
        n_params={},
    )


def hyperparameters() -> dict[str, Any]:
    """Trial 1 of study 0 of the AdamW baseline's search space (the values do not change the
    checkpoint: its size is fixed by the model and the optimizer)."""
    source = submission_lib.resolve("adamw", "pytorch")
    assert source.search_space is not None
    return tuning.sample(tuning.load_search_space(source.search_space), 1, 0, "imagenet_vit", 0)


def config(trial_dir: Path, steps: int, every: int | None, batch_size: int, threads: int) -> TrialConfig:
    return TrialConfig(
        workload=WORKLOAD, submission="adamw", trial_dir=trial_dir, framework="pytorch",
        hyperparameters=hyperparameters(), data="synthetic", max_steps=steps,
        max_runtime=math.inf, stop_at="never", eval_every=10**9, checkpoint_every=every,
        batch_size=batch_size, threads=threads, record_step_times=True,
    )


def _now() -> tuple[float, float]:
    """(wall, CPU time of this process): on a loaded machine the process gets a fraction of a
    core, and the CPU time says what the work itself costs."""
    return time.perf_counter(), time.process_time()


def file_mb(path: Path) -> float:
    return path.stat().st_size / 1e6


def checkpoint_alone(tmp: Path, batch_size: int, threads: int) -> tuple[float, float, float]:
    """Times each part of one checkpoint of a trial after two steps; returns (MB, save s, step s)."""
    trial = runner.Trial(config(tmp / "alone", 2, None, batch_size, threads))
    result = trial.run()
    if result.status != "max_steps":
        raise RuntimeError(f"the trial ended as {result.status!r}: {result.error}")
    assert trial.step_times is not None
    step_s = trial.step_times[-1]
    n_params = sum(p.numel() for p in trial.unwrapped_model.parameters())
    print(f"model: {n_params:,} parameters; step 2 took {step_s:.2f} s at batch {batch_size}",
          flush=True)
    folder = tmp / "alone_ckpt"
    folder.mkdir()
    path = folder / "probe.ckpt"
    marks = [_now()]
    state = trial_checkpoint.capture(trial)
    marks.append(_now())
    ckpt.write(state, str(path))
    marks.append(_now())
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
    marks.append(_now())
    ckpt.sha256(path)
    marks.append(_now())
    mb = file_mb(path)
    path.unlink()
    del state
    gc.collect()
    marks.append(_now())
    trial_checkpoint.save(trial)  # what the runner calls: capture, write, fsync, rename, index
    marks.append(_now())
    loaded = trial_checkpoint.load_latest(trial.config.trial_dir)  # hash check + unpickle
    marks.append(_now())
    assert loaded is not None
    trial_checkpoint.restore(trial, loaded)
    marks.append(_now())
    del loaded
    names = ["capture (tensors to numpy)", "write (pickle)", "fsync", "sha256 of the file", None,
             "algoperf.checkpoint.save", "load_latest (hash + read)", "restore into the trial"]
    print(f"checkpoint: {mb:.1f} MB (wall s, CPU s of this process, MB/s of wall time)")
    for i, name in enumerate(names):
        if name is None:
            continue
        wall, cpu = (b - a for a, b in zip(marks[i], marks[i + 1]))
        print(f"  {name:28s} {wall:7.3f} s  cpu {cpu:7.3f} s  {mb / wall:8.0f} MB/s", flush=True)
    save_s = marks[6][0] - marks[5][0]
    close = getattr(trial.input_queue, "close", None)
    if close is not None:
        close()
    return mb, save_s, step_s


def cycles_time(result: runner.TrialResult) -> float:
    """Wall time from the end of step 1 to the end of the last step, evals left out: the
    submission clock after step 1, plus the checkpoints and the log lines the loop wrote."""
    p = result.phases
    return p["submission"] - result.first_step_s + p["checkpoint"] + p["logging"]


def one_run(tmp: Path, name: str, steps: int, every: int | None, batch_size: int,
            threads: int) -> tuple[float, runner.TrialResult, int]:
    gc.collect()
    trial_dir = tmp / name
    result = runner.train_once(config(trial_dir, steps, every, batch_size, threads))
    if result.status != "max_steps":
        raise RuntimeError(f"run {name} ended as {result.status!r}: {result.error}")
    written = len(list((trial_dir / trial_checkpoint.CHECKPOINT_DIR).glob("*.ckpt")))
    return cycles_time(result), result, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--every", type=int, default=None,
                        help="checkpoint period in steps (default: eval_period_time_sec of steps)")
    parser.add_argument("--cycles", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="pairs of runs without / with")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads (default: the runner's, algoperf.runner.default_threads())")
    parser.add_argument("--alone-only", action="store_true", help="only part 1")
    parser.add_argument("--skip-alone", action="store_true", help="only part 2 (with --every)")
    args = parser.parse_args()
    if args.skip_alone and not args.every:
        parser.error("--skip-alone needs --every (the period comes from part 1's step time)")
    threads = args.threads or runner.default_threads()
    register()
    print(f"{WORKLOAD}: batch {args.batch_size}, {threads} intra-op threads", flush=True)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.skip_alone:  # a quick check of part 2 (needs --every)
            mb, save_s, step_s = math.nan, math.nan, math.nan
        else:
            mb, save_s, step_s = checkpoint_alone(tmp, args.batch_size, threads)
        if args.alone_only:
            print(f"checkpoint_mb_per_s={mb / save_s:.1f}")
            return
        period_s = registry.get(WORKLOAD).eval_period_time_sec
        every = args.every or max(1, round(period_s / step_s))
        steps = args.cycles * every + 1
        print(f"checkpoint every {every} steps ({'given' if args.every else f'~{period_s:.0f} s of steps'}); "
              f"{args.cycles} cycles: {steps} steps per run", flush=True)
        ratios, without_s, with_s, ckpt_s = [], [], [], []
        for r in range(args.rounds):
            order = ("without", "with") if r % 2 == 0 else ("with", "without")
            times: dict[str, float] = {}
            for which in order:
                name = f"{which}_{r}"
                cycle_s, result, written = one_run(tmp, name, steps, every if which == "with" else None,
                                                   args.batch_size, threads)
                times[which] = cycle_s
                if which == "with":
                    ckpt_s.append(result.phases["checkpoint"] / args.cycles)
                    if written == 0:
                        raise RuntimeError(f"run {name} wrote no checkpoint")
                    size = statistics.fmean(file_mb(p) for p in (tmp / name / "checkpoints").glob("*.ckpt"))
                    for p in (tmp / name / "checkpoints").glob("*.ckpt"):
                        p.unlink()
                print(f"round {r} {which:7s}: cycles {cycle_s:8.2f} s (submission "
                      f"{result.phases['submission'] - result.first_step_s:.2f} s, checkpoints "
                      f"{result.phases['checkpoint']:.2f} s, evals {result.phases['eval']:.2f} s, "
                      f"set-up {result.phases['setup']:.2f} s)", flush=True)
            without_s.append(times["without"])
            with_s.append(times["with"])
            ratios.append(times["with"] / times["without"])
            print(f"round {r}: ratio with / without {ratios[-1]:.4f}", flush=True)

    print(f"checkpoint in the runs: {size:.1f} MB, {statistics.median(ckpt_s):.2f} s each "
          f"(median; {mb / statistics.median(ckpt_s):.0f} MB/s); alone: {save_s:.2f} s "
          f"({mb / save_s:.0f} MB/s)")
    print(f"cycles' wall time: without {statistics.median(without_s):.2f} s, with "
          f"{statistics.median(with_s):.2f} s (medians over {args.rounds} rounds)")
    print(f"ratio with / without per round: min {min(ratios):.4f}, median "
          f"{statistics.median(ratios):.4f}, max {max(ratios):.4f}")
    print(f"checkpoint_overhead={statistics.median(ratios):.4f}")


if __name__ == "__main__":
    main()
