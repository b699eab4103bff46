"""The runner's overhead: N steps through `algoperf run`'s loop vs a bare loop, same batches.

Both loops call the same submission's `update_params` on the same pre-built device batches
(held in memory, so the input pipeline's cost is in neither); the runner has evals switched
off but for the one after step 1. Per-step times: the runner's own submission clock (everything
between two step ends: the loop's decisions included) vs perf_counter around each bare step.
Rounds alternate bare / runner; `ab_ratio` is the ratio of the pooled medians. On a shared
2-core machine that ratio moves by several percent between rounds (process state, other jobs),
more than the effect measured; so the same two loops are also run with a submission that does
nothing (scripts/noop_submission.py), where all that is left is the runner's own per-step work.
The last line, `overhead_ratio=(bare step + that overhead) / bare step`, is the runner's cost
relative to the real step. Goal: <= 1.02 on mnist1d.

    .venv/bin/python scripts/bench_overhead.py --steps 600 --rounds 10
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from algoperf import runner
from algoperf import submission as submission_lib
from algoperf.random_utils import prng_key, split
from workloads import registry

NOOP_SUBMISSION = Path(__file__).resolve().parent / "noop_submission.py"


class ListLogger:
    """The least a metrics logger does (keep the values): the bare loop's stand-in for the runner's."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, dict[str, Any]]] = []

    def append_scalar_metrics(self, metrics: dict[str, Any], global_step: int) -> None:
        self.rows.append((global_step, metrics))


class FixedQueue:
    """The same pre-built batches, cycled: identical inputs for both loops, no pipeline cost."""

    def __init__(self, batches: list[dict[str, Any]]) -> None:
        self._it = itertools.cycle(batches)

    def __iter__(self) -> FixedQueue:
        return self

    def __next__(self) -> dict[str, Any]:
        return next(self._it)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def make_batches(workload_name: str, batch_size: int, n: int) -> list[dict[str, Any]]:
    w = registry.load(workload_name)
    queue = w.build_input_queue(prng_key(0), "train", None, batch_size)
    return [next(queue) for _ in range(n)]


def bare_loop(workload_name: str, submission: str, hparams: dict[str, Any], batches: list, steps: int) -> list[float]:
    """Per-step times of a plain loop: data_selection + update_params, nothing else."""
    from algoperf import tuning

    module = submission_lib.load(submission_lib.resolve(submission))
    w = registry.load(workload_name)
    w.metrics_logger = ListLogger()
    model, model_state = w.init_model_fn(prng_key(1))
    hp = tuning.as_hyperparameters(hparams)
    state = module.init_optimizer_state(workload=w, model_params=model, model_state=model_state,
                                        hyperparameters=hp, rng=prng_key(2))
    queue = FixedQueue(batches)
    rng = split(prng_key(3), 2)
    times = []
    last = time.perf_counter()
    for step in range(steps):
        batch = module.data_selection(workload=w, input_queue=queue, optimizer_state=state,
                                      current_param_container=model, model_state=model_state,
                                      hyperparameters=hp, global_step=step, rng=rng[0])
        state, model, model_state = module.update_params(
            workload=w, current_param_container=model, current_params_types=w.model_params_types,
            model_state=model_state, hyperparameters=hp, batch=batch, loss_type=w.loss_type,
            optimizer_state=state, eval_results=[], global_step=step, rng=rng[1])
        now = time.perf_counter()
        times.append(now - last)
        last = now
    return times[1:]  # the first step (warm-up) is excluded, as for the runner


def runner_loop(workload_name: str, submission: str, hparams: dict[str, Any], batches: list, steps: int) -> list[float]:
    """Per-step submission times measured by the runner's own clock (loop overhead included)."""
    with tempfile.TemporaryDirectory() as tmp:
        config = runner.TrialConfig(
            workload=workload_name, submission=submission, trial_dir=Path(tmp) / "t",
            hyperparameters=hparams, max_steps=steps, max_runtime=math.inf, stop_at="never",
            eval_every=10**9, record_step_times=True,
        )
        trial = runner.Trial(config)
        original_setup = trial.setup

        def setup_with_fixed_batches() -> None:
            original_setup()
            trial.input_queue = FixedQueue(batches)

        trial.setup = setup_with_fixed_batches  # type: ignore[method-assign]
        trial.run()
        assert trial.step_times is not None
        return trial.step_times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="mnist1d")
    parser.add_argument("--submission", default="adamw")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    source = submission_lib.resolve(args.submission)
    import json

    tuned = json.loads((source.path.parent / "tuned_hyperparameters.json").read_text())[args.workload]
    module = submission_lib.load(source)
    batches = make_batches(args.workload, module.get_batch_size(args.workload), 64)
    torch.manual_seed(0)
    # One intra-op thread: the other core absorbs the machine's other jobs, which steadies both loops.
    torch.set_num_threads(args.threads)
    # Medians of per-step times, pooled over alternating rounds: robust to the bursts of other
    # jobs on a shared machine, which a ratio of total times is not.
    bare_all: list[float] = []
    runner_all: list[float] = []
    for r in range(args.rounds):
        bare = bare_loop(args.workload, args.submission, tuned, batches, args.steps)
        timed = runner_loop(args.workload, args.submission, tuned, batches, args.steps)
        bare_all += bare
        runner_all += timed
        b, t = statistics.median(bare), statistics.median(timed)
        print(f"round {r}: median step bare {b * 1e3:.3f} ms, runner {t * 1e3:.3f} ms, ratio {t / b:.4f}",
              flush=True)
    bare_step = statistics.median(bare_all)
    print(f"mean step: bare {statistics.fmean(bare_all) * 1e3:.3f} ms, runner {statistics.fmean(runner_all) * 1e3:.3f} ms")
    print(f"ab_ratio={statistics.median(runner_all) / bare_step:.4f}  (pooled medians; noise of a shared machine included)")
    # The same comparison with a submission that does nothing: what is left is exactly the
    # runner's own per-step work, measured to a fraction of a microsecond.
    noop = runner_loop(args.workload, str(NOOP_SUBMISSION), {}, batches, 20_000)
    noop_bare = bare_loop(args.workload, str(NOOP_SUBMISSION), {}, batches, 20_000)
    overhead = statistics.median(noop) - statistics.median(noop_bare)
    print(f"runner overhead per step: {overhead * 1e6:.2f} us (no-op submission: runner "
          f"{statistics.median(noop) * 1e6:.2f} us, bare {statistics.median(noop_bare) * 1e6:.2f} us)")
    print(f"overhead_ratio={(bare_step + overhead) / bare_step:.4f}")


if __name__ == "__main__":
    main()
