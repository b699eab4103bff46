"""The JAX baselines (optax transformations) against the closed forms in tests/closed_forms.py,
the same closed forms the PyTorch baselines are checked against; float64 throughout."""

from __future__ import annotations

import functools

import closed_forms as cf
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from submissions.kfac import jax_layers
from submissions.kfac.jax_optimizer import fisher_output_gradients, kfac, scale_by_kfac, spd_inverse
from submissions.nadamw.jax_optimizer import nadamw
from submissions.schedule_free.jax_optimizer import eval_params, schedule_free_adamw
from submissions.shampoo.jax_optimizer import regions, scale_by_shampoo

LR = 0.1


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def gaussians(shape: tuple[int, ...], n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for _ in range(n)]


def iterates(tx: optax.GradientTransformation, p0: np.ndarray, grads: list[np.ndarray]) -> tuple[list, list]:
    """(parameters after each step, optimizer states after each step) of `tx` from p0."""
    p, state = jnp.asarray(p0), tx.init(jnp.asarray(p0))
    update = jax.jit(tx.update)
    params, states = [], []
    for g in grads:
        u, state = update(jnp.asarray(g), state, p)
        p = optax.apply_updates(p, u)
        params.append(np.asarray(p))
        states.append(state)
    return params, states


# ---- AdamW, NAdamW, SGD -----------------------------------------------------------------------
def test_adamw_is_the_closed_form():
    p0, *grads = gaussians((4, 3), 7, 0)
    got, _ = iterates(optax.adamw(LR, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.05), p0, grads)
    np.testing.assert_allclose(got, cf.adamw_iterates(p0, grads, LR, 0.9, 0.99, 1e-8, 0.05), rtol=1e-12)


def test_nadamw_is_algoperfs_closed_form_and_not_optax_nadamw():
    p0, *grads = gaussians((5,), 7, 1)
    expected = cf.nadamw_iterates(p0, grads, LR, 0.9, 0.99, 1e-8, 0.05)
    got, _ = iterates(nadamw(LR, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.05), p0, grads)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    # optax.nadamw corrects the momentum term by 1 - b1^(t+1): a different optimizer.
    other, _ = iterates(optax.nadamw(LR, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.05), p0, grads)
    assert np.abs(np.asarray(other) - np.asarray(expected)).max() > 1e-3


@pytest.mark.parametrize("nesterov", [True, False])
def test_sgd_chain_is_torch_sgds_closed_form(nesterov):
    from algoperf import tuning
    from submissions.sgd.jax_submission import optimizer

    hp = tuning.as_hyperparameters({"weight_decay": 0.01, "one_minus_beta1": 0.2, "nesterov": nesterov})
    p0, *grads = gaussians((3, 2), 6, 2)
    got, _ = iterates(optimizer(hp, LR), p0, grads)
    np.testing.assert_allclose(got, cf.sgd_iterates(p0, grads, LR, 0.8, nesterov, 0.01), rtol=1e-12)


