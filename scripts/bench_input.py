"""Does each workload's training input keep up with its model? Pipeline alone vs model, and waiting.

Per workload, on data in the real format and of the real per-example size (archives written by
`algoperf.datasets.fixtures`: ImageNet JPEGs of about 500 x 375, 640-row k-space, utterances of
2-20 s, WMT sentences of 10-40 words, Criteo day files, molecules of molpcba's sizes), turned by
`algoperf datasets prepare` into what the pipeline reads:

- `model ex/s`: the real PyTorch model's training step (forward, backward, SGD) at the bench
  batch size on this CPU, median of a few steps after one warm-up: what the model consumes;
- `pipeline ex/s`: batches pulled from `build_input_queue` (the runner's queue: reading, decoding,
  batching, device placement) as fast as they come, nothing else running;
- `input_wait_fraction`: a synthetic-model loop through a fresh queue: each step takes the next
  batch (the time spent in `next()` is the wait) and then computes for the model's step time
  (torch matrix products on the runner's threads, so the input workers compete for the cores as
  they would with the real model). Fraction = wait / (wait + compute), first step included.

Goals (issue 15), on this 2-core CPU: pipeline ex/s >= 3 x model ex/s, input_wait_fraction <= 0.05.
Batch sizes are small enough that the real model steps in a minute at most on this CPU (both rates
grow about linearly with the batch size, so their ratio barely depends on it). Page cache: every
file fits in memory, as a dataset on a local SSD read for the second time would.

    .venv/bin/python scripts/bench_input.py                  # every workload
    .venv/bin/python scripts/bench_input.py -w ogbg wmt      # some

The last lines: `min_pipeline_over_model=...` and `max_input_wait_fraction=...`.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from algoperf import spec
from algoperf.datasets import fixtures
from algoperf.random_utils import prng_key, split
from workloads import registry

THREADS = os.cpu_count() or 1
# A model step slower than this is timed once after the warm-up, and the synthetic-model loop
# runs at most SYNTHETIC_SECONDS (at least 3 steps): a minute-long step waits for no batch anyway.
SLOW_STEP_SECONDS = 30.0
SYNTHETIC_SECONDS = 150.0
# ... and at least MIN_SYNTHETIC_SECONDS: a millisecond step (mnist) over 10 steps measured mostly
# the first batch's wait (the queue's start), a trial's first second, not its steady state.
MIN_SYNTHETIC_SECONDS = 5.0

# workload -> (bench batch size, number of batches of training data to write)
PLAN: dict[str, tuple[int, int]] = {
    "mnist": (1024, 16),
    "cifar": (128, 16),
    "imagenet_resnet": (32, 12),
    "fastmri": (8, 12),
    "criteo1tb": (8192, 12),
    "librispeech_conformer": (8, 12),
    "wmt": (8, 12),
    "ogbg": (128, 12),
}


# ---- data: fixture archives in the real formats, through `algoperf datasets prepare` -------------
def _prepare(dataset: str, root: Path, source: Path | None = None) -> Path:
    from algoperf.datasets import recipe
    from algoperf.datasets.prepare import prepare

    mirror = root / "mirror"
    return prepare(recipe(dataset), root / "data", mirror=str(mirror) if mirror.exists() else None,
                   source=source, say=lambda line: None).parent


def data_mnist(root: Path, batch: int, batches: int) -> Path:
    fixtures.write_mirror("mnist", root / "mirror", num_train=batch * batches * 6 // 5, num_test=1000)
    return _prepare("mnist", root)


def data_cifar(root: Path, batch: int, batches: int) -> Path:
    fixtures.write_mirror("cifar", root / "mirror", per_batch=batch * batches // 4, num_test=512)
    return _prepare("cifar", root)


def data_imagenet(root: Path, batch: int, batches: int) -> Path:
    from algoperf.datasets.imagenet import read_lines, tfds_label_file

    wnids = read_lines(tfds_label_file("labels.txt"))[:8]
    licensed = root / "licensed"
    fixtures.write_imagenet(licensed, wnids, train_per_class=batch * batches // 8, val_labels=[],
                            realistic=True)
    fixtures.write_sha256sums(licensed)
    return _prepare("imagenet", root, licensed)


def data_fastmri(root: Path, batch: int, batches: int) -> Path:
    licensed = root / "licensed"
    fixtures.write_fastmri(licensed, train_volumes=batch * batches // 16, val_volumes=2, slices=16,
                           realistic=True)
    fixtures.write_sha256sums(licensed)
    return _prepare("fastmri", root, licensed)


def data_criteo(root: Path, batch: int, batches: int) -> Path:
    fixtures.write_mirror("criteo1tb", root / "mirror", lines_per_day=batch * batches // 23 + 1)
    return _prepare("criteo1tb", root)


def data_librispeech(root: Path, batch: int, batches: int) -> Path:
    others = {s: 2 for s in fixtures.LIBRISPEECH_SUBSETS[1:]}
    fixtures.write_mirror("librispeech", root / "mirror", seconds=(2.0, 20.0),
                          utterances={"train-clean-100": batch * batches, **others})
    return _prepare("librispeech", root)


def data_wmt(root: Path, batch: int, batches: int) -> Path:
    # About 8 pairs of 10-40 words fill a packed row of 256 tokens.
    fixtures.write_mirror("wmt", root / "mirror", train_per_archive=batch * batches * 2, words=(10, 40))
    return _prepare("wmt", root)


def data_ogbg(root: Path, batch: int, batches: int) -> Path:
    fixtures.write_mirror("ogbg", root / "mirror", num_graphs=batch * batches * 10 // 8)
    return _prepare("ogbg", root)


DATA: dict[str, Callable[[Path, int, int], Path]] = {
    "mnist": data_mnist,
    "cifar": data_cifar,
    "imagenet_resnet": data_imagenet,
    "fastmri": data_fastmri,
    "criteo1tb": data_criteo,
    "librispeech_conformer": data_librispeech,
    "wmt": data_wmt,
    "ogbg": data_ogbg,
}

# ---- measurements -----------------------------------------------------------------------------
def train_step(workload: Any, model: Any, state: Any, optimizer: Any, batch: Any, rng: Any) -> None:
    optimizer.zero_grad()
    logits, _ = workload.model_fn(model, batch, state, spec.ForwardPassMode.TRAIN, rng, True)
    loss = workload.loss_fn(batch["targets"], logits, batch.get("weights"))
    (loss["summed"] / loss["n_valid_examples"]).backward()
    optimizer.step()


def model_step_seconds(workload: Any, batch: Any, steps: int = 2) -> float:
    """Median time of the real model's training step on one batch, after a warm-up step (one
    timed step when the warm-up took more than SLOW_STEP_SECONDS)."""
    model_rng, rng = split(prng_key(0), 2)
    model, state = workload.init_model_fn(model_rng)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    times: list[float] = []
    while len(times) < steps + 1:
        start = time.perf_counter()
        train_step(workload, model, state, optimizer, batch, rng)
        times.append(time.perf_counter() - start)
        if times[0] > SLOW_STEP_SECONDS:
            steps = 1
    del model, optimizer
    gc.collect()
    return statistics.median(times[1:])


def queue(workload: Any, batch_size: int, data_dir: Path) -> Any:
    return workload.build_input_queue(prng_key(1), "train", str(data_dir), batch_size)


def close(q: Any) -> None:
    getattr(q, "close", lambda: None)()


def pipeline_seconds_per_batch(workload: Any, batch_size: int, data_dir: Path, batches: int) -> float:
    q = queue(workload, batch_size, data_dir)
    next(q)  # start-up (opening files, starting workers) is not the steady rate
    start = time.perf_counter()
    for _ in range(batches):
        next(q)
    seconds = (time.perf_counter() - start) / batches
    close(q)
    return seconds


def compute_for(seconds: float, a: torch.Tensor) -> None:
    """Busy matrix products (GIL released, torch's threads) for `seconds`."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        torch.mm(a, a)


def input_wait_fraction(workload: Any, batch_size: int, data_dir: Path, step: float, steps: int) -> float:
    a = torch.randn(192, 192)
    q = queue(workload, batch_size, data_dir)
    wait = busy = 0.0
    for _ in range(steps):
        start = time.perf_counter()
        next(q)
        got = time.perf_counter()
        compute_for(step, a)
        wait += got - start
        busy += time.perf_counter() - got
    close(q)
    return wait / (wait + busy)


def bench(name: str, root: Path, pipeline_batches: int, steps: int) -> dict[str, float]:
    batch_size, batches = PLAN[name]
    data_dir = DATA[name](root / name, batch_size, batches)
    workload = registry.load(name, "pytorch", data="real", data_dir=str(data_dir))
    q = queue(workload, batch_size, data_dir)
    first = next(q)
    close(q)
    model_s = model_step_seconds(workload, first)
    del first
    print(f"# {name}: model step {model_s:.3f} s", flush=True)
    pipe_s = pipeline_seconds_per_batch(workload, batch_size, data_dir, pipeline_batches)
    steps = max(3, min(max(steps, math.ceil(MIN_SYNTHETIC_SECONDS / model_s)), int(SYNTHETIC_SECONDS / model_s)))
    fraction = input_wait_fraction(workload, batch_size, data_dir, model_s, steps)
    return {
        "batch": batch_size,
        "model": batch_size / model_s,
        "pipeline": batch_size / pipe_s,
        "wait": fraction,
        "steps": steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-w", "--workloads", nargs="*", default=list(PLAN), choices=list(PLAN))
    parser.add_argument("--pipeline-batches", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="synthetic-model steps")
    parser.add_argument("--threads", type=int, default=THREADS, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.workloads:
            rows[name] = bench(name, Path(tmp), args.pipeline_batches, args.steps)
            r = rows[name]
            print(f"# {name}: batch {r['batch']}, model {r['model']:.1f} ex/s, "
                  f"pipeline {r['pipeline']:.1f} ex/s, wait {r['wait']:.3f} over {r['steps']} steps",
                  flush=True)
    print(f"threads={args.threads}")
    print(f"{'workload':<24}{'batch':>7}{'model ex/s':>13}{'pipeline ex/s':>15}{'ratio':>8}"
          f"{'input_wait_fraction':>21}  goal")
    for name, r in rows.items():
        ratio = r["pipeline"] / r["model"]
        ok = "ok" if ratio >= 3 and r["wait"] <= 0.05 else "MISSED"
        print(f"{name:<24}{r['batch']:>7}{r['model']:>13.1f}{r['pipeline']:>15.1f}{ratio:>8.1f}"
              f"{r['wait']:>21.3f}  {ok}")
    print(f"min_pipeline_over_model={min(r['pipeline'] / r['model'] for r in rows.values()):.2f}")
    print(f"max_input_wait_fraction={max(r['wait'] for r in rows.values()):.3f}")


if __name__ == "__main__":
    main()
