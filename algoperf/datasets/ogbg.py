"""ogbg-molpcba: OGB's `pcba.zip` (gzipped CSVs) -> the molecule arrays the ogbg workload loads.

The zip holds `pcba/raw/*.csv.gz` and `pcba/split/scaffold/*.csv.gz` (the OGB raw layout). They
are parsed once (11 million atom rows take pandas tens of seconds) and saved as `.npy` arrays in
the workload's in-memory layout (`workloads/ogbg/workload.py`: `save_arrays`), so a run loads them
in well under a second. Features are small integers (stored as uint8) and labels 0, 1 or unknown
(float16, exact for all three).
"""

from __future__ import annotations

from algoperf.datasets.archives import extract
from algoperf.datasets.base import DatasetUnavailableError, Recipe, load_manifest
from algoperf.datasets.prepare import Job

ARCHIVE = "pcba.zip"


def convert(job: Job) -> None:
    from workloads.ogbg import workload as ogbg

    if not job.needs("arrays"):
        return
    extract(job.source(ARCHIVE), job.scratch, keep=lambda n: "/raw/" in n or "/split/scaffold/" in n)
    roots = [p.parent for p in job.scratch.glob("*/raw")]
    if not roots:
        raise DatasetUnavailableError(f"{ARCHIVE} has no <folder>/raw/*.csv.gz: not OGB's molpcba download")
    graphs, splits = ogbg.load_ogb(roots[0])
    job.done("arrays", ogbg.save_arrays(graphs, splits, job.out))


RECIPE = Recipe(
    name="ogbg",
    convert=convert,
    scratch_per_source_byte=1.0,  # the zip's members are gzipped already: extracted ~ zip size
    # 11.4 M atoms x 9 B + 12.4 M bonds x (3 B + 16 B) + 437,929 x 128 x 2 B labels ~ 450 MB,
    # from a 39.5 MB zip.
    prepared_per_source_byte=12.0,
    manifest=load_manifest("ogbg"),
)
