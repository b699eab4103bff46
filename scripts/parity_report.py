"""JAX against PyTorch, per workload: output difference, step time ratio, peak memory ratio.

Every registered workload or variant with both implementations and a `convert.py` is measured
on the CPU, on a small batch of its synthetic data (`--batch-size`, default 8), with the model
options of its converter's `PARITY_OPTIONS` if it has some (e.g. Criteo's smaller table). Both
frameworks get the same numpy batch in their model's layout, as the parity tests give it
(PyTorch: `device_batch`, LibriSpeech's tuples of tensors; JAX: the numpy arrays on the device,
through `model_batch` where the workload has one, LibriSpeech's tuples); tuple outputs too:

- output difference: max |jax - torch| / max |torch| of the eval-mode outputs (the largest over
  the arrays of a tuple output such as LibriSpeech's (logits, paddings)), float32, the
  PyTorch weights loaded into flax (its zero head perturbed first, so that it is not 0 vs 0);
- step time: one AdamW step (forward, loss, backward, update; JAX jitted, its compile excluded)
  timed in interleaved rounds (torch, jax, torch, jax, ...) in one process on one CPU thread
  each (`torch.set_num_threads(1)`, XLA's single-threaded CPU runtime): the ratio compares the
  frameworks' code, not their thread pools, and both see the same machine load; the median of
  the per-round ratios;
- peak memory: one process per framework builds the model and takes `--steps` steps; its peak
  resident memory above what the process held after importing the framework (`ru_maxrss` minus
  the resident size after import): what the model, its optimizer and its step cost (for JAX,
  XLA's compilation of the step included).

    python scripts/parity_report.py [--workloads NAME ...] [--rounds 7] [--batch-size 8]

The last line is `max_output_difference=<the largest output difference>`.
"""

from __future__ import annotations

import argparse
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
def _options(name: str) -> dict[str, Any]:
    """The converter's `PARITY_OPTIONS` of a workload (model options of a CPU-sized twin)."""
    import importlib

    from workloads import registry

    package = registry.get(name).implementations["jax"].split(":")[0].rsplit(".", 1)[0]
    return dict(getattr(importlib.import_module(f"{package}.convert"), "PARITY_OPTIONS", {}))


def _float32(tree: Any) -> Any:
    """float64 numpy arrays (nested dicts included: OGBG's graphs) as float32."""
    import numpy as np

    if isinstance(tree, dict):
        return {k: _float32(v) for k, v in tree.items()}
    if isinstance(tree, np.ndarray) and tree.dtype == np.float64:
        return tree.astype(np.float32)
    return tree


def _numpy_batch(workload: Any, batch_size: int) -> dict[str, Any]:
    """The first synthetic training batch, flat numpy, as the input pipeline yields it (no
    weights added: training batches carry none, and each loss_fn then counts every example)."""
    return _float32(next(iter(workload.train_batches(batch_size, 0))))


def _torch_batch(tw: Any, batch: dict[str, Any]) -> dict[str, Any]:
    """The batch as the PyTorch model takes it: `device_batch` (tensors; LibriSpeech's tuples)."""
    return tw.device_batch(batch)


def _jax_batch(jw: Any, batch: dict[str, Any]) -> Any:
    """The batch as the flax model takes it, as the parity tests give it: the numpy arrays in the
    model's layout (`model_batch` where the JAX workload has one: LibriSpeech's tuples), placed on
    the one device."""
    import jax

    model_batch = getattr(jw, "model_batch", None)
    return jax.device_put(model_batch(batch) if model_batch else batch, jax.devices()[0])


