"""The JAX adapter: one mesh over all local devices, honest timestamps, state as numpy pytrees.

Imported only when a JAX run starts. Data parallelism is `jax.sharding`: batches split along the
`batch` axis of one global mesh, parameters and optimizer state replicated, steps `jax.jit`-ed by
the submission (DESIGN.md, Scale). Before every timestamp the clock waits with
`jax.block_until_ready` on what `update_params` returned: JAX dispatches asynchronously, and the
reference, which never waits, moves training time into the untimed eval (RULES.md, The clock).
"""

from __future__ import annotations

import os
import random
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from algoperf import jax_sharding_utils, spec
from algoperf.checkpoint import FrameworkArray

name = "jax"


def init_distributed(distributed: Any = None) -> None:
    """Joins a multi-process JAX runtime (several nodes) when the run has several processes."""
    if distributed is None or distributed.num_processes <= 1:
        return
    if jax.distributed.is_initialized():
        return
    # Collectives between processes on CPUs (the tests' two "nodes") go through gloo; GPUs use
    # NCCL whatever this says.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=distributed.coordinator,
        num_processes=distributed.num_processes,
        process_id=distributed.process_id,
    )


def set_threads(threads: int) -> int:
    """XLA's CPU thread pool is sized when the backend starts; record what is in force.

    The count cannot be changed after JAX has started, so the runner sets XLA_FLAGS /
    OMP settings before the first JAX import when it launches a process; here we only report.
    """
    return threads


def device_facts() -> dict[str, Any]:
    devices = jax.devices()
    return {
        "framework": "jax", "version": jax.__version__, "backend": jax.default_backend(),
        "devices": [str(d) for d in devices], "device_count": len(devices),
        "device_kind": devices[0].device_kind if devices else None,
        "process_count": jax.process_count(), "process_index": jax.process_index(),
    }


def seed_everything(seed: int) -> None:
    # JAX's own randomness is explicit keys; Python's and numpy's global RNGs may still be used
    # by a submission's host code.
    random.seed(seed)
    np.random.seed(seed % (2**32))


def sync(outputs: Any = None) -> None:
    """Waits until every array in `outputs` is computed (all of the step's work)."""
    if outputs is not None:
        jax.block_until_ready(outputs)


def world_size() -> int:
    return jax.process_count()


def is_rank_zero() -> bool:
    return jax.process_index() == 0


def barrier() -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("algoperf")


def agree(flags: list[bool], elapsed: float = 0.0) -> tuple[list[bool], float]:
    """As the torch backend's: OR of the flags and MAX of `elapsed` over processes."""
    if jax.process_count() == 1:
        return flags, elapsed
    from jax.experimental import multihost_utils

    local = np.array([elapsed, *(1.0 if f else 0.0 for f in flags)], dtype=np.float64)
    gathered = np.asarray(multihost_utils.process_allgather(local))
    values = gathered.reshape(jax.process_count(), -1).max(axis=0)
    return [bool(v > 0.5) for v in values[1:]], float(values[0])


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])


def to_numpy(leaf: Any) -> Any:
    """A jax.Array as numpy (fetched from the devices); typed PRNG keys as their raw data."""
    if isinstance(leaf, jax.Array):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return FrameworkArray("jax", "key<" + str(jax.random.key_impl(leaf)) + ">",
                                  np.asarray(jax.random.key_data(leaf)))
        return host_copy(leaf)
    return leaf


def host_copy(x: Any) -> np.ndarray:
    """A numpy copy of an array, also of a replicated array spanning several processes (read
    from this process's own copy)."""
    if x.is_fully_addressable:
        return np.asarray(jax.device_get(x))
    if not x.is_fully_replicated:
        raise ValueError("an array split across processes has no single host copy")
    return np.asarray(x.addressable_data(0))