# ---- Schedule-Free AdamW ----------------------------------------------------------------------
def test_schedule_free_is_the_closed_form_with_warmup_and_r():
    y0, *grads = gaussians((6,), 9, 3)
    kw = dict(b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.02, r=0.75, weight_lr_power=2.0)
    ys, states = iterates(schedule_free_adamw(0.05, warmup_steps=4, **kw), y0, grads)
    expected = cf.schedule_free_iterates(y0, grads, 0.05, kw["b1"], kw["b2"], kw["eps"], kw["weight_decay"],
                                         warmup=4, r=0.75)
    for y, state, (ey, ez, ex) in zip(ys, states, expected):
        np.testing.assert_allclose(y, ey, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(state.z, ez, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(eval_params(state, y, 0.9), ex, rtol=1e-9, atol=1e-12)


def test_schedule_free_with_beta1_zero_has_adamw_as_its_z_iterates():
    p0, *grads = gaussians((6,), 9, 4)
    _, states = iterates(schedule_free_adamw(0.05, b1=0.0, b2=0.99, weight_decay=0.02), p0, grads)
    expected = cf.adamw_iterates(p0, grads, 0.05, 0.0, 0.99, 1e-8, 0.02)
    np.testing.assert_allclose([s.z for s in states], expected, rtol=1e-12, atol=1e-14)


def test_schedule_free_with_r_zero_and_constant_lr_averages_z_uniformly():
    p0, *grads = gaussians((4,), 8, 5)
    ys, states = iterates(schedule_free_adamw(0.1, b1=0.9, b2=0.999, r=0.0), p0, grads)
    zs = [np.asarray(s.z) for s in states]
    for k, (y, s) in enumerate(zip(ys, states), start=1):
        np.testing.assert_allclose(eval_params(s, y, 0.9), np.mean(zs[:k], axis=0), rtol=1e-10, atol=1e-13)


def test_schedule_free_builtin_warmup_scales_the_first_step():
    _, states = iterates(schedule_free_adamw(1.0, warmup_steps=4, b1=0.5, b2=0.5, eps=0.0),
                         np.zeros(1), [np.ones(1)])
    assert float(states[0].z[0]) == -0.25  # lr 1/4 times Adam's first direction sign(g) = 1


@pytest.mark.parametrize("r, warmup, same", [(0.0, 0, True), (0.75, 0, False), (0.0, 3, False)])
def test_optax_contrib_schedule_free_is_ours_only_without_r_and_warmup(r, warmup, same):
    # Why the baseline does not use optax.contrib.schedule_free_adamw: its averaging weight is
    # (max lr)^power alone, i.e. r = 0, where the PyTorch baseline (AlgoPerf's winner) uses
    # r = 0.75; and its warmup gives the first step a learning rate of 0 (the base optimizer's
    # schedule starts at count 0) where the PyTorch baseline's first step has lr / warmup.
    p0, *grads = gaussians((5,), 8, 6)
    kw = dict(b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.01)
    ours, _ = iterates(schedule_free_adamw(0.05, warmup_steps=warmup, r=r, **kw), p0, grads)
    theirs, _ = iterates(optax.contrib.schedule_free_adamw(0.05, warmup_steps=warmup or None, **kw), p0, grads)
    difference = np.abs(np.asarray(ours) - np.asarray(theirs)).max()
    assert (difference < 1e-12) if same else (difference > 1e-4)


# ---- Shampoo ----------------------------------------------------------------------------------
EPS = 1e-3


def shampoo_updates(shape: tuple[int, ...], steps: int, seed: int = 0, **kw) -> tuple[list, list]:
    """Parameter changes of JAX Shampoo (float64 roots, lr LR) and the gradients that made them."""
    p0, *grads = gaussians(shape, steps + 1, seed)
    tx = optax.chain(scale_by_shampoo(epsilon=EPS, inverse_root_dtype=jnp.float64, **kw), optax.scale(-LR))
    params, _ = iterates(tx, p0, grads)
    return list(np.diff([p0, *params], axis=0)), grads


def test_shampoo_sum_form_without_grafting_is_the_closed_form():
    updates, grads = shampoo_updates((4, 3), 4, beta1=0.0, beta2=1.0, grafting="none", precondition_frequency=1)
    np.testing.assert_allclose(updates, cf.shampoo_sum_updates(grads, LR, EPS), rtol=1e-9, atol=1e-13)


def test_shampoo_ema_form_with_bias_correction_is_the_closed_form():
    updates, grads = shampoo_updates((3, 5), 4, beta1=0.0, beta2=0.9, grafting="none", precondition_frequency=1)
    np.testing.assert_allclose(updates, cf.shampoo_ema_updates(grads, LR, EPS, 0.9), rtol=1e-9, atol=1e-13)


def test_shampoo_adam_grafting_gives_each_block_the_adam_norm():
    updates, grads = shampoo_updates((6, 5), 3, beta1=0.0, beta2=0.95, grafting="adam", grafting_beta2=0.99,
                                     grafting_epsilon=1e-8, precondition_frequency=1, max_preconditioner_dim=4)
    for du, adam in zip(updates, cf.adam_directions(grads, 0.99, 1e-8)):
        for rs, cs in cf.block_slices(6, 5, 4):
            assert np.linalg.norm(du[rs, cs]) == pytest.approx(LR * np.linalg.norm(adam[rs, cs]), rel=1e-9)


def test_shampoo_before_preconditioning_starts_is_adam():
    p0, *grads = gaussians((4, 6), 7, 1)
    tx = optax.chain(scale_by_shampoo(beta1=0.9, beta2=0.999, grafting="adam", grafting_beta2=0.999,
                                      grafting_epsilon=1e-8, start_preconditioning_step=10**9), optax.scale(-LR))
    got, _ = iterates(tx, p0, grads)
    np.testing.assert_allclose(got, cf.adamw_iterates(p0, grads, LR, 0.9, 0.999, 1e-8, 0.0), rtol=1e-12)


def test_shampoo_preconditions_a_large_parameter_per_block():
    assert len(regions(5, 7, 3)) == 4  # full blocks, right edge, bottom edge, corner
    updates, grads = shampoo_updates((5, 7), 2, beta1=0.0, beta2=1.0, grafting="none", precondition_frequency=1,
                                     max_preconditioner_dim=3)
    blocks = cf.block_slices(5, 7, 3)
    assert len(blocks) == 2 * 3
    for rs, cs in blocks:
        expected = cf.shampoo_sum_updates([g[rs, cs] for g in grads], LR, EPS)
        np.testing.assert_allclose([du[rs, cs] for du in updates], expected, rtol=1e-9, atol=1e-13)


def test_shampoo_preconditions_a_flax_convolution_kernel_as_fan_in_by_out():
    # flax's kernel (kh, kw, in, out) = (2, 2, 3, 2): the matrix is (kh * kw * in) x out.
    updates, grads = shampoo_updates((2, 2, 3, 2), 1, beta1=0.0, beta2=1.0, grafting="none",
                                     precondition_frequency=1)
    g = grads[0].reshape(12, 2)
    expected = cf.shampoo_sum_updates([g], LR, EPS)[0]
    np.testing.assert_allclose(updates[0].reshape(12, 2), expected, rtol=1e-9, atol=1e-12)


def test_shampoo_leaves_vectors_to_the_grafting_optimizer():
    p0, *grads = gaussians((5,), 4, 2)
    tx = optax.chain(scale_by_shampoo(beta1=0.9, beta2=0.99, grafting="adam", grafting_beta2=0.99), optax.scale(-LR))
    got, states = iterates(tx, p0, grads)
    np.testing.assert_allclose(got, cf.adamw_iterates(p0, grads, LR, 0.9, 0.99, 1e-8, 0.0), rtol=1e-12)
    assert states[-1][0].factors == (None,)


def test_shampoo_nesterov_and_decoupled_weight_decay():
    # beta1 = 0.5, SGD grafting, no preconditioning yet: Nesterov-filtered SGD with decoupled decay.
    p0, *grads = gaussians((3, 3), 4, 3)
    from submissions.shampoo.jax_optimizer import shampoo

    tx = shampoo(LR, weight_decay=0.1, beta1=0.5, beta2=1.0, grafting="sgd", nesterov=True,
                 start_preconditioning_step=10**9)
    got, _ = iterates(tx, p0, grads)
    np.testing.assert_allclose(got, cf.filtered_sgd_iterates(p0, grads, LR, 0.5, 0.1), rtol=1e-12)


def test_shampoo_bfloat16_roots_give_the_closed_form_to_bfloat16_precision():
    updates, grads = shampoo_updates((6, 4), 2, beta1=0.0, beta2=1.0, grafting="none", precondition_frequency=1,
                                     preconditioner_dtype=jnp.bfloat16)
    expected = cf.shampoo_sum_updates(grads, LR, EPS)[-1]
    # bfloat16 keeps 8 bits of mantissa: each of the two products is good to about 2^-8.
    assert np.linalg.norm(updates[-1] - expected) <= 2e-2 * np.linalg.norm(expected)
    assert updates[-1].dtype == np.float64


# ---- K-FAC ------------------------------------------------------------------------------------
def kfac_factors(model: nn.Module, params: dict, x: jax.Array, fisher: str = "type2",
                 approximation: str = "expand", targets: jax.Array | None = None,
                 key: jax.Array | None = None) -> tuple[tuple, dict]:
    """(layers, {layer key: (A, B)}) of a flax model on x for the loss sum_n 1/2 ||f_n - y_n||^2
    (mean over the N examples), through the same capture the training step uses."""
    layers = jax_layers.discover(lambda: model.apply({"params": params}, x))
    factors = jax.jit(functools.partial(_factors, model, layers, fisher, approximation))
    return layers, factors(params, x, targets, key)


def _factors(model: nn.Module, layers: tuple, fisher: str, approximation: str, params: dict,
             x: jax.Array, targets: jax.Array | None, key: jax.Array | None) -> dict:
    out, vjp, _, inputs = jax_layers.tapped_vjp(lambda p: (model.apply({"params": p}, x), None), params, layers)
    if fisher == "empirical":
        output_grads = jax.tree.map(lambda g: g[None], vjp(out - targets)[1])
    else:
        vectors = fisher_output_gradients(out, "mse", fisher, key)
        output_grads = jax.vmap(lambda v: vjp(v)[1])(vectors)
    return jax_layers.batch_factors(layers, params, inputs, output_grads, approximation)


def deep_linear(*sizes: int) -> nn.Module:
    return nn.Sequential([nn.Dense(n, use_bias=False) for n in sizes[1:]])


def init(model: nn.Module, x: jax.Array) -> dict:
    """The model's parameters in float64 (flax creates them in float32)."""
    return jax.tree.map(lambda p: p.astype(jnp.float64), model.init(jax.random.PRNGKey(0), x)["params"])


def kernels(params: dict, layers: tuple) -> list[np.ndarray]:
    """The layers' weights as out x in matrices (the closed forms' layout)."""
    return [np.asarray(params[layer.path[-1]]["kernel"]).T for layer in layers]


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_kfac_deep_linear_network_blocks_are_the_exact_ggn(batch):
    x = jax.random.normal(jax.random.PRNGKey(batch), (batch, 3))
    model = deep_linear(3, 5, 4, 2)
    params = init(model, x)
    layers, factors = kfac_factors(model, params, x)
    assert len(layers) == 3
    for index, layer in enumerate(layers):
        A, B = factors["/".join(layer.path)]
        exact = cf.deep_linear_ggn(kernels(params, layers), np.asarray(x), index, layout="in_out")
        np.testing.assert_allclose(np.kron(A, B), exact, rtol=1e-10, atol=1e-12)


def test_kfac_expand_is_exact_when_the_loss_is_over_every_shared_position():
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 6, 3))  # 6 positions share the weights
    model = deep_linear(3, 4, 2)
    params = init(model, x)
    layers, factors = kfac_factors(model, params, x, approximation="expand")
    rows = np.asarray(x).reshape(30, 3)
    for index, layer in enumerate(layers):
        A, B = factors["/".join(layer.path)]
        # the mean over 5 examples of a loss summed over 6 positions: 6 x the mean over 30 rows
        exact = 6 * cf.deep_linear_ggn(kernels(params, layers), rows, index, layout="in_out")
        np.testing.assert_allclose(np.kron(A, B), exact, rtol=1e-10, atol=1e-12)


