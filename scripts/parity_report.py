"""JAX against PyTorch, per workload: output difference, step time ratio, peak memory ratio.

Every registered workload or variant with both implementations and a `convert.py` is measured
on the CPU, on a small batch of its synthetic data (`--batch-size`, default 8), with the model
options of its converter's `PARITY_OPTIONS` if it has some (e.g. Criteo's smaller table):

- output difference: max |jax - torch| / max |torch| of the eval-mode outputs, float32, the
  PyTorch weights loaded into flax (its zero head perturbed first, so that it is not 0 vs 0);
- step time: one AdamW step (forward, loss, backward, update; JAX jitted, its compile excluded)
  timed in interleaved rounds (torch, jax, torch, jax, ...) in one process on one CPU thread
  each (`torch.set_num_threads(1)`, XLA's single-threaded CPU runtime): the ratio compares the
  frameworks' code, not their thread pools, and both see the same machine load; the median of
  the per-round ratios;
- peak memory: one process per framework builds the model and takes `--steps` steps; its peak
  resident memory above what the process held after importing the framework (`ru_maxrss` minus
  the resident size after import): what the model, its optimizer and its step cost.

    python scripts/parity_report.py [--workloads NAME ...] [--rounds 7] [--batch-size 8]

The last line is `max_output_difference=<the largest output difference>`.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# One CPU device, one thread, set before JAX first loads (worker processes only).
XLA_ONE_THREAD = "--xla_force_host_platform_device_count=1 --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def paired_workloads() -> list[str]:
    """Every workload or variant with a PyTorch and a JAX implementation and a converter."""
    sys.path.insert(0, str(REPO))
    from workloads import registry

    names = []
    for name, info in sorted(registry.all_workloads().items()):
        if {"pytorch", "jax"} <= set(info.implementations):
            package = info.implementations["jax"].split(":")[0].rsplit(".", 1)[0]
            if (REPO / package.replace(".", "/") / "convert.py").exists():
                names.append(name)
    return names


# ---- worker side (one process per measurement) --------------------------------------------------
def _setup(name: str, frameworks: tuple[str, ...], batch_size: int) -> dict[str, Any]:
    import importlib

    import numpy as np

    from algoperf.random_utils import prng_key
    from workloads import registry

    info = registry.get(name)
    package = info.implementations["jax"].split(":")[0].rsplit(".", 1)[0]
    options = dict(getattr(importlib.import_module(f"{package}.convert"), "PARITY_OPTIONS", {}))
    out: dict[str, Any] = {"options": options}
    if "pytorch" in frameworks:
        import torch

        torch.set_num_threads(1)
        torch.manual_seed(0)
        tw = registry.load(name, "pytorch", data="synthetic", **options)
        model, _ = tw.init_model_fn(prng_key(0))
        with torch.no_grad():  # a zero-initialised tensor (ViT's head) would compare 0 with 0
            for p in model.parameters():
                if p.numel() > 1 and not bool(p.any()):
                    p.uniform_(-0.1, 0.1)
        out.update(torch_workload=tw, torch_model=model)
        source = tw
    if "jax" in frameworks:
        jw = registry.load(name, "jax", data="synthetic", **options)
        out["jax_workload"] = jw
        source = jw
    batch = next(iter(source.train_batches(batch_size, 0)))
    if "weights" not in batch:
        batch["weights"] = np.ones(len(batch["targets"]), np.float32)
    out["batch"] = {k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in batch.items()}
    return out


def _torch_stepper(tw: Any, model: Any, batch: dict[str, Any]) -> Any:
    import torch

    from algoperf import spec

    tb = {k: torch.from_numpy(v) for k, v in batch.items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)

    def step() -> None:
        optimizer.zero_grad()
        logits, _ = tw.model_fn(model, tb, None, spec.ForwardPassMode.TRAIN, None, True, dropout_rate=0.0)
        loss = tw.loss_fn(tb["targets"], logits, tb.get("weights"))
        (loss["summed"] / loss["n_valid_examples"]).backward()
        optimizer.step()

    return step


def _jax_stepper(jw: Any, params: Any, model_state: Any, batch: dict[str, Any]) -> Any:
    import jax
    import optax

    from algoperf import spec

    tx = optax.adamw(1e-3, weight_decay=0.01)

    @jax.jit
    def update(params: Any, model_state: Any, opt_state: Any) -> Any:
        def loss_fn(p: Any) -> Any:
            logits, new_state = jw.model_fn(p, batch, model_state, spec.ForwardPassMode.TRAIN,
                                            jax.random.PRNGKey(0), True, dropout_rate=0.0)
            loss = jw.loss_fn(batch["targets"], logits, batch.get("weights"))
            return loss["summed"] / loss["n_valid_examples"], new_state

        grads, new_state = jax.grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_state, opt_state

    state = [params, model_state, tx.init(params)]

    def step() -> None:
        state[:] = jax.block_until_ready(update(*state))

    return step


def _loaded_into_jax(parts: dict[str, Any]) -> tuple[Any, Any]:
    import jax
    import jax.numpy as jnp

    from workloads.convert import converter

    state = {k: v.detach().numpy() for k, v in parts["torch_model"].state_dict().items()}
    variables = jax.tree.map(jnp.asarray, converter(parts["torch_workload"]).to_flax(state))
    params = variables.pop("params")
    return params, (variables or None)


def worker_compare(name: str, batch_size: int, rounds: int) -> dict[str, Any]:
    """Output difference and interleaved step times, both frameworks in this process."""
    import jax
    import numpy as np
    import torch

    from algoperf import spec

    parts = _setup(name, ("pytorch", "jax"), batch_size)
    tw, jw, model, batch = parts["torch_workload"], parts["jax_workload"], parts["torch_model"], parts["batch"]
    params, model_state = _loaded_into_jax(parts)
    # What init_model_fn sets up (JaxWorkload keeps it private), without drawing weights: the
    # weights are the PyTorch model's.
    jw._model = jw.build_model()
    jw._takes_dropout = "dropout_rate" in inspect.signature(jw._model.__call__).parameters
    tb = {k: torch.from_numpy(v) for k, v in batch.items()}
    theirs, _ = tw.model_fn(model, tb, None, spec.ForwardPassMode.EVAL, None, False)
    ours, _ = jax.jit(lambda p, s: jw.model_fn(p, batch, s, spec.ForwardPassMode.EVAL, None, False))(
        params, model_state)
    theirs, ours = theirs.detach().numpy().astype(np.float64), np.asarray(ours, np.float64)
    difference = float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-12))

    torch_step = _torch_stepper(tw, model, batch)
    jax_step = _jax_stepper(jw, params, model_state, batch)
    start = time.perf_counter()
    jax_step()  # compile
    compile_s = time.perf_counter() - start
    torch_step()  # warm-up
    times: dict[str, list[float]] = {"torch": [], "jax": []}
    for r in range(rounds):
        order = (("torch", torch_step), ("jax", jax_step))
        for fw, step in order if r % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            step()
            times[fw].append(time.perf_counter() - start)
    ratios = [j / t for j, t in zip(times["jax"], times["torch"])]
    return {"difference": difference, "torch_s": statistics.median(times["torch"]),
            "jax_s": statistics.median(times["jax"]), "ratio": statistics.median(ratios),
            "jax_compile_s": compile_s, "options": parts["options"]}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker_memory(name: str, framework: str, batch_size: int, steps: int) -> dict[str, Any]:
    """Peak resident memory of building the model and taking `steps` steps, above the imports."""
    import resource

    import numpy  # noqa: F401

    from algoperf.random_utils import prng_key

    if framework == "jax":
        import flax.linen  # noqa: F401
        import jax  # noqa: F401
        import optax  # noqa: F401
    else:
        import torch  # noqa: F401

    baseline = _rss_bytes()
    parts = _setup(name, (framework,), batch_size)
    if framework == "pytorch":
        step = _torch_stepper(parts["torch_workload"], parts["torch_model"], parts["batch"])
    else:
        jw = parts["jax_workload"]
        params, model_state = jw.init_model_fn(prng_key(0))
        step = _jax_stepper(jw, params, model_state, parts["batch"])
    for _ in range(steps):
        step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"peak_bytes": peak - baseline}


# ---- driver ---------------------------------------------------------------------------------------
def run_worker(args: list[str]) -> dict[str, Any]:
    env = {**os.environ, "XLA_FLAGS": XLA_ONE_THREAD, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, __file__, "--worker", *args], cwd=REPO, env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", nargs="*", help="only these (default: every paired workload)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--steps", type=int, default=2, help="steps of each memory process")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, str(REPO))
        kind, name, *rest = args.worker
        if kind == "compare":
            result = worker_compare(name, args.batch_size, args.rounds)
        else:
            result = worker_memory(name, rest[0], args.batch_size, args.steps)
        print(json.dumps(result))
        return

    names = args.workloads or paired_workloads()
    print(f"JAX vs PyTorch on the CPU, one thread each, batch {args.batch_size}, "
          f"{args.rounds} interleaved rounds, memory over {args.steps} steps")
    header = (f"{'workload':<36} {'out diff':>9} {'torch ms':>9} {'jax ms':>9} {'jax/torch':>9} "
              f"{'torch MB':>9} {'jax MB':>9} {'jax/torch':>9}  options")
    print(header)
    print("-" * len(header))
    rows = []
    for name in names:
        common = ["--batch-size", str(args.batch_size), "--rounds", str(args.rounds), "--steps", str(args.steps)]
        cmp = run_worker(["compare", name, *common])
        mem = {fw: run_worker(["memory", name, fw, *common])["peak_bytes"] / 2**20 for fw in ("pytorch", "jax")}
        rows.append((cmp, mem))
        print(f"{name:<36} {cmp['difference']:>9.1e} {cmp['torch_s'] * 1e3:>9.1f} {cmp['jax_s'] * 1e3:>9.1f} "
              f"{cmp['ratio']:>9.2f} {mem['pytorch']:>9.0f} {mem['jax']:>9.0f} "
              f"{mem['jax'] / max(mem['pytorch'], 1e-9):>9.2f}  {json.dumps(cmp['options']) if cmp['options'] else ''}",
              flush=True)
    print(f"median_step_time_ratio={statistics.median(c['ratio'] for c, _ in rows):.2f}")
    print(f"median_peak_memory_ratio={statistics.median(m['jax'] / max(m['pytorch'], 1e-9) for _, m in rows):.2f}")
    print(f"max_output_difference={max(c['difference'] for c, _ in rows):.1e}")


if __name__ == "__main__":
    main()
