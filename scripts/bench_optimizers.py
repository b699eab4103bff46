"""Step time of each baseline relative to AdamW on the CIFAR ResNet-18 (32x32 inputs, batch 32), CPU.

One model (the `cifar` workload's ResNet-18, 11.2M parameters) and one synthetic batch; for each
baseline a fresh copy of the model and its own `init_optimizer_state` with the self-tuning
defaults (Shampoo: roots every 100 steps, blocks of 1024; K-FAC: factors every 10 steps, inverses
every 50; Schedule-Free AdamW; and Shampoo and K-FAC with `preconditioner_dtype='bfloat16'`), a few
warm-up steps, then the median over `--steps` calls of the
submission's own `update_params` (forward, backward, optimizer, schedule), in one process.
Baselines take their steps in turn (and start afresh in each of `--rounds` rounds) so that a shared
machine's changing load hits all alike.

The median is the typical step (the issue's figure). The occasional extra work is timed on its
own and amortised into a second figure: Shampoo's batched root recomputation / 100, K-FAC's
inverses / 50 and its factor steps (a second backward pass for the sampled Fisher) / 10.
Prints `<name>_step_ratio=<median ratio>` lines last.

Each baseline's typical step is also counted in floating-point operations (matrix products and
convolutions, by `torch.utils.flop_counter`), relative to AdamW's: `flop_ratio`, the time ratio
if the optimizer's matrix products ran as efficiently as the model's convolutions; `flop_floor`
counts Shampoo's statistics at half cost (their outputs are symmetric), the least any exact
implementation computes.

    python scripts/bench_optimizers.py --steps 15 --rounds 2
"""

from __future__ import annotations

import argparse
import copy
import importlib
import statistics
import sys
import time
from types import SimpleNamespace
from typing import Any

import torch

from workloads import registry

# name -> (submission folder, hyperparameters: None = the self-tuning defaults, else overrides)
BASELINES: dict[str, tuple[str, dict[str, Any] | None]] = {
    "adamw": ("adamw", None),
    "shampoo": ("shampoo", None),
    "kfac": ("kfac", None),
    "schedule_free": ("schedule_free", None),
    "shampoo_bf16": ("shampoo", {"preconditioner_dtype": "bfloat16"}),
    "kfac_bf16": ("kfac", {"preconditioner_dtype": "bfloat16"}),
}
BATCH_SIZE = 32


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def one_step(submission: Any, workload: Any, model: torch.nn.Module, hyperparameters: Any, opt_state: Any,
             batch: dict[str, Any], step: int) -> Any:
    opt_state, _, _ = submission.update_params(
        workload=workload, current_param_container=model, current_params_types=workload.model_params_types,
        model_state=None, hyperparameters=hyperparameters, batch=batch, loss_type=workload.loss_type,
        optimizer_state=opt_state, eval_results=[], global_step=step, rng=0,
    )
    return opt_state


def global_steps(n: int) -> list[int]:
    """Step 0 (K-FAC's first factors and inverses, Shampoo's first roots), then steps that are not
    multiples of 10 (K-FAC's factor steps); K-FAC's next inverses (step 50) come later still."""
    return [s for s in range(10 * n) if s == 0 or s % 10 != 0][:n]


class Trainer:
    """One baseline on its own copy of the model, stepped by its submission's update_params."""

    def __init__(self, name: str, workload: Any, base_model: torch.nn.Module, batch: dict[str, Any]) -> None:
        folder, overrides = BASELINES[name]
        self.name = folder
        self.submission = importlib.import_module(f"submissions.{folder}.pytorch_submission")
        self.hyperparameters = None if overrides is None else SimpleNamespace(**overrides)
        self.workload, self.batch = workload, batch
        self.model = copy.deepcopy(base_model)
        self.state = self.submission.init_optimizer_state(workload, self.model, None, self.hyperparameters, 0)

    def step(self, global_step: int) -> float:
        """Seconds of one update_params call."""
        sync()
        start = time.perf_counter()
        self.state = one_step(self.submission, self.workload, self.model, self.hyperparameters, self.state,
                              self.batch, global_step)
        sync()
        return time.perf_counter() - start