class SumPooled(nn.Module):
    """A deep linear net over positions whose output is summed over them before the loss."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(2, use_bias=False, name="second")(nn.Dense(4, use_bias=False, name="first")(x)).sum(axis=1)


def test_kfac_reduce_is_exact_when_shared_positions_are_pooled_and_expand_is_not():
    x = jax.random.normal(jax.random.PRNGKey(2), (5, 6, 3))
    model = SumPooled()
    params = init(model, x)
    layers, reduce = kfac_factors(model, params, x, approximation="reduce")
    _, expand = kfac_factors(model, params, x, approximation="expand")
    weights = [np.asarray(params["first"]["kernel"]).T, np.asarray(params["second"]["kernel"]).T]
    for index, name in enumerate(["first", "second"]):
        # f = W2 W1 sum_r x_r: a deep linear net on the summed inputs
        exact = cf.deep_linear_ggn(weights, np.asarray(x).sum(axis=1), index, layout="in_out")
        np.testing.assert_allclose(np.kron(*reduce[name]), exact, rtol=1e-10, atol=1e-12)
        assert np.abs(np.kron(*expand[name]) - exact).max() > 1e-2 * np.abs(exact).max()


def test_kfac_unfolds_a_convolution_into_patches_as_shared_positions():
    model = nn.Conv(3, (3, 3), strides=2, padding=[(1, 1), (1, 1)], use_bias=False)
    x = jax.random.normal(jax.random.PRNGKey(3), (4, 5, 5, 2))
    params = init(model, x)
    _, factors = kfac_factors(model, params, x)
    A, B = factors[""]
    kernel = params["kernel"]
    # The exact GGN by brute force: J^T J / N over every output of the mean loss.
    jac = jax.jacrev(lambda k: model.apply({"params": {"kernel": k}}, x))(kernel)
    jac = np.asarray(jac).reshape(-1, kernel.size)
    np.testing.assert_allclose(np.kron(A, B), jac.T @ jac / 4, rtol=1e-10, atol=1e-12)


def test_kfac_empirical_fisher_uses_the_true_targets_gradients():
    x = jax.random.normal(jax.random.PRNGKey(5), (4, 3))
    y = jax.random.normal(jax.random.PRNGKey(6), (4, 2))
    model = deep_linear(3, 2)
    params = init(model, x)
    _, factors = kfac_factors(model, params, x, fisher="empirical", targets=y)
    A, B = factors["layers_0"]
    residual = np.asarray(model.apply({"params": params}, x) - y)
    np.testing.assert_allclose(B, residual.T @ residual / 4, rtol=1e-12)
    np.testing.assert_allclose(A, np.asarray(x).T @ np.asarray(x) / 4, rtol=1e-12)


def test_kfac_monte_carlo_fisher_estimates_the_exact_one():
    x = jax.random.normal(jax.random.PRNGKey(4), (6, 3))
    model = deep_linear(3, 2)
    params = init(model, x)
    _, exact = kfac_factors(model, params, x)
    samples = jax.vmap(lambda k: kfac_factors(model, params, x, fisher="mc", key=k)[1]["layers_0"][1])(
        jax.random.split(jax.random.PRNGKey(0), 4000))
    B = np.asarray(samples).mean(axis=0)
    np.testing.assert_allclose(B, exact["layers_0"][1], rtol=0.1, atol=0.05 * np.abs(B).max())


def test_kfac_step_applies_the_pi_damped_kronecker_inverse():
    A = np.array([[2.0, 0.3, 0.1], [0.3, 1.5, -0.2], [0.1, -0.2, 1.0]])
    B = np.array([[1.2, -0.4], [-0.4, 0.9]])
    W = np.arange(6.0).reshape(2, 3) / 7  # out x in
    G = np.sin(np.arange(6.0)).reshape(2, 3)
    params = {"dense": {"kernel": jnp.asarray(W.T)}}
    tx = kfac(0.5, [("dense",)], momentum=0.0, damping=0.01, inverse_frequency=1)
    updates, _ = tx.update({"dense": {"kernel": jnp.asarray(G.T)}}, tx.init(params), params,
                           kfac_factors={"dense": (jnp.asarray(A), jnp.asarray(B))})
    new = np.asarray(optax.apply_updates(params, updates)["dense"]["kernel"]).T
    np.testing.assert_allclose(new, cf.kfac_step(W, G, A, B, 0.5, 0.01), rtol=1e-10, atol=1e-12)


def test_kfac_gives_other_parameters_adam():
    params = {"norm": {"scale": jnp.ones(3), "bias": jnp.zeros(3)},
              "dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}}
    g0, g1 = gaussians((3,), 2, 7)
    grads = {"norm": {"scale": jnp.asarray(g0), "bias": jnp.asarray(g1)},
             "dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}}
    tx = kfac(LR, [("dense",)], momentum=0.0)
    updates, _ = tx.update(grads, tx.init(params), params)
    for name, g in (("scale", g0), ("bias", g1)):
        expected = cf.adamw_iterates(np.asarray(params["norm"][name]), [g], LR, 0.9, 0.999, 1e-8, 0.0)[0]
        np.testing.assert_allclose(params["norm"][name] + updates["norm"][name], expected, rtol=1e-12)


def test_kfac_bfloat16_inverses_give_the_float64_step_to_bfloat16_precision():
    A = np.array([[2.0, 0.3], [0.3, 1.5]])
    B = np.array([[1.2, -0.4, 0.1], [-0.4, 0.9, 0.0], [0.1, 0.0, 0.7]])
    params = {"d": {"kernel": jnp.zeros((2, 3))}}
    steps = {}
    for dtype in (None, jnp.bfloat16):
        tx = scale_by_kfac([("d",)], damping=0.01, inverse_frequency=1, preconditioner_dtype=dtype)
        direction, state = tx.update({"d": {"kernel": jnp.asarray(np.cos(np.arange(6.0)).reshape(2, 3))}},
                                     tx.init(params), params, kfac_factors={"d": (jnp.asarray(A), jnp.asarray(B))})
        steps[dtype] = np.asarray(direction["d"]["kernel"])
        assert state.A_inv["d"].dtype == (dtype or jnp.float64) and direction["d"]["kernel"].dtype == jnp.float64
    assert np.linalg.norm(steps[jnp.bfloat16] - steps[None]) <= 2e-2 * np.linalg.norm(steps[None])


# ---- K-FAC: the layers of a real model --------------------------------------------------------
def test_kfac_finds_every_dense_and_conv_layer_of_the_mnist1d_model():
    from submissions.kfac.jax_submission import find_layers
    from workloads import registry

    workload = registry.load("mnist1d", "jax", data="synthetic")
    params, state = workload.init_model_fn(jax.random.PRNGKey(0))
    layers = find_layers(workload, params, state)
    assert [layer.path for layer in layers] == [("conv1",), ("conv2",), ("conv3",), ("head",)]
    assert [layer.conv for layer in layers] == [True, True, True, False]
    assert layers[1].strides == (2,) and layers[1].padding == ((1, 1),)


class Shared(nn.Module):
    """One Dense applied twice (shared weights) and one applied once."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shared = nn.Dense(3, name="shared")
        return nn.Dense(2, name="once")(shared(shared(x)))


