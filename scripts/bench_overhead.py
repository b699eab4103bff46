"""The runner's overhead, measured: N steps through `algoperf.runner.Trial` vs a bare loop doing
the very same steps, in alternating rounds of one process.

Both loops run the same submission (`data_selection` + `update_params`) on the same model, seed
and hyperparameters, fed by the workload's real input pipeline (for mnist1d: its numpy stream
behind the background-thread input queue, rebuilt for every loop from the same key), at the
intra-op thread count the runner uses (`algoperf.runner.default_threads()` unless `--threads`).
The runner (A) is timed by its own submission clock, which is what scores are made of: every
second between two step ends that is not charged to an eval, a log line or a checkpoint,
i.e. the step plus the loop's own decisions. The bare loop (B) is timed by `perf_counter` around
its steps. Step 1 (warm-up, followed in the runner by its first eval) is left out of both.
Both loops end with the same parameters (checked and printed), so they did the same work.

A shared machine's load moves both loops by far more than the runner's cost; so A and B
alternate in ABBA order within one process, after an untimed warm-up pair, and the figure is
the median over rounds of (A time / B time), with the quartiles and extremes printed as the
spread. The last line is `overhead_ratio=<median of runner time / bare time>`. Goal: <= 1.02
on mnist1d.

    .venv/bin/python scripts/bench_overhead.py --steps 600 --rounds 8
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import torch

from algoperf import runner, tuning
from algoperf import submission as submission_lib
from algoperf.backends import pytorch as backend
from algoperf.random_utils import prng_key, split, step_keys
from algoperf.trial_config import TrialConfig, trial_seed, tuned_hyperparameters
from workloads import registry


class ListLogger:
    """What a metrics logger must do (keep the values): the bare loop's stand-in for the runner's
    `MetricsLogger`, whose writing of measurements.csv is the runner's own cost."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, dict[str, Any]]] = []

    def append_scalar_metrics(self, metrics: dict[str, Any], global_step: int, **_: Any) -> None:
        self.rows.append((global_step, metrics))


def param_checksum(model: torch.nn.Module) -> float:
    """The sum of every parameter (float64): equal for two loops that did the same steps."""
    with torch.no_grad():
        return float(sum(p.double().sum() for p in model.parameters()))


def bare_loop(workload_name: str, submission: str, hparams: dict[str, Any] | None, seed: int,
              steps: int) -> tuple[list[float], float]:
    """(per-step times, parameter checksum) of a plain loop over `steps` steps.

    Built exactly as `Trial._build_state` builds a trial of seed `seed` (same keys, same input
    queue, model and optimizer), then only data_selection + update_params per step."""
    source = submission_lib.resolve(submission, "pytorch")
    module = submission_lib.load(source)
    info = registry.get(workload_name)
    backend.seed_everything(seed)
    w = registry.load(workload_name, "pytorch")
    w.metrics_logger = ListLogger()
    hp = tuning.as_hyperparameters(hparams) if hparams is not None else None
    batch_size = submission_lib.batch_size(module, info)
    data_rng, opt_rng, model_rng, rng = split(prng_key(seed), 4)
    queue = w.build_input_queue(data_rng, "train", None, batch_size)
    model, model_state = w.init_model_fn(model_rng, getattr(hp, "dropout_rate", None),
                                         getattr(hp, "aux_dropout_rate", None))
    state = module.init_optimizer_state(workload=w, model_params=model, model_state=model_state,
                                        hyperparameters=hp, rng=opt_rng)
    extra: dict[str, Any] = {}
    if submission_lib.takes_train_state(module):
        extra["train_state"] = types.MappingProxyType({})
    times = []
    last = time.perf_counter()
    for step in range(steps):
        select_rng, update_rng = step_keys(rng, step, 2)
        batch = module.data_selection(
            workload=w, input_queue=queue, optimizer_state=state, current_param_container=model,
            model_state=model_state, hyperparameters=hp, global_step=step, rng=select_rng)
        state, model, model_state = module.update_params(
            workload=w, current_param_container=model, current_params_types=w.model_params_types,
            model_state=model_state, hyperparameters=hp, batch=batch, loss_type=w.loss_type,
            optimizer_state=state, eval_results=[], global_step=step, rng=update_rng, **extra)
        now = time.perf_counter()
        times.append(now - last)
        last = now
    _close(queue)
    return times[1:], param_checksum(model)


