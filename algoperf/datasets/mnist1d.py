"""MNIST-1D: generated here (no download), as the mnist1d workload generates it on first use."""

from __future__ import annotations

from algoperf.datasets.base import Recipe
from algoperf.datasets.prepare import Job


def convert(job: Job) -> None:
    from workloads.mnist1d import workload as mnist1d

    if job.needs("generated"):
        mnist1d.load(job.out)
        job.done("generated", sorted(job.out.glob("*.npz")))


RECIPE = Recipe(
    name="mnist1d",
    convert=convert,
    scratch_per_source_byte=0.0,
    prepared_per_source_byte=0.0,  # 5,000 x 40 floats: a few MB, generated
    manifest={"dataset": "mnist1d", "checksums_from": "generated", "files": []},
)