def _perturb_zero_weights(model: Any) -> None:
    """A zero-initialised tensor (ViT's head) would compare 0 with 0: drawn from U(-0.1, 0.1)."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            if p.numel() > 1 and not bool(p.any()):
                p.uniform_(-0.1, 0.1)


def _torch_stepper(tw: Any, model: Any, tb: dict[str, Any]) -> Any:
    """One AdamW step on the batch `tb` (in the torch model's layout), dropout off."""
    import torch

    from algoperf import spec

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)

    def step() -> None:
        optimizer.zero_grad()
        logits, _ = tw.model_fn(model, tb, None, spec.ForwardPassMode.TRAIN, None, True, dropout_rate=0.0)
        loss = tw.loss_fn(tb["targets"], logits, tb.get("weights"))
        (loss["summed"] / loss["n_valid_examples"]).backward()
        optimizer.step()

    return step


def _jax_stepper(jw: Any, params: Any, model_state: Any, jb: Any) -> Any:
    """One jitted optax AdamW step on the batch `jb` (in the flax model's layout, on the device,
    an argument of the jitted function rather than a constant folded into it), dropout off."""
    import jax
    import optax

    from algoperf import spec

    tx = optax.adamw(1e-3, weight_decay=0.01)

    @jax.jit
    def update(params: Any, model_state: Any, opt_state: Any, batch: Any) -> Any:
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
        state[:] = jax.block_until_ready(update(*state, jb))

    return step


def output_difference(theirs: Any, ours: Any) -> float:
    """The largest max |jax - torch| / max |torch| over the outputs' arrays (a model may return
    several: LibriSpeech's (logits, paddings)); both outputs must have the same structure."""
    import jax

    import parity

    theirs = [t.detach().numpy() for t in jax.tree.leaves(theirs)]
    ours = jax.tree.leaves(ours)
    if len(theirs) != len(ours):
        raise ValueError(f"the PyTorch model returned {len(theirs)} arrays, the flax model "
                         f"{len(ours)}: model_fn outputs should have the same structure")
    return max(parity.max_relative_difference(o, t) for o, t in zip(ours, theirs))


def worker_compare(name: str, batch_size: int, rounds: int) -> dict[str, Any]:
    """Output difference and interleaved step times, both frameworks in this process, built as
    the parity tests build them (tests/parity_twins.py): the PyTorch model from seed 0, its weights
    in the flax model through the workload's converter."""
    sys.path.insert(0, str(REPO / "tests"))
    import parity_twins
    import torch

    from algoperf import spec

    import parity

    torch.set_num_threads(1)
    options = _options(name)
    tw, jw, model, convert = parity_twins.twins(name, **options)
    _perturb_zero_weights(model)
    params, model_state = parity.load_into_jax(model, convert)
    batch = _numpy_batch(tw, batch_size)
    tb, jb = _torch_batch(tw, batch), _jax_batch(jw, batch)
    with torch.no_grad():
        theirs, _ = tw.model_fn(model, tb, None, spec.ForwardPassMode.EVAL, None, False)
    ours = parity_twins.eval_outputs(jw, params, model_state, jb)
    difference = output_difference(theirs, ours)

    torch_step = _torch_stepper(tw, model, tb)
    jax_step = _jax_stepper(jw, params, model_state, jb)
    start = time.perf_counter()
    jax_step()  # compile
    compile_s = time.perf_counter() - start
    # A second warm-up step each: a model without state gets `None` in and an empty state back,
    # so the jitted step compiles once more on its second call (measured: MNIST's 2nd step 0.7 s).
    for _ in range(2):
        torch_step()
    jax_step()
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
            "jax_compile_s": compile_s, "options": options}


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
        import torch

    baseline = _rss_bytes()
    from workloads import registry

    options = _options(name)
    if framework == "pytorch":
        torch.set_num_threads(1)
        torch.manual_seed(0)
        tw = registry.load(name, "pytorch", data="synthetic", **options)
        model, _ = tw.init_model_fn(prng_key(0))
        step = _torch_stepper(tw, model, _torch_batch(tw, _numpy_batch(tw, batch_size)))
    else:
        jw = registry.load(name, "jax", data="synthetic", **options)
        params, model_state = jw.init_model_fn(prng_key(0))
        step = _jax_stepper(jw, params, model_state, _jax_batch(jw, _numpy_batch(jw, batch_size)))
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
