"""Criteo 1TB: the 24 gzipped TSV days -> pre-hashed, memory-mappable binary shards.

Each line is parsed once as the reference parses it (`workloads/criteo1tb/workload.py`:
missing values, log(x + 1) of the integer features, FarmHash Fingerprint64 of every categorical
value into its column's vocabulary) and stored in shards of 5,000,000 rows (the reference's file
split): `<split>/day_<d>_<part>.{labels,dense,ids}.npy` with labels uint8, the 13 dense features
float32 and the 26 ids int32. Days 0-22 are the train split; day 23's first 95,000,000 lines the
test split and the rest the validation split (the reference's parts 00-18 and 19-35). A training
batch is then a few slices of memory-mapped arrays, so the input pipeline never parses text in
the timed loop. Days convert in parallel (`--workers`), each day one unit of the manifest.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from algoperf.datasets.base import Recipe, load_manifest
from algoperf.datasets.prepare import Job

DAYS = 24


def _convert(args: tuple[str, int, str, int]) -> list[str]:
    from workloads.criteo1tb import workload as criteo

    path, day, out, shard_rows = args
    return [str(p) for p in criteo.convert_day(Path(path), day, Path(out), shard_rows)]


def convert(job: Job, shard_rows: int | None = None) -> None:
    from workloads.criteo1tb import workload as criteo

    rows = shard_rows or criteo.SHARD_ROWS
    todo = [d for d in range(DAYS) if job.needs(f"day_{d}")]
    tasks = [(str(job.source(f"day_{d}.gz")), d, str(job.out), rows) for d in todo]
    if job.workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(job.workers) as pool:
            for day, files in zip(todo, pool.map(_convert, tasks)):
                job.done(f"day_{day}", [Path(f) for f in files])
                job.say(f"criteo1tb: day {day} converted")
    else:
        for day, task in zip(todo, tasks):
            job.done(f"day_{day}", [Path(f) for f in _convert(task)])
            job.say(f"criteo1tb: day {day} converted")


RECIPE = Recipe(
    name="criteo1tb",
    convert=convert,
    scratch_per_source_byte=0.0,  # the days are read straight from their .gz files
    # 4,373,472,329 rows x 157 bytes (1 + 13 x 4 + 26 x 4) = 686.6 GB from about 350 GB of .gz.
    prepared_per_source_byte=1.97,
    manifest=load_manifest("criteo1tb"),
)
