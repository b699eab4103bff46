"""AlgoPerf's `algoperf.jax_utils`, for JAX submissions and workloads that import it.

`Dropout` takes its rate per call (the reference's layer does too), so a model built once can
train at the rate a submission picks in `model_fn(..., dropout_rate=...)` without rebuilding.
Unlike one version of the reference's layer, kept units are scaled by 1 / (1 - rate), as
`torch.nn.functional.dropout` does, so both frameworks train the same function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class Dropout(nn.Module):
    """Inverted dropout whose rate may be given at call time (a rate of 0 is the identity)."""

    rate: float | None = None
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(
        self, inputs: Any, deterministic: bool | None = None, rate: float | None = None,
        rng: Any = None,
    ) -> Any:
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        rate = self.rate if rate is None else rate
        if deterministic or rate is None or rate == 0.0:
            return inputs
        if rate == 1.0:
            return jnp.zeros_like(inputs)
        keep = 1.0 - rate
        if rng is None:
            rng = self.make_rng(self.rng_collection)
        shape = list(inputs.shape)
        for dim in self.broadcast_dims:
            shape[dim] = 1
        mask = jnp.broadcast_to(jax.random.bernoulli(rng, p=keep, shape=shape), inputs.shape)
        return jax.lax.select(mask, inputs / keep, jnp.zeros_like(inputs))


def print_jax_model_summary(model: nn.Module, fake_inputs: Any) -> None:
    """Prints a table of the module's layers and parameter counts."""
    table = nn.tabulate(model, jax.random.PRNGKey(0), console_kwargs={"width": 240})
    print(table(fake_inputs, train=False))
