"""AlgoPerf's `algoperf.jax_sharding_utils`, for JAX submissions that import it.

One mesh over every device, with a single axis named `batch` (the reference's layout): batches
are split along their leading axis, parameters and optimizer state are replicated. The mesh is
built once per process (the devices do not change during a run).
"""

from __future__ import annotations

import functools
from typing import Any

BATCH_AXIS = "batch"


@functools.cache
def get_mesh() -> Any:
    """The global mesh over all devices, axis `batch`."""
    import jax

    return jax.sharding.Mesh(jax.devices(), (BATCH_AXIS,))


def get_replicate_sharding() -> Any:
    """A sharding that keeps a full copy of an array on every device."""
    from jax.sharding import NamedSharding, PartitionSpec

    return NamedSharding(get_mesh(), PartitionSpec())


def get_batch_dim_sharding() -> Any:
    """A sharding that splits an array's leading (batch) axis across the devices."""
    from jax.sharding import NamedSharding, PartitionSpec

    return NamedSharding(get_mesh(), PartitionSpec(BATCH_AXIS))


def shard_along_batch_dim(x: Any) -> Any:
    """Every leaf of `x` placed on the devices, split along its leading axis."""
    import jax

    sharding = get_batch_dim_sharding()
    return jax.tree.map(lambda leaf: jax.device_put(leaf, sharding), x)


def replicate(x: Any) -> Any:
    """Every leaf of `x` copied to every device."""
    import jax

    sharding = get_replicate_sharding()
    return jax.tree.map(lambda leaf: jax.device_put(leaf, sharding), x)


def display_shard_info(x: Any) -> None:
    """Prints where each shard of an array lives (a debugging aid the reference also has)."""
    for shard in x.addressable_shards:
        print(f"shard.device: {shard.device}, index: {shard.index}, replica_id: {shard.replica_id}.")
