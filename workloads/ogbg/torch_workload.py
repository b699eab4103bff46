"""The reference's GraphNetwork GNN (init2winit's, as AlgoPerf ports it to PyTorch), its masked
sigmoid cross-entropy, and the eval: mean average precision, accuracy and loss over known labels.

The module tree and parameter names are the reference's (`node_embedder`, `edge_embedder`,
`graph_network.<step>.update_{edge,node,global}_fn.dense_<i>/norm_<i>`, `decoder`), so a reference
PyTorch checkpoint loads as is. Inputs are the raw integer atom and bond features as floats through
a dense layer (the reference embeds them with `nn.Linear(9, latent)` and `nn.Linear(3, latent)`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from algoperf import spec
from algoperf.backends import pytorch as backend
from workloads.imagenet_resnet.torch_workload import trunc_normal_
from workloads.ogbg.workload import (
    NUM_EDGE_FEATURES,
    NUM_NODE_FEATURES,
    NUM_TASKS,
    OgbgData,
    eval_metrics,
    real_graph_count,
)
from workloads.torch_base import TorchWorkload


def reference_dense_init(layer: nn.Linear) -> None:
    """The reference's `pytorch_default_init` (LeCun normal as JAX's): bias 0, and the weight
    N(0, s^2) truncated at +-2 s, s = sqrt(1 / fan_in) / 0.8796...

    0.8796 is the std of a unit normal truncated at +-2, so the truncated draw has std
    sqrt(1 / fan_in). The bounds are relative to s (`a=-2 s, b=2 s`), as the reference's helper
    (`algoperf/init_utils.py`) draws them; torch's default bounds (+-2, absolute) would hardly
    truncate these small stds and give 1.14x the spread. Drawn in one inverse-CDF pass
    (`trunc_normal_` of the ImageNet ResNet), the same distribution without torch's rejection loop.
    """
    trunc_normal_(layer.weight, math.sqrt(1.0 / layer.in_features) / 0.87962566103423978)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU(approximate="tanh")  # the reference's (and Flax's default) GELU
    if name == "silu":
        return nn.SiLU()
    raise ValueError(f"unknown activation {name!r}: expected 'relu', 'gelu' or 'silu'")


class Mlp(nn.Module):
    """Per hidden dim: dense -> LayerNorm (eps 1e-6) -> activation -> dropout at the call's rate."""

    def __init__(self, in_dim: int, hidden_dims: tuple[int, ...], activation_name: str) -> None:
        super().__init__()
        self.depth = len(hidden_dims)
        for i, dim in enumerate(hidden_dims):
            self.add_module(f"dense_{i}", nn.Linear(in_dim, dim))
            self.add_module(f"norm_{i}", nn.LayerNorm(dim, eps=1e-6))
            self.add_module(f"activation_fn_{i}", activation(activation_name))
            in_dim = dim

    def forward(self, x: torch.Tensor, dropout_rate: float) -> torch.Tensor:
        for i in range(self.depth):
            x = getattr(self, f"activation_fn_{i}")(
                getattr(self, f"norm_{i}")(getattr(self, f"dense_{i}")(x))
            )
            x = nn.functional.dropout(x, dropout_rate, self.training)
        return x