def runner_loop(workload_name: str, submission: str, hparams: dict[str, Any] | None, seed: int,
                steps: int, threads: int) -> tuple[list[float], float]:
    """(per-step submission times from the runner's clock, parameter checksum) of one trial."""
    with tempfile.TemporaryDirectory() as tmp:
        config = TrialConfig(
            workload=workload_name, submission=submission, trial_dir=Path(tmp) / "t",
            framework="pytorch", hyperparameters=hparams, seed=seed, max_steps=steps,
            max_runtime=math.inf, stop_at="never", eval_every=10**9, threads=threads,
            record_step_times=True,
        )
        trial = runner.Trial(config)
        result = trial.run()
        if result.status != "max_steps" or trial.step_times is None:
            raise RuntimeError(f"the runner's trial ended as {result.status!r} ({result.error})")
        _close(trial.input_queue)
        return trial.step_times[1:], param_checksum(trial.unwrapped_model)


def _close(queue: Any) -> None:
    close = getattr(queue, "close", None)
    if close is not None:
        close()


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="mnist1d")
    parser.add_argument("--submission", default="adamw")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=8, help="timed AB pairs (after a warm-up pair)")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads (default: the runner's, algoperf.runner.default_threads())")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    threads = args.threads or runner.default_threads()
    torch.set_num_threads(threads)
    source = submission_lib.resolve(args.submission, "pytorch")
    hparams = tuned_hyperparameters(source, args.workload)
    seed = trial_seed(args.seed, args.workload, 0, 1)
    print(f"{args.workload} / {source.name}: {args.steps} steps per loop, {threads} intra-op threads "
          f"(torch reports {torch.get_num_threads()}), {args.rounds} rounds after a warm-up pair",
          flush=True)

    def run(which: str) -> tuple[list[float], float]:
        gc.collect()
        if which == "A":
            return runner_loop(args.workload, args.submission, hparams, seed, args.steps, threads)
        return bare_loop(args.workload, args.submission, hparams, seed, args.steps)

    run("A"), run("B")  # warm-up: imports, data generation, allocator, caches
    ratios, a_totals, b_totals, a_steps, b_steps = [], [], [], [], []
    checksums: set[float] = set()
    for r in range(args.rounds):
        order = "AB" if r % 2 == 0 else "BA"
        out = {which: run(which) for which in order}
        (a, ca), (b, cb) = out["A"], out["B"]
        checksums.update((ca, cb))
        if torch.get_num_threads() != threads:
            raise RuntimeError(f"the thread count changed to {torch.get_num_threads()} during the run")
        a_totals.append(sum(a))
        b_totals.append(sum(b))
        a_steps += a
        b_steps += b
        ratios.append(a_totals[-1] / b_totals[-1])
        print(f"round {r} ({order}): runner {a_totals[-1]:.3f} s, bare {b_totals[-1]:.3f} s "
              f"for {len(a)} steps; ratio {ratios[-1]:.4f}; median step runner "
              f"{statistics.median(a) * 1e3:.3f} ms, bare {statistics.median(b) * 1e3:.3f} ms",
              flush=True)

    print(f"same final parameters in every loop: {len(checksums) == 1} (checksums {sorted(checksums)})")
    qa, qb = quartiles(a_totals), quartiles(b_totals)
    print(f"loop time over rounds (q1 / median / q3): runner {qa[0]:.3f} / {qa[1]:.3f} / {qa[2]:.3f} s, "
          f"bare {qb[0]:.3f} / {qb[1]:.3f} / {qb[2]:.3f} s")
    print(f"per-step medians, pooled: runner {statistics.median(a_steps) * 1e3:.3f} ms, "
          f"bare {statistics.median(b_steps) * 1e3:.3f} ms, ratio "
          f"{statistics.median(a_steps) / statistics.median(b_steps):.4f}")
    q = quartiles(ratios)
    print(f"ratio runner/bare per round: min {min(ratios):.4f}, q1 {q[0]:.4f}, median {q[1]:.4f}, "
          f"q3 {q[2]:.4f}, max {max(ratios):.4f}")
    print(f"overhead_ratio={q[1]:.4f}")


if __name__ == "__main__":
    main()
