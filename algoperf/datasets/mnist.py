"""MNIST: the four IDX files, read as they are by the mnist workload (no conversion)."""

from __future__ import annotations

import os
import shutil

from algoperf.datasets.base import Recipe, load_manifest
from algoperf.datasets.prepare import Job


def convert(job: Job) -> None:
    if not job.needs("idx"):
        return
    outputs = []
    for f in job.recipe.files:
        target = job.out / f.name
        target.unlink(missing_ok=True)
        try:
            os.link(job.source(f.name), target)  # the downloads are the prepared files
        except OSError:
            shutil.copyfile(job.source(f.name), target)
        outputs.append(target)
    job.done("idx", outputs)


RECIPE = Recipe(
    name="mnist",
    convert=convert,
    scratch_per_source_byte=0.0,
    prepared_per_source_byte=1.0,  # a copy of the downloads where a hard link is not possible
    keep_sources_as_output=True,
    manifest=load_manifest("mnist"),
)