def scatter_sum(src: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Rows of `src` summed into `size` rows by `index`."""
    return torch.zeros(size, src.shape[-1], dtype=src.dtype, device=src.device).index_add_(
        0, index, src
    )


class GraphNetwork(nn.Module):
    """One message-passing step (Battaglia et al. 2018, Algorithm 1), sum aggregations.

    As the reference: nodes aggregate their outgoing and incoming edges separately, and every
    update sees the graph's globals.
    """

    def __init__(self, update_edge_fn: Mlp, update_node_fn: Mlp, update_global_fn: Mlp) -> None:
        super().__init__()
        self.update_edge_fn = update_edge_fn
        self.update_node_fn = update_node_fn
        self.update_global_fn = update_global_fn

    def forward(
        self, graph: dict[str, torch.Tensor], dropout_rate: float
    ) -> dict[str, torch.Tensor]:
        nodes, edges, globals_ = graph["nodes"], graph["edges"], graph["globals"]
        senders, receivers = graph["senders"], graph["receivers"]
        n_node, n_edge = graph["n_node"], graph["n_edge"]
        num_nodes, num_graphs = nodes.shape[0], n_node.shape[0]
        edges = self.update_edge_fn(
            torch.cat(
                [
                    edges,
                    nodes[senders],
                    nodes[receivers],
                    torch.repeat_interleave(globals_, n_edge, dim=0),
                ],
                -1,
            ),
            dropout_rate,
        )
        nodes = self.update_node_fn(
            torch.cat(
                [
                    nodes,
                    scatter_sum(edges, senders, num_nodes),
                    scatter_sum(edges, receivers, num_nodes),
                    torch.repeat_interleave(globals_, n_node, dim=0),
                ],
                -1,
            ),
            dropout_rate,
        )
        graph_index = torch.arange(num_graphs, device=nodes.device)
        node_graph = torch.repeat_interleave(graph_index, n_node)
        edge_graph = torch.repeat_interleave(graph_index, n_edge)
        globals_ = self.update_global_fn(
            torch.cat(
                [
                    scatter_sum(nodes, node_graph, num_graphs),
                    scatter_sum(edges, edge_graph, num_graphs),
                    globals_,
                ],
                -1,
            ),
            dropout_rate,
        )
        return {**graph, "nodes": nodes, "edges": edges, "globals": globals_}


class GraphSteps(nn.Sequential):
    """The message-passing steps, each called with the dropout rate."""

    def forward(  # type: ignore[override]
        self, graph: dict[str, torch.Tensor], dropout_rate: float
    ) -> dict[str, torch.Tensor]:
        for step in self:
            graph = step(graph, dropout_rate)
        return graph


class GNN(nn.Module):
    """Embed nodes and edges, start the globals at zero (128 wide), message-pass, decode the globals."""

    def __init__(
        self,
        num_outputs: int = NUM_TASKS,
        activation_name: str = "relu",
        latent_dim: int = 256,
        hidden_dims: tuple[int, ...] = (256,),
        num_message_passing_steps: int = 5,
    ) -> None:
        super().__init__()
        self.num_outputs = num_outputs
        self.node_embedder = nn.Linear(NUM_NODE_FEATURES, latent_dim)
        self.edge_embedder = nn.Linear(NUM_EDGE_FEATURES, latent_dim)
        h = hidden_dims[-1]
        steps = []
        for step in range(num_message_passing_steps):
            # Input widths of the concatenations in GraphNetwork.forward.
            if step == 0:
                edge_in, node_in, global_in = (
                    3 * latent_dim + num_outputs,
                    latent_dim + 2 * h + num_outputs,
                    2 * h + num_outputs,
                )
            else:
                edge_in, node_in, global_in = 4 * h, 4 * h, 3 * h
            steps.append(
                GraphNetwork(
                    Mlp(edge_in, hidden_dims, activation_name),
                    Mlp(node_in, hidden_dims, activation_name),
                    Mlp(global_in, hidden_dims, activation_name),
                )
            )
        self.graph_network = GraphSteps(*steps)
        self.decoder = nn.Linear(h, num_outputs)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                reference_dense_init(module)

    def forward(self, graph: dict[str, torch.Tensor], dropout_rate: float = 0.1) -> torch.Tensor:
        n_graphs = graph["n_node"].shape[0]
        state = {
            **graph,
            "nodes": self.node_embedder(graph["nodes"]),
            "edges": self.edge_embedder(graph["edges"]),
            "globals": torch.zeros(n_graphs, self.num_outputs, device=graph["nodes"].device),
        }
        return self.decoder(self.graph_network(state, dropout_rate)["globals"])


def masked_sigmoid_cross_entropy(
    labels: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Per-label sigmoid cross-entropy, 0 where the mask is 0 (the reference's, incl. its smoothing).

    The reference smooths towards 1 / num_tasks: y' = (1 - s) y + s / 128.
    """
    if not logits.shape == labels.shape == mask.shape:
        raise ValueError(
            f"shape mismatch: logits {tuple(logits.shape)}, targets {tuple(labels.shape)}, "
            f"weights {tuple(mask.shape)}"
        )
    if logits.ndim != 2:
        raise ValueError(f"logits must be (graphs, tasks), got shape {tuple(logits.shape)}")
    known = mask.to(torch.bool)
    labels = torch.where(known, labels.to(logits.dtype), torch.zeros_like(logits))
    smoothed = (1.0 - label_smoothing) * labels + label_smoothing / labels.shape[-1]
    losses = torch.relu(logits) - logits * smoothed + torch.log1p(torch.exp(-logits.abs()))
    return torch.where(known, losses, torch.zeros_like(losses))


def _gathered(array: np.ndarray, device: torch.device) -> np.ndarray:
    """The array of every process, concatenated (all have the same shape)."""
    if backend.world_size() == 1:
        return array
    tensor = torch.as_tensor(array, device=device)
    parts = [torch.zeros_like(tensor) for _ in range(backend.world_size())]
    torch.distributed.all_gather(parts, tensor)
    return torch.cat(parts).cpu().numpy()


class OgbgWorkload(OgbgData, TorchWorkload):
    """ogbg and its variants (activation, widths and steps come from the variant's model_options)."""

    def build_model(self) -> nn.Module:
        config = self.model_config()
        return GNN(num_outputs=NUM_TASKS, activation_name=config.pop("activation"), **config)

    def num_shards(self) -> int:
        return backend.world_size()

    def is_output_params(self, param_key: spec.ParameterKey) -> bool:
        return param_key.removeprefix("module.") in ("decoder.weight", "decoder.bias")

    # Each process trains on its own packed batch of graphs (stacked on a leading device axis by
    # the stream), as the reference packs one batch per device: sharding by graphs, never by rows.
    batch_layout = "devices"

    def forward(self, model: nn.Module, batch: dict[str, Any], dropout_rate: float | None) -> Any:
        rate = self.dropout_rate(dropout_rate)
        return model(batch["inputs"], dropout_rate=rate)

    def loss_fn(
        self,
        label_batch: torch.Tensor,
        logits_batch: torch.Tensor,
        mask_batch: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, torch.Tensor]:
        """Summed masked sigmoid cross-entropy; n_valid_examples = the number of known labels.

        `per_example` is the (graphs, tasks) matrix of masked losses, as the reference returns it.
        Without a mask every label counts.
        """
        mask = torch.ones_like(logits_batch) if mask_batch is None else mask_batch
        losses = masked_sigmoid_cross_entropy(label_batch, logits_batch, mask, label_smoothing)
        return {
            "summed": losses.sum(),
            "n_valid_examples": mask.to(losses.dtype).sum(),
            "per_example": losses,
        }

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
        """mAP over every row the batches hold (padding rows included, masked, as the reference
        collects them); accuracy (logit > 0 equals the label) and loss averaged over known labels."""
        logits, labels, masks = [], [], []
        graphs = 0
        for batch in self.eval_split_batches(split, num_examples, global_batch_size):
            device_batch = self.device_batch(batch)
            out, _ = self.model_fn(
                params, device_batch, model_state, spec.ForwardPassMode.EVAL, rng, False
            )
            logits.append(out.float().cpu().numpy())
            labels.append(device_batch["targets"].cpu().numpy())
            masks.append(device_batch["weights"].cpu().numpy())
            graphs += real_graph_count(batch["inputs"]["n_node"])
        if not logits:
            return {}
        y = _gathered(np.concatenate(labels), self.device)
        m = _gathered(np.concatenate(masks), self.device)
        z = _gathered(np.concatenate(logits), self.device)
        return {
            **eval_metrics(z, y, m),
            "num_examples": graphs,
        }
