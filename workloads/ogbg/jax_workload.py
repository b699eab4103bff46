"""The OGBG GraphNetwork GNN in JAX (flax linen): the same model, loss and eval as the PyTorch twin.

Module names are the reference's JAX ones (`node_embedding`, `edge_embedding`, then `Dense_<i>` /
`LayerNorm_<i>` numbered in call order: per message-passing step the edge, node and global MLPs,
the decoder last), so `convert.py` maps them one to one onto the PyTorch tree. Initialisation:
flax's default dense init, LeCun normal truncated at +-2 std (the reference's; the PyTorch twin
draws the same distribution), zero biases, layer norm eps 1e-6.

Batches of padded graphs are split across devices by graphs: the input pipeline stacks one packed
batch per device (`[devices, ...]`, node indices local to each), the batch is sharded along that
leading axis, and every gather and scatter of message passing runs per device batch (`jax.vmap`
over the leading axis), as the PyTorch side runs one batch per process.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from algoperf import jax_utils, spec
from workloads.jax_base import JaxWorkload, to_jax
from workloads.ogbg.workload import (
    NUM_TASKS,
    OgbgData,
    collate,
    eval_metrics,
    real_graph_count,
    synthetic_graphs,
)

ACTIVATIONS = {"relu": nn.relu, "gelu": nn.gelu, "silu": nn.silu}  # flax's gelu: tanh approximation


@jax.vmap
def _gather(x: Any, index: Any) -> Any:
    return x[index]


def _segment_sum(x: Any, index: Any, size: int) -> Any:
    return jax.vmap(lambda v, i: jax.ops.segment_sum(v, i, num_segments=size))(x, index)


def _repeat(x: Any, counts: Any, total: int) -> Any:
    """Row g of each device batch repeated counts[g] times (`total` rows: the padded size)."""
    return jax.vmap(lambda v, n: jnp.repeat(v, n, axis=0, total_repeat_length=total))(x, counts)


class GNN(nn.Module):
    """Embed nodes and edges, globals start at zero (128 wide), message-pass, decode the globals.

    Each step is Battaglia et al. (2018)'s GraphNetwork with sum aggregations, as jraph's: edges
    see [edge, sender, receiver, globals]; nodes [node, sum of outgoing, sum of incoming edges,
    globals]; globals [sum of nodes, sum of edges, globals]. Every MLP layer is dense -> layer
    norm -> activation -> dropout at the call's rate.
    """

    num_outputs: int = NUM_TASKS
    activation: str = "relu"
    latent_dim: int = 256
    hidden_dims: tuple[int, ...] = (256,)
    num_message_passing_steps: int = 5

    @nn.compact
    def __call__(self, graph: dict[str, Any], train: bool, dropout_rate: float = 0.1) -> Any:
        """(graphs, num_outputs) logits of a padded graph batch, or of `[devices, ...]` batches
        stacked (the device batches' graphs one after the other)."""
        if graph["nodes"].ndim == 2:  # one device batch (a PyTorch-layout or per-device batch)
            graph = {k: v[None] for k, v in graph.items()}
        act = ACTIVATIONS[self.activation]
        dropout = jax_utils.Dropout()
        layer = itertools.count()

        def mlp(*inputs: Any) -> Any:
            x = jnp.concatenate(inputs, axis=-1)
            for dim in self.hidden_dims:
                i = next(layer)
                x = nn.Dense(dim, name=f"Dense_{i}")(x)
                x = act(nn.LayerNorm(epsilon=1e-6, name=f"LayerNorm_{i}")(x))
                x = dropout(x, deterministic=not train, rate=dropout_rate)
            return x

        senders, receivers = graph["senders"], graph["receivers"]
        n_node, n_edge = graph["n_node"], graph["n_edge"]
        num_nodes, num_edges, num_graphs = (
            graph["nodes"].shape[1], graph["edges"].shape[1], n_node.shape[1])
        nodes = nn.Dense(self.latent_dim, name="node_embedding")(graph["nodes"])
        edges = nn.Dense(self.latent_dim, name="edge_embedding")(graph["edges"])
        globals_ = jnp.zeros((*n_node.shape, self.num_outputs), nodes.dtype)
        graph_ids = jnp.broadcast_to(jnp.arange(num_graphs), n_node.shape)
        node_graph = _repeat(graph_ids, n_node, num_nodes)
        edge_graph = _repeat(graph_ids, n_edge, num_edges)
        for _ in range(self.num_message_passing_steps):
            edges = mlp(edges, _gather(nodes, senders), _gather(nodes, receivers),
                        _repeat(globals_, n_edge, num_edges))
            nodes = mlp(nodes, _segment_sum(edges, senders, num_nodes),
                        _segment_sum(edges, receivers, num_nodes),
                        _repeat(globals_, n_node, num_nodes))
            globals_ = mlp(_segment_sum(nodes, node_graph, num_graphs),
                           _segment_sum(edges, edge_graph, num_graphs), globals_)
        logits = nn.Dense(self.num_outputs, name=f"Dense_{next(layer)}")(globals_)
        return logits.reshape(-1, self.num_outputs)


def masked_sigmoid_cross_entropy(labels: Any, logits: Any, mask: Any, label_smoothing: float = 0.0) -> Any:
    """Per-label sigmoid cross-entropy, 0 where the mask is 0; smoothing towards 1 / num_tasks
    (the reference's, as the PyTorch twin's)."""
    known = mask.astype(bool)
    labels = jnp.where(known, labels.astype(logits.dtype), 0.0)
    smoothed = (1.0 - label_smoothing) * labels + label_smoothing / labels.shape[-1]
    losses = jax.nn.relu(logits) - logits * smoothed + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    return jnp.where(known, losses, 0.0)


class OgbgWorkload(OgbgData, JaxWorkload):
    """ogbg and its variants (activation, widths and steps come from the variant's model_options)."""

    def build_model(self) -> nn.Module:
        return GNN(num_outputs=NUM_TASKS, **self.model_config())

    def num_shards(self) -> int:
        """One packed batch per device (the reference's per-device batches)."""
        return jax.local_device_count()

    def init_inputs(self) -> tuple[Any, ...]:
        """Two synthetic molecules: the parameter shapes depend on no data."""
        return (collate(synthetic_graphs(2, seed=0), np.arange(2), 2)["inputs"],)

    def is_output_params(self, param_key: spec.ParameterKey) -> bool:
        names = sorted((k for k in (self._param_shapes or {}) if k.startswith("Dense_")),
                       key=lambda k: int(k.split("_")[1]))
        return bool(names) and param_key == names[-1]

    def device_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Stacked per-device batches, sharded along the device axis (v0.5 layout: as stacked)."""
        arrays = {**batch, "inputs": {k: (v.astype(np.float32) if v.dtype == np.float64 else v)
                                      for k, v in batch["inputs"].items()}}
        if batch["targets"].ndim == 2:  # one batch of graphs: a device axis of 1
            arrays = jax.tree.map(lambda x: x[None], arrays)
        if self.batch_layout == "pmap":
            return arrays
        return to_jax(arrays)

    def loss_fn(
        self,
        label_batch: Any,
        logits_batch: Any,
        mask_batch: Any = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, Any]:
        """Summed masked sigmoid cross-entropy; n_valid_examples = the number of known labels.

        Targets and mask may carry the device axis of a stacked batch: they are flattened to the
        (graphs, tasks) logits. Without a mask every label counts.
        """
        labels = label_batch.reshape(logits_batch.shape)
        mask = jnp.ones_like(logits_batch) if mask_batch is None else mask_batch.reshape(logits_batch.shape)
        losses = masked_sigmoid_cross_entropy(labels, logits_batch, mask, label_smoothing)
        return {"summed": losses.sum(), "n_valid_examples": mask.astype(losses.dtype).sum(),
                "per_example": losses}

    def _eval_model_on_split(
        self,
        split: str,
        num_examples: int,
        global_batch_size: int,
        params: spec.ParameterContainer,
        model_state: Any,
        rng: Any,
        data_dir: str,
        global_step: int = 0,
    ) -> dict[str, float]:
        """Logits of every batch (on the devices, jitted), then the framework-free metrics."""
        logits, labels, masks = [], [], []
        graphs = 0
        for batch in self.eval_split_batches(split, num_examples, global_batch_size):
            out = self._eval_logits_jit(params, model_state, to_jax(self._stacked(batch)))
            logits.append(np.asarray(jax.device_get(out)))
            labels.append(batch["targets"].reshape(-1, NUM_TASKS))
            masks.append(batch["weights"].reshape(-1, NUM_TASKS))
            graphs += real_graph_count(batch["inputs"]["n_node"])
        if not logits:
            return {}
        return {**eval_metrics(np.concatenate(logits), np.concatenate(labels), np.concatenate(masks)),
                "num_examples": graphs}

    def _stacked(self, batch: dict[str, Any]) -> dict[str, Any]:
        return jax.tree.map(lambda x: x[None], batch) if batch["targets"].ndim == 2 else batch

    @functools.cached_property
    def _eval_logits_jit(self) -> Any:
        def logits_of(params: Any, model_state: Any, batch: dict[str, Any]) -> Any:
            return self.model_fn(params, batch, model_state, spec.ForwardPassMode.EVAL, None,
                                 update_batch_norm=False)[0]

        return jax.jit(logits_of)
