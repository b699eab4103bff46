"""fastMRI knee single-coil: the licensed `.tar.xz` archives -> the HDF5 volumes, split as the reference.

The archives (`knee_singlecoil_train.tar.xz`, `knee_singlecoil_val.tar.xz`) come from NYU after
signing the data-sharing agreement: pass their folder as `--source`. They hold
`singlecoil_{train,val}/file<id>.h5`; the volumes are extracted into `knee_singlecoil_train/` and
`knee_singlecoil_val/` (the reference's names), which is what `workloads/fastmri/workload.py`
reads: the validation split is the first 100 validation volumes by name, the test split the rest.
"""

from __future__ import annotations

import shutil

from algoperf.datasets.archives import extract
from algoperf.datasets.base import DatasetUnavailableError, Recipe, load_manifest
from algoperf.datasets.prepare import Job

ARCHIVES = {"train": "knee_singlecoil_train.tar.xz", "val": "knee_singlecoil_val.tar.xz"}


def convert(job: Job) -> None:
    for part, archive in ARCHIVES.items():
        if not job.needs(part):
            continue
        staging = job.scratch / part
        files = extract(job.source(archive), staging, keep=lambda n: n.endswith(".h5"))
        if not files:
            raise DatasetUnavailableError(f"{archive} holds no .h5 volumes: not a fastMRI archive")
        target = job.out / f"knee_singlecoil_{part}"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        moved = []
        for f in files:
            dest = target / f.name
            f.replace(dest)  # same disk: a rename, no second copy
            moved.append(dest)
        job.done(part, moved)
        shutil.rmtree(staging, ignore_errors=True)


RECIPE = Recipe(
    name="fastmri",
    convert=convert,
    scratch_per_source_byte=0.0,  # extracted next to the output, then renamed into place
    # The reference's dataset_setup.py: about 90 GB of archives become about 110 GB of volumes.
    prepared_per_source_byte=1.25,
    licensed_help=(
        "Request them at https://fastmri.med.nyu.edu/ (knee single-coil train and validation), then "
        "run `algoperf datasets prepare fastmri --data-dir DIR --source FOLDER`."
    ),
    manifest=load_manifest("fastmri"),
)