def test_kfac_leaves_a_layer_called_twice_to_adam_and_taps_change_no_output():
    x = jax.random.normal(jax.random.PRNGKey(8), (4, 3))
    model = Shared()
    params = init(model, x)
    layers = jax_layers.discover(lambda: model.apply({"params": params}, x))
    assert [layer.path for layer in layers] == [("once",)]
    out, _, _, inputs = jax_layers.tapped_vjp(lambda p: (model.apply({"params": p}, x), None), params, layers)
    np.testing.assert_array_equal(out, model.apply({"params": params}, x))
    assert inputs[("once",)].shape == (4, 3)


# ---- Schedule-Free: evaluation at x with batch-norm statistics recomputed there ---------------
class SmallBatchNormNet(nn.Module):
    """A convolution, flax's BatchNorm (`momentum`), a linear head: enough to have statistics."""

    momentum: float = 0.9

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = nn.Conv(8, (3, 3), strides=2, use_bias=False)(jnp.transpose(x, (0, 2, 3, 1)))
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=self.momentum)(x))
        return nn.Dense(10)(x.mean(axis=(1, 2)))


def small_cifar(momentum: float = 0.9):
    from workloads import registry
    from workloads.cifar.jax_workload import CifarWorkload

    class SmallCifar(CifarWorkload):
        def build_model(self) -> nn.Module:
            return SmallBatchNormNet(momentum)

    workload = SmallCifar(registry.get("cifar"), data="synthetic")
    params, state = workload.init_model_fn(jax.random.PRNGKey(0))
    return workload, params, state


