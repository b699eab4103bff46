"""Step time of each JAX baseline against its PyTorch twin on mnist1d, in one process.

For every baseline both frameworks run the submission's own `update_params` (the same tuned
mnist1d hyperparameters, batch size and MNIST-1D CNN; synthetic data of the real shapes, since
the step does not depend on the values), each step waited for as the runner waits for it
(`jax.block_until_ready` on what `update_params` returned; a CPU torch step is synchronous).
A round times `--steps` consecutive steps of each framework (100 by default: a whole cycle of
every baseline, i.e. one Shampoo root recomputation, ten K-FAC factor updates and two inverse
recomputations); frameworks alternate in ABBA order from round to round so that the machine's
load hits both alike, and the first round (compilation, first factors) is not timed. The figure
per baseline is the median over rounds of (JAX time / PyTorch time) of the same round.

Threads are set explicitly before either framework starts: `--threads 1` (default) runs XLA's
CPU backend single-threaded (`--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1`) and `torch.set_num_threads(1)`; `--threads N` pins the process to
N cores (XLA sizes its pool from them) and gives torch N threads. One JAX device.

Prints a table, one `<baseline>_jax_over_pytorch=<median ratio>` line per baseline, and last
`jax_over_pytorch_geomean=<geometric mean over baselines>`.

    .venv/bin/python scripts/bench_jax_baselines.py --rounds 7
"""

from __future__ import annotations

import argparse
import os
import sys


def configure_threads(threads: int) -> None:
    """Before jax and torch start: one XLA CPU device, `threads` intra-op threads for both."""
    flags = ["--xla_force_host_platform_device_count=1"]
    if threads == 1:
        flags += ["--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1"]
    else:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    os.environ["XLA_FLAGS"] = " ".join(flags)
    os.environ["OMP_NUM_THREADS"] = str(threads)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baselines", nargs="+",
                   default=["adamw", "nadamw", "sgd", "schedule_free", "shampoo", "kfac"])
    p.add_argument("--steps", type=int, default=100, help="steps per timed round and framework")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (after one untimed)")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


ARGS = parse(sys.argv[1:] if __name__ == "__main__" else [])
if __name__ == "__main__":
    configure_threads(ARGS.threads)

import importlib  # noqa: E402  (after the thread settings, which must precede jax and torch)
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from algoperf import tuning  # noqa: E402
from algoperf.random_utils import prng_key  # noqa: E402
from workloads import registry  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


class Runner:
    """One framework's baseline on mnist1d: state kept between rounds, `steps(n)` times n steps."""

    def __init__(self, baseline: str, framework: str) -> None:
        self.framework = framework
        name = "pytorch_submission" if framework == "pytorch" else "jax_submission"
        self.module = importlib.import_module(f"submissions.{baseline}.{name}")
        tuned = json.loads((REPO / "submissions" / baseline / "tuned_hyperparameters.json").read_text())
        self.hp = tuning.as_hyperparameters(tuned["mnist1d"])
        self.workload = registry.load("mnist1d", framework, data="synthetic")
        torch.manual_seed(0)
        self.params, self.model_state = self.workload.init_model_fn(prng_key(0))
        self.state = self.module.init_optimizer_state(self.workload, self.params, self.model_state, self.hp,
                                                      prng_key(1))
        batch_size = self.module.get_batch_size("mnist1d")
        queue = self.workload.build_input_queue(prng_key(2), "train", None, batch_size)
        self.batches = [next(queue) for _ in range(4)]
        self.step = 0

    def steps(self, n: int) -> float:
        """Seconds for n consecutive steps, each waited for."""
        start = time.perf_counter()
        for _ in range(n):
            self.state, self.params, self.model_state = self.module.update_params(
                workload=self.workload, current_param_container=self.params, current_params_types=None,
                model_state=self.model_state, hyperparameters=self.hp,
                batch=self.batches[self.step % len(self.batches)], loss_type=self.workload.loss_type,
                optimizer_state=self.state, eval_results=[], global_step=self.step,
                rng=prng_key(self.step) if self.framework == "jax" else self.step)
            if self.framework == "jax":
                jax.block_until_ready((self.params, self.state))
            self.step += 1
        return time.perf_counter() - start


def measure(baseline: str, steps: int, rounds: int) -> dict[str, Any]:
    runners = {fw: Runner(baseline, fw) for fw in ("pytorch", "jax")}
    for runner in runners.values():  # untimed: compilation, first factors and roots
        runner.steps(steps)
    times: dict[str, list[float]] = {"pytorch": [], "jax": []}
    for r in range(rounds):
        order = ("pytorch", "jax") if r % 2 == 0 else ("jax", "pytorch")
        for fw in order:
            times[fw].append(runners[fw].steps(steps) / steps)
    ratios = [j / t for j, t in zip(times["jax"], times["pytorch"])]
    return {"pytorch_ms": 1e3 * statistics.median(times["pytorch"]),
            "jax_ms": 1e3 * statistics.median(times["jax"]),
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}


def main() -> int:
    torch.set_num_threads(ARGS.threads)
    print(f"mnist1d, {ARGS.threads} thread(s), {ARGS.steps} steps per round, {ARGS.rounds} rounds; "
          f"jax {jax.__version__} ({jax.device_count()} device), torch {torch.__version__}")
    results = {b: measure(b, ARGS.steps, ARGS.rounds) for b in ARGS.baselines}
    print(f"{'baseline':<16}{'pytorch ms':>12}{'jax ms':>10}{'jax/pytorch':>13}{'  (min - max)':>16}")
    for b, r in results.items():
        print(f"{b:<16}{r['pytorch_ms']:>12.2f}{r['jax_ms']:>10.2f}{r['ratio']:>13.2f}"
              f"    ({r['ratio_min']:.2f} - {r['ratio_max']:.2f})")
    for b, r in results.items():
        print(f"{b}_jax_over_pytorch={r['ratio']:.3f}")
    geomean = math.exp(float(np.mean([math.log(r["ratio"]) for r in results.values()])))
    print(f"jax_over_pytorch_geomean={geomean:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