def timed(fn: Any) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def flop_ratios(trainers: dict[str, Trainer], step: int) -> dict[str, tuple[float, float]]:
    """name -> (FLOPs of one typical step / AdamW's, the same with symmetric statistics at half cost).

    Counted on one more step of each trainer, after the timed ones.
    """
    from torch.utils.flop_counter import FlopCounterMode

    def addmm_inplace_flops(self_shape: Any, a_shape: Any, b_shape: Any, *args: Any, **kwargs: Any) -> int:
        return 2 * a_shape[0] * a_shape[1] * b_shape[1]  # torch counts addmm, not its in-place form

    totals: dict[str, int] = {}
    addmms: dict[str, int] = {}
    for name, trainer in trainers.items():
        with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: addmm_inplace_flops}) as counter:
            trainer.step(step)
        totals[name] = counter.get_total_flops()
        per_op = counter.get_flop_counts().get("Global", {})
        addmms[name] = sum(v for k, v in per_op.items() if "addmm_" in str(k))
    base = totals["adamw"]
    ratios = {}
    for name, total in totals.items():
        # Shampoo's statistics are its in-place addmm_ calls (L += G G^T, R += G^T G).
        statistics = addmms[name] if trainers[name].name == "shampoo" else 0
        ratios[name] = (total / base, (total - statistics / 2) / base)
    return ratios


def periodic_cost(trainer: Trainer, typical: float) -> float:
    """Seconds per step that the periodic work adds on average (0 for AdamW and Schedule-Free)."""
    name, opt_state = trainer.name, trainer.state
    opt = opt_state["optimizer"]
    if name == "shampoo":
        return timed(opt._update_roots) / opt._frequency()
    if name == "kfac":
        inverses = timed(lambda: opt._update_inverses(opt.param_groups[0]["damping"])) / opt.inverse_frequency
        every = opt_state["factor_frequency"]
        # A global step that is a multiple of factor_frequency updates the factors.
        factor_step = trainer.step(every)
        return inverses + max(0.0, factor_step - typical) / every
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=15, help="timed steps per baseline and round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps (at least 1)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baselines", default="adamw,shampoo,kfac,schedule_free",
                        help=f"comma-separated, adamw first; of {', '.join(BASELINES)} (the bf16 ones only "
                             "where the CPU or GPU has bf16 matrix units: without, bf16 products are ~100x slower)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    names = args.baselines.split(",")
    unknown = [n for n in names if n not in BASELINES]
    if unknown or names[0] != "adamw":
        raise SystemExit(f"--baselines {args.baselines!r}: expected adamw first, then any of {', '.join(BASELINES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    workload = registry.load("cifar", "pytorch", data="synthetic")
    base_model, _ = workload.init_model_fn(0)
    batch = next(iter(workload.build_input_queue(0, "train", None, BATCH_SIZE)))
    if args.warmup + args.steps > 45:
        raise SystemExit("--warmup + --steps must stay at most 45 (K-FAC recomputes its inverses at 50)")
    steps = global_steps(max(1, args.warmup) + args.steps)
    results: dict[str, list[float]] = {name: [] for name in names}
    trainers: dict[str, Trainer] = {}
    for round_index in range(args.rounds):
        print(f"round {round_index + 1}/{args.rounds}: {len(steps)} steps of {', '.join(names)}", file=sys.stderr)
        trainers = {name: Trainer(name, workload, base_model, batch) for name in names}
        for i, step in enumerate(steps):
            # Step by step in turn, so that a shared machine's load changes hit every baseline alike.
            for name, trainer in trainers.items():
                seconds = trainer.step(step)
                if i >= max(1, args.warmup):
                    results[name].append(seconds)
    medians = {name: statistics.median(times) for name, times in results.items()}
    flops = flop_ratios(trainers, global_steps(len(steps) + 1)[-1])  # the next typical step
    for name in names:
        extra = periodic_cost(trainers[name], medians[name])
        print(f"{name}: median step {medians[name] * 1e3:.1f} ms over {len(results[name])} steps; "
              f"periodic work adds {extra * 1e3:.1f} ms/step; amortised ratio "
              f"{(medians[name] + extra) / medians['adamw']:.3f}; flop_ratio {flops[name][0]:.3f}, "
              f"flop_floor {flops[name][1]:.3f}")
    for name in names[1:]:
        print(f"{name}_step_ratio={medians[name] / medians['adamw']:.3f}")


if __name__ == "__main__":
    main()