def schedule_free_run(prepare_before_last: bool, steps: int = 4) -> tuple:
    """(workload, optimizer_state, params, model_state) after a few Schedule-Free steps on
    synthetic cifar, optionally with a prepare_for_eval (as the runner calls it) before the last."""
    from submissions.schedule_free import jax_submission as sf

    workload, params, state = small_cifar()
    run = sf.init_optimizer_state(workload, params, state, None, None)
    queue = workload.build_input_queue(jax.random.PRNGKey(0), "train", None, 16)
    common = dict(workload=workload, current_params_types=None, hyperparameters=None,
                  loss_type=workload.loss_type, eval_results=[])
    for step in range(steps):
        if prepare_before_last and step == steps - 1:
            run, params, state = sf.prepare_for_eval(**common, current_param_container=params, model_state=state,
                                                     optimizer_state=run, global_step=step, rng=None)
        run, params, state = sf.update_params(**common, current_param_container=params, model_state=state,
                                              batch=next(queue), optimizer_state=run, global_step=step,
                                              rng=jax.random.PRNGKey(step))
    return workload, run, params, state


@pytest.fixture(scope="module")
def schedule_free_runs():
    with jax.enable_x64(False):  # the suite's float32, as training runs
        return schedule_free_run(False), schedule_free_run(True)


