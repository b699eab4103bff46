"""DLRM-small in JAX (flax linen) and its layer-norm / resnet / embed-init variants, as the twin.

Names follow the reference's flax DLRM (`Dense_0..` in the order the layers are applied,
`LayerNorm_0..` likewise, and one `embedding_table` of vocab x 128), so submissions that address
parameters by name work. The numbers are the PyTorch twin's (`torch_workload.py`), which a
parity test holds equal:

- An id is the categorical input (a float) cast to an integer, mod the vocabulary; its row of
  the table is its embedding. The table is the reference's single (vocab, 128) parameter (the
  twin keeps it as 4 chunks of rows, which `convert.py` joins), created and kept split by rows
  over the devices of the mesh: 2 GB in float32, it would otherwise be copied to every device.
- DlrmSmall: bottom MLP 13 -> 512 -> 256 -> 128 (ReLU, then LayerNorm in the layer-norm
  variant); the dot interaction of the bottom output and the 26 embeddings (upper triangle of the
  27 x 27 Gram matrix with its diagonal: 378 values) after the bottom output; top MLP 506 -> 1024
  -> 1024 -> 512 -> 256 -> 1 (ReLU, then LayerNorm in the variant, after every layer but the
  last), dropout after the 256-wide layer. The variant also normalises each embedding.
- DLRMResNet: bottom 13 -> 256 -> 256 -> 256 with residual sums on the 2nd and 3rd layer; the
  flattened embeddings after the bottom output; top 3,584 -> 256 x 4 -> 1, residual sums on the
  2nd to 4th layer, dropout inside the 4th.
- Initialisation: bottom kernels Xavier-uniform, top kernels N(0, 2 / (fan_in + fan_out)), every
  bias N(0, 1 / fan_out); the table uniform(0, 1) / sqrt(vocab) (times `embedding_init_multiplier`
  instead, if given: criteo1tb_embed_init). LayerNorm eps 1e-6.

The model option `vocab_size` (default 4,194,304) gives a smaller table with the same code, which
the parity tests use.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from algoperf import jax_sharding_utils, spec
from algoperf.backends import jax as backend
from algoperf.jax_utils import Dropout
from workloads.criteo1tb.workload import NUM_DENSE, NUM_SPARSE, VOCAB_SIZE, CriteoData
from workloads.jax_base import JaxWorkload

EMBED_DIM = 128
TABLE = "embedding_table"


def _bottom_dense(width: int) -> nn.Dense:
    return nn.Dense(width, kernel_init=nn.initializers.xavier_uniform(),
                    bias_init=nn.initializers.normal(float(np.sqrt(1.0 / width))))


def _top_dense(fan_in: int, width: int) -> nn.Dense:
    return nn.Dense(width, kernel_init=nn.initializers.normal(float(np.sqrt(2.0 / (fan_in + width)))),
                    bias_init=nn.initializers.normal(float(np.sqrt(1.0 / width))))


class Embedding(nn.Module):
    """Mixin: the (vocab, embed_dim) table and the lookup of the 26 categorical inputs."""

    def lookup(self, sparse: Any, vocab_size: int, embed_dim: int, multiplier: float | None) -> Any:
        scale = 1.0 / np.sqrt(vocab_size) if multiplier is None else multiplier

        def init(key: Any, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Any:
            return jax.random.uniform(key, shape, dtype, 0.0, 1.0) * scale

        table = self.param(TABLE, init, (vocab_size, embed_dim), jnp.float32)
        ids = sparse.astype(jnp.int32) % vocab_size
        return jnp.take(table, ids, axis=0)


class DlrmSmall(Embedding):
    vocab_size: int = VOCAB_SIZE
    mlp_bottom_dims: Sequence[int] = (512, 256, 128)
    mlp_top_dims: Sequence[int] = (1024, 1024, 512, 256, 1)
    embed_dim: int = EMBED_DIM
    use_layer_norm: bool = False
    embedding_init_multiplier: float | None = None

    @nn.compact
    def __call__(self, x: Any, train: bool, dropout_rate: float = 0.0) -> Any:
        dense, sparse = x[:, :NUM_DENSE], x[:, NUM_DENSE:]
        for width in self.mlp_bottom_dims:
            dense = nn.relu(_bottom_dense(width)(dense))
            if self.use_layer_norm:
                dense = nn.LayerNorm(epsilon=1e-6)(dense)
        embedded = self.lookup(sparse, self.vocab_size, self.embed_dim, self.embedding_init_multiplier)
        if self.use_layer_norm:
            embedded = nn.LayerNorm(epsilon=1e-6)(embedded)
        stacked = jnp.concatenate([dense[:, None], embedded], axis=1)
        gram = jnp.einsum("bif,bjf->bij", stacked, stacked)
        rows, cols = np.triu_indices(NUM_SPARSE + 1)
        x = jnp.concatenate([dense, gram[:, rows, cols]], axis=1)
        for i, width in enumerate(self.mlp_top_dims):
            x = _top_dense(x.shape[-1], width)(x)
            if i < len(self.mlp_top_dims) - 1:
                x = nn.relu(x)
                if self.use_layer_norm:
                    x = nn.LayerNorm(epsilon=1e-6)(x)
            if i == len(self.mlp_top_dims) - 2:
                x = Dropout()(x, deterministic=not train, rate=dropout_rate)
        return x


class DLRMResNet(Embedding):
    vocab_size: int = VOCAB_SIZE
    mlp_bottom_dims: Sequence[int] = (256, 256, 256)
    mlp_top_dims: Sequence[int] = (256, 256, 256, 256, 1)
    embed_dim: int = EMBED_DIM
    embedding_init_multiplier: float | None = None

    @nn.compact
    def __call__(self, x: Any, train: bool, dropout_rate: float = 0.0) -> Any:
        dense, sparse = x[:, :NUM_DENSE], x[:, NUM_DENSE:]
        for i, width in enumerate(self.mlp_bottom_dims):
            y = nn.relu(_bottom_dense(width)(dense))
            dense = dense + y if i > 0 else y
        embedded = self.lookup(sparse, self.vocab_size, self.embed_dim, self.embedding_init_multiplier)
        x = jnp.concatenate([dense, embedded.reshape(len(x), -1)], axis=1)
        n = len(self.mlp_top_dims)
        for i, width in enumerate(self.mlp_top_dims):
            y = _top_dense(x.shape[-1], width)(x)
            if i < n - 1:
                y = nn.relu(y)
            if i == n - 2:
                y = Dropout()(y, deterministic=not train, rate=dropout_rate)
            x = x + y if 0 < i < n - 1 else y
        return x


def build(options: dict[str, Any]) -> nn.Module:
    """The model of a workload's model_options (`resnet`, `use_layer_norm`,
    `embedding_init_multiplier`, and `vocab_size` for a smaller table)."""
    vocab = int(options.get("vocab_size", VOCAB_SIZE))
    multiplier = options.get("embedding_init_multiplier")
    if options.get("resnet"):
        return DLRMResNet(vocab_size=vocab, embedding_init_multiplier=multiplier)
    return DlrmSmall(vocab_size=vocab, use_layer_norm=bool(options.get("use_layer_norm")),
                     embedding_init_multiplier=multiplier)


def table_sharding() -> NamedSharding:
    """The embedding table's rows split over the mesh's devices."""
    return NamedSharding(jax_sharding_utils.get_mesh(), PartitionSpec(jax_sharding_utils.BATCH_AXIS))


def param_shardings(params: Any) -> Any:
    """Where each parameter lives: the table split by rows, every other one replicated."""
    replicated = jax_sharding_utils.get_replicate_sharding()
    return {k: (table_sharding() if k == TABLE else jax.tree.map(lambda _: replicated, v))
            for k, v in params.items()}


class Criteo1TbWorkload(CriteoData, JaxWorkload):
    def build_model(self) -> nn.Module:
        return build(self.options)

    def init_model_fn(
        self, rng: spec.RandomState, dropout_rate: float | None = None,
        aux_dropout_rate: float | None = None,
    ) -> tuple[spec.ParameterContainer, spec.ModelAuxiliaryState]:
        """As JaxWorkload's, except that the table is drawn directly into its row-split layout
        (never whole on one device, nor copied to every device)."""
        if self.batch_layout == "pmap":  # v0.5's layout: a full copy per device, as it had
            return super().init_model_fn(rng, dropout_rate, aux_dropout_rate)
        self._init_dropout, self._init_aux_dropout = dropout_rate, aux_dropout_rate
        self._model = self.build_model()
        self._takes_dropout = True
        key = jnp.asarray(rng, dtype=jnp.uint32) if not isinstance(rng, jax.Array) else rng
        params_key, dropout_key = jax.random.split(key)
        rngs = {"params": params_key, "dropout": dropout_key}
        init = functools.partial(self._model.init, train=False)
        shapes = jax.eval_shape(init, rngs, *self.init_inputs())
        out_shardings = {"params": self.param_shardings(shapes["params"])}
        params = dict(jax.jit(init, out_shardings=out_shardings)(rngs, *self.init_inputs())["params"])
        self._param_shapes = backend.param_shapes(params)
        self._param_types = backend.param_types(params)
        return params, None

    def param_shardings(self, params: Any) -> Any:
        """Where each parameter lives on the mesh (the table split by rows)."""
        return param_shardings(params)

    def is_output_params(self, param_key: str) -> bool:
        return param_key == f"Dense_{len(self._model.mlp_bottom_dims) + len(self._model.mlp_top_dims) - 1}"

    def loss_fn(self, label_batch: Any, logits_batch: Any, mask_batch: Any = None,
                label_smoothing: float = 0.0) -> dict[str, Any]:
        """Per-example sigmoid cross-entropy of the (B, 1) logits against the (B,) click labels.

        As the reference's, this loss ignores `label_smoothing`."""
        del label_smoothing
        return super().loss_fn(label_batch.reshape(-1), logits_batch.reshape(-1), mask_batch)

    def eval_batch(self, params: Any, model_state: Any, batch: dict[str, Any], rng: Any) -> dict[str, Any]:
        """The summed loss over the batch's real examples (metric: its mean over the split)."""
        logits, _ = self.model_fn(params, batch, model_state, spec.ForwardPassMode.EVAL, rng,
                                  update_batch_norm=False)
        return {"loss": self.loss_fn(batch["targets"], logits, batch["weights"])["summed"]}
