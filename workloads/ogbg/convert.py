"""PyTorch <-> flax weights of the OGBG GNN (see workloads/convert.py for the layouts).

The flax MLP layers are numbered in call order (`Dense_<i>`, `LayerNorm_<i>`): per step the edge,
node and global MLPs, each hidden layer in turn; the decoder is the last `Dense`.
"""

from __future__ import annotations

from typing import Any

from workloads.convert import Rule

FUNCTIONS = ("update_edge_fn", "update_node_fn", "update_global_fn")


def _dense(torch_prefix: str, flax_module: str) -> list[Rule]:
    return [Rule(f"{torch_prefix}.weight", f"params/{flax_module}/kernel", "linear"),
            Rule(f"{torch_prefix}.bias", f"params/{flax_module}/bias")]


def rules(options: dict[str, Any]) -> list[Rule]:
    hidden = tuple(options.get("hidden_dims", (256,)))
    steps = int(options.get("num_message_passing_steps", 5))
    out = [*_dense("node_embedder", "node_embedding"), *_dense("edge_embedder", "edge_embedding")]
    i = 0
    for step in range(steps):
        for fn in FUNCTIONS:
            for depth in range(len(hidden)):
                prefix = f"graph_network.{step}.{fn}"
                out += _dense(f"{prefix}.dense_{depth}", f"Dense_{i}")
                out += [Rule(f"{prefix}.norm_{depth}.weight", f"params/LayerNorm_{i}/scale"),
                        Rule(f"{prefix}.norm_{depth}.bias", f"params/LayerNorm_{i}/bias")]
                i += 1
    return out + _dense("decoder", f"Dense_{i}")