def test_prepare_for_eval_puts_x_in_the_model_with_batch_norm_statistics_recomputed_there(schedule_free_runs):
    from algoperf import spec
    from submissions.schedule_free import jax_submission as sf

    with jax.enable_x64(False):
        (workload, run, y, state), _ = schedule_free_runs
        _, x, state_at_x = sf.prepare_for_eval(workload, y, None, state, None, workload.loss_type, run, [], 4, None)
        b1 = 1.0 - sf.DEFAULTS["one_minus_beta1"]
        for got, expected in zip(jax.tree.leaves(x), jax.tree.leaves(eval_params(run.opt_state, y, b1))):
            np.testing.assert_array_equal(got, expected)
        # The reference: the plain average over the kept batches of each batch's statistics at x,
        # read from a twin whose batch norm keeps the last batch's statistics (momentum 0).
        twin, _, _ = small_cifar(momentum=0.0)
        per_batch = [twin.model_fn(x, batch, state, spec.ForwardPassMode.TRAIN, None, update_batch_norm=True)[1]
                     for batch in run.recent_batches]
        assert len(per_batch) == sf.BN_BATCHES
        expected = jax.tree.map(lambda *s: np.mean(s, axis=0), *per_batch)
        for got, want in zip(jax.tree.leaves(state_at_x), jax.tree.leaves(expected)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        assert not np.allclose(jax.tree.leaves(state_at_x)[0], jax.tree.leaves(state)[0])


def test_an_eval_in_between_leaves_the_training_trajectory_bit_for_bit_unchanged(schedule_free_runs):
    (_, _, plain, plain_state), (_, _, with_eval, with_eval_state) = schedule_free_runs
    for a, b in zip(jax.tree.leaves((plain, plain_state)), jax.tree.leaves((with_eval, with_eval_state))):
        np.testing.assert_array_equal(a, b)


def test_a_schedule_free_state_at_x_survives_a_checkpoint(schedule_free_runs, tmp_path):
    from algoperf import checkpoint
    from algoperf.backends import jax as backend
    from submissions.schedule_free import jax_submission as sf

    with jax.enable_x64(False):
        (workload, run, y, state), _ = schedule_free_runs
        at_x, _, _ = sf.prepare_for_eval(workload, y, None, state, None, workload.loss_type, run, [], 4, None)
        checkpoint.write(checkpoint.capture(at_x, backend.to_numpy), str(tmp_path / "state.pkl"))
        fresh = sf.init_optimizer_state(workload, y, state, None, None)
        restored = checkpoint.restore(fresh, checkpoint.read(str(tmp_path / "state.pkl")), backend.from_numpy)
    assert type(restored) is sf.ScheduleFreeRun and type(restored.opt_state) is type(at_x.opt_state)
    assert restored.tx == fresh.tx  # functions come from set-up, they are not saved
    assert len(restored.recent_batches) == sf.BN_BATCHES and restored.at_y is not None
    pairs = zip(jax.tree.leaves((restored.opt_state, restored.at_y, restored.recent_batches)),
                jax.tree.leaves((at_x.opt_state, at_x.at_y, at_x.recent_batches)), strict=True)
    for got, saved in pairs:
        np.testing.assert_array_equal(got, saved)


def test_kfac_inverts_damped_factors_by_cholesky_symmetric_and_exact_to_float32():
    # A rank-deficient float32 factor (8 examples, 64 inputs) under K-FAC's smallest damping: the
    # inverse is symmetric and matches the float64 inverse to float32 precision of its condition.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8)).astype(np.float32)
    m = x @ x.T / 8 + 1e-3 * np.eye(64, dtype=np.float32)
    inverse = np.asarray(spd_inverse(jnp.asarray(m)))
    expected = np.linalg.inv(m.astype(np.float64))
    assert np.abs(inverse - inverse.T).max() <= 1e-5 * np.abs(expected).max()  # LU (jnp.linalg.inv): 3e-4
    np.testing.assert_allclose(inverse, expected, rtol=0, atol=1e-3 * np.abs(expected).max())
