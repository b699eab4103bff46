"""OGBG model: reference parameter counts and module tree, masked loss, mean AP, train step and eval."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from algoperf import spec
from algoperf.random_utils import prng_key
from workloads import registry
from workloads.ogbg import workload as ogbg
from workloads.ogbg.torch_workload import GNN

EXPECTED = {
    "ogbg": 3_554_176,
    "ogbg_gelu": 3_554_176,
    "ogbg_silu": 3_554_176,
    "ogbg_model_size": 2_571_648,
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_count_matches_the_reference(name):
    model = registry.load(name, data="synthetic").build_model()
    assert (
        sum(p.numel() for p in model.parameters())
        == EXPECTED[name]
        == registry.get(name).n_params["pytorch"]
    )


def test_variants_change_only_their_model_option():
    base = registry.get("ogbg").model_options
    assert registry.get("ogbg_gelu").model_options == {**base, "activation": "gelu"}
    assert registry.get("ogbg_silu").model_options == {**base, "activation": "silu"}
    size = registry.get("ogbg_model_size").model_options
    assert (size["latent_dim"], tuple(size["hidden_dims"]), size["num_message_passing_steps"]) == (
        128,
        (256, 256),
        3,
    )


def test_module_tree_and_widths_are_the_references():
    model = GNN(latent_dim=128, hidden_dims=(256, 256), num_message_passing_steps=3)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert shapes["node_embedder.weight"] == (128, 9) and shapes["edge_embedder.weight"] == (128, 3)
    # First step: edges see [edge, sender, receiver, globals(128)]; nodes [node, sent, received, globals].
    assert shapes["graph_network.0.update_edge_fn.dense_0.weight"] == (256, 3 * 128 + 128)
    assert shapes["graph_network.0.update_node_fn.dense_0.weight"] == (256, 128 + 2 * 256 + 128)
    assert shapes["graph_network.0.update_global_fn.dense_0.weight"] == (256, 2 * 256 + 128)
    assert shapes["graph_network.2.update_edge_fn.dense_1.weight"] == (256, 256)
    assert shapes["graph_network.2.update_global_fn.dense_0.weight"] == (256, 3 * 256)
    assert shapes["graph_network.1.update_node_fn.norm_1.weight"] == (256,)
    assert shapes["decoder.weight"] == (128, 256)


def test_dense_layers_use_the_reference_init():
    torch.manual_seed(0)
    model = GNN()
    layer = model.graph_network[0].update_edge_fn.dense_0  # fan_in 896: 229,376 weights
    s = math.sqrt(1 / 896) / 0.87962566103423978  # truncated at +-2 s: own std sqrt(1 / 896)
    assert layer.weight.abs().max().item() <= 2 * s
    assert layer.weight.std().item() == pytest.approx(math.sqrt(1 / 896), rel=0.01)
    assert torch.count_nonzero(layer.bias) == 0 and torch.count_nonzero(model.decoder.bias) == 0


def test_masked_loss_with_label_smoothing_against_numpy():
    workload = registry.load("ogbg", data="synthetic")
    rng = np.random.default_rng(0)
    logits, labels = (
        rng.standard_normal((3, 128)) * 3,
        (rng.random((3, 128)) > 0.5).astype(np.float32),
    )
    mask = (rng.random((3, 128)) > 0.3).astype(np.float32)
    out = workload.loss_fn(
        torch.from_numpy(labels),
        torch.from_numpy(logits),
        torch.from_numpy(mask),
        label_smoothing=0.2,
    )
    smoothed = 0.8 * labels + 0.2 / 128  # the reference smooths towards 1 / num_tasks
    bce = -(
        smoothed * np.log(1 / (1 + np.exp(-logits)))
        + (1 - smoothed) * np.log(1 - 1 / (1 + np.exp(-logits)))
    )
    np.testing.assert_allclose(out["per_example"].numpy(), bce * mask, rtol=1e-6, atol=1e-9)
    assert out["summed"].item() == pytest.approx((bce * mask).sum())
    assert out["n_valid_examples"].item() == mask.sum()


def test_loss_ignores_the_label_value_under_a_zero_mask():
    workload = registry.load("ogbg", data="synthetic")
    logits = torch.tensor([[2.0, -1.0]], requires_grad=True)
    out = workload.loss_fn(torch.tensor([[1.0, float("nan")]]), logits, torch.tensor([[1.0, 0.0]]))
    out["summed"].backward()
    assert out["summed"].item() == pytest.approx(math.log1p(math.exp(-2.0)))
    assert logits.grad[0, 1].item() == 0.0 and torch.isfinite(logits.grad).all()


def test_loss_rejects_mismatched_shapes():
    workload = registry.load("ogbg", data="synthetic")
    with pytest.raises(ValueError, match="shape mismatch"):
        workload.loss_fn(torch.zeros(2, 128), torch.zeros(2, 128), torch.ones(3, 128))


def test_mean_average_precision_with_unknown_labels_by_hand():
    # Rows 0-3; row 3 is unknown on every task (its label was NaN, replaced by 0, mask 0).
    # Task 0: known labels (1, 0, 1), scores by logit (0.9, 0.8, 0.3) -> precision 1/1 at the
    #   first positive, 2/3 at the second: AP = (1 + 2/3) / 2.
    # Task 1: known labels all 1, but the 0/1 column has the unknown row's 0: the reference counts
    #   the task and sklearn's AP of an all-positive column is 1.
    # Task 2: no 1 anywhere: skipped.
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    logits = logit(np.array([[0.9, 0.5, 0.2], [0.8, 0.4, 0.3], [0.3, 0.2, 0.4], [0.1, 0.9, 0.6]]))
    labels = np.array([[1, 1, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]], dtype=np.float32)
    mask = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 1], [0, 0, 0]], dtype=np.float32)
    assert ogbg.mean_average_precision(logits, labels, mask) == pytest.approx(
        ((1 + 2 / 3) / 2 + 1) / 2
    )


def test_mean_average_precision_is_nan_without_a_task_with_both_labels():
    labels = np.ones((3, 2), np.float32)
    assert math.isnan(ogbg.mean_average_precision(np.zeros((3, 2)), labels, np.ones((3, 2))))


@pytest.mark.slow
def test_train_step_and_eval_on_synthetic_molecules():
    workload = registry.load("ogbg", data="synthetic")
    model, state = workload.init_model_fn(prng_key(0))
    batch = next(workload.build_input_queue(prng_key(1), "train", None, 4))
    assert batch["inputs"]["nodes"].shape == (4 * 26 + 1, 9) and batch["targets"].shape == (5, 128)
    logits, _ = workload.model_fn(model, batch, state, spec.ForwardPassMode.TRAIN, None, True, 0.1)
    assert logits.shape == (5, 128)
    loss = workload.loss_fn(
        label_batch=batch["targets"], logits_batch=logits, mask_batch=batch["weights"]
    )
    (loss["summed"] / loss["n_valid_examples"]).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    metrics = workload.eval_model(32_768, model, state, None, None, None, 0)
    assert 0.0 <= metrics["validation/mean_average_precision"] <= 1.0
    assert metrics["validation/num_examples"] == 16 and metrics["test/num_examples"] == 16
    assert {"train/accuracy", "train/loss", "test/mean_average_precision"} <= set(metrics)


def test_eval_mode_ignores_dropout_and_train_mode_applies_it():
    workload = registry.load("ogbg", data="synthetic")
    model, _ = workload.init_model_fn(prng_key(0))
    batch = next(workload.build_input_queue(prng_key(1), "train", None, 4))
    run = lambda mode, rate: workload.model_fn(model, batch, None, mode, None, False, rate)[0]  # noqa: E731
    torch.testing.assert_close(
        run(spec.ForwardPassMode.EVAL, 0.5), run(spec.ForwardPassMode.EVAL, 0.0)
    )
    assert not torch.allclose(
        run(spec.ForwardPassMode.TRAIN, 0.5), run(spec.ForwardPassMode.TRAIN, 0.0)
    )
    torch.testing.assert_close(
        run(spec.ForwardPassMode.TRAIN, 0.0), run(spec.ForwardPassMode.EVAL, 0.0)
    )


def _numpy_mlp(mlp, x: np.ndarray) -> np.ndarray:
    for i in range(mlp.depth):
        dense, norm = getattr(mlp, f"dense_{i}"), getattr(mlp, f"norm_{i}")
        x = x @ dense.weight.detach().numpy().T + dense.bias.detach().numpy()
        x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
        x = np.maximum(x * norm.weight.detach().numpy() + norm.bias.detach().numpy(), 0)
    return x


def test_one_message_passing_step_against_numpy():
    # Two graphs (2 nodes / 2 directed edges, 1 node / 0 edges): edges see their sender, receiver
    # and graph; nodes sum their outgoing and incoming edges apart; globals sum nodes and edges.
    torch.manual_seed(0)
    model = GNN(latent_dim=4, hidden_dims=(6,), num_message_passing_steps=1, num_outputs=3)
    step = model.graph_network[0]
    rng = np.random.default_rng(1)
    nodes, edges, globals_ = (
        rng.standard_normal((3, 4)),
        rng.standard_normal((2, 4)),
        rng.standard_normal((2, 3)),
    )
    senders, receivers, n_node, n_edge = (
        np.array([0, 1]),
        np.array([1, 0]),
        np.array([2, 1]),
        np.array([2, 0]),
    )
    graph = {
        k: torch.from_numpy(v)
        for k, v in dict(
            nodes=nodes,
            edges=edges,
            globals=globals_,
            senders=senders,
            receivers=receivers,
            n_node=n_node,
            n_edge=n_edge,
        ).items()
    }
    graph = {k: v.float() if v.is_floating_point() else v for k, v in graph.items()}
    out = step.eval()(graph, dropout_rate=0.0)
    e = _numpy_mlp(
        step.update_edge_fn,
        np.concatenate([edges, nodes[senders], nodes[receivers], globals_[[0, 0]]], 1),
    )
    sent, received = np.zeros((3, 6)), np.zeros((3, 6))
    np.add.at(sent, senders, e)
    np.add.at(received, receivers, e)
    n = _numpy_mlp(
        step.update_node_fn, np.concatenate([nodes, sent, received, globals_[[0, 0, 1]]], 1)
    )
    pooled_nodes = np.stack([n[:2].sum(0), n[2]])
    pooled_edges = np.stack([e.sum(0), np.zeros(6)])
    g = _numpy_mlp(step.update_global_fn, np.concatenate([pooled_nodes, pooled_edges, globals_], 1))
    np.testing.assert_allclose(out["edges"].detach().numpy(), e, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["nodes"].detach().numpy(), n, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["globals"].detach().numpy(), g, rtol=1e-4, atol=1e-5)