def from_numpy(fresh: Any, saved: Any) -> Any:
    """A saved array placed where the fresh one lives (same sharding), or replicated."""
    if isinstance(saved, FrameworkArray) and saved.framework == "jax":
        return jax.random.wrap_key_data(jnp.asarray(saved.value))
    if not isinstance(saved, np.ndarray):
        return saved
    if isinstance(fresh, jax.Array):
        return jax.device_put(saved.astype(fresh.dtype), fresh.sharding)
    if isinstance(fresh, np.ndarray):
        return saved
    return jax.device_put(saved, jax_sharding_utils.get_replicate_sharding())


def params_finite(params: Any) -> bool:
    leaves = [x for x in jax.tree.leaves(params) if hasattr(x, "dtype")]
    return all(bool(np.isfinite(host_copy(x) if isinstance(x, jax.Array) else x).all())
               for x in leaves if jnp.issubdtype(x.dtype, jnp.inexact))


def count_params(params: Any) -> int:
    return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def param_shapes(params: Any) -> Any:
    """The tree of `spec.ShapeTuple`s of a parameter tree (the reference's `param_shapes`)."""
    return jax.tree.map(lambda x: spec.ShapeTuple(x.shape), params)


def param_types(params: Any) -> Any:
    """The tree of `spec.ParameterType`s of a flax parameter tree, from module and leaf names.

    Same rules as the reference's `jax_param_types`, but the result has the very keys of the
    parameter tree (the reference lower-cases them), so it can be mapped together with params.
    """
    P = spec.ParameterType

    def kind(path: tuple[str, ...]) -> spec.ParameterType:
        leaf = path[-1].lower()
        parents = [p.lower() for p in path[:-1]]
        module = parents[-1] if parents else ""
        parent = "/".join(parents)
        if "batchnorm" in module or module.startswith("bn"):
            return P.BATCH_NORM_BIAS if leaf == "bias" else P.BATCH_NORM_SCALE
        if "layernorm" in module or "norm" in module or module.startswith("ln"):
            return P.LAYER_NORM_BIAS if leaf == "bias" else P.LAYER_NORM_SCALE
        if "conv" in parent:
            return P.BIAS if "bias" in leaf else P.CONV_WEIGHT
        if "embedding" in leaf or ("embed" in parent and leaf == "kernel"):
            return P.EMBEDDING
        if "attention" in parent:
            if leaf == "bias":
                return P.ATTENTION_BIAS
            for part, t in (("query", P.ATTENTION_Q), ("key", P.ATTENTION_K),
                            ("value", P.ATTENTION_V), ("out", P.ATTENTION_OUT)):
                if part in module and leaf == "kernel":
                    return t
            return P.WEIGHT
        return P.BIAS if "bias" in leaf else P.WEIGHT

    def walk(tree: Any, path: tuple[str, ...]) -> Any:
        if hasattr(tree, "items"):
            return {k: walk(v, (*path, str(k))) for k, v in tree.items()}
        return kind(path)

    return walk(params, ())


def replicate(tree: Any) -> Any:
    return jax_sharding_utils.replicate(tree)


def shard_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """A numpy batch split along its leading axis over the mesh (the global batch must divide).

    With several processes each holds the same global batch (the same seeded pipeline) and
    places only the rows of its own devices."""
    devices = len(jax.devices())
    for k, v in batch.items():
        if hasattr(v, "shape") and v.shape and v.shape[0] % devices:
            raise ValueError(
                f"batch[{k!r}] has {v.shape[0]} rows, not divisible by the {devices} devices; "
                "choose a global batch size that is a multiple of the device count."
            )
    if jax.process_count() == 1:
        return jax_sharding_utils.shard_along_batch_dim(batch)
    sharding = jax_sharding_utils.get_batch_dim_sharding()
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(x.shape, sharding, lambda index: x[index]), batch)


def host_devices_flag(count: int) -> str:
    """The XLA flag that makes the CPU appear as `count` devices (tests, CPU data parallelism)."""
    return f"--xla_force_host_platform_device_count={count}"


def configured_host_devices() -> int | None:
    flags = os.environ.get("XLA_FLAGS", "")
    for part in flags.split():
        if part.startswith("--xla_force_host_platform_device_count="):
            return int(part.split("=", 1)[1])
    return None
