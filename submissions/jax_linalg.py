"""Matrix decompositions over stacks of matrices, for the JAX baselines' preconditioners."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax


def over_stack(fn: Callable[[jax.Array], Any], stack: jax.Array) -> Any:
    """`fn` (a LAPACK-backed decomposition such as `jnp.linalg.eigh` or `jnp.linalg.inv`) of every
    matrix of a (k, n, n) stack: one batched call, except on the CPU.

    On the CPU, jaxlib's batched LAPACK kernels split the batch over XLA's intra-op thread pool
    and block a pool thread until every part is done. When several (host) devices run such a call
    at once, all pool threads can end up waiting on each other and the step never finishes
    (measured with jax 0.10.2: the mnist1d Shampoo step hung in its first root computation on 2
    and on 8 host devices, the threads in `ParallelBatchMap` / `BlockingCounter::Wait`). There
    `lax.map` runs the matrices one after the other, each an unbatched call that never waits on
    the pool; on accelerators the batched call stays.
    """
    if jax.default_backend() == "cpu":
        return jax.lax.map(fn, stack)
    return fn(stack)
