"""K-FAC as optax transformations: Kronecker factors, the pi-damped inverses, the preconditioned
update; Adam for every parameter outside the K-FAC layers. The same algorithm as `optimizer.py`
(PyTorch), in flax's layout.

Martens & Grosse 2015 (K-FAC), Grosse & Martens 2016 (KFC for convolutions), Eschenhagen et al.
2023 (K-FAC-expand and K-FAC-reduce for layers with weight sharing).

For a layer s = a^T W (W: fan_in x out as flax stores it, a bias as one more row of W on an input
of ones), each example n and weight-sharing position r give an input a_nr and an output gradient
g_nr (of that example's loss, or of a loss whose targets are sampled from / spanned by the model's
predictive distribution: the Fisher type, `fisher_output_gradients`). With N examples and R
positions (`kronecker_factors`):

    expand:  A = 1/(N R) sum_{n,r} a_nr a_nr^T          B = 1/N sum_{n,r} g_nr g_nr^T
    reduce:  A = 1/N sum_n abar_n abar_n^T (abar = mean_r a)   B = 1/N sum_n gsum_n gsum_n^T

and the curvature of the mean loss is approximated by A (x) B on the row-major vec(W) (the
PyTorch side's B (x) A on its transposed W). Factors are EMAs (`factor_decay`; the first batch
sets them); every `inverse_frequency` steps the damped inverses are recomputed with the pi-split
of the damping lambda (Martens & Grosse 2015, sec. 6.3, `damped_inverses`):
A + pi sqrt(lambda) I and B + sqrt(lambda)/pi I, pi = sqrt((tr A / dim A) / (tr B / dim B)), in
one batched call per matrix size. The K-FAC layers' direction is A^-1 G B^-1 (`scale_by_kfac`),
followed by heavy-ball momentum and decoupled weight decay; the other parameters get Adam
(`kfac`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg
import optax

from submissions.jax_linalg import over_stack

FISHER_TYPES = ("empirical", "mc", "type2")
APPROXIMATIONS = ("expand", "reduce")
LOSSES = ("softmax_cross_entropy", "sigmoid_cross_entropy", "mse")

Path = tuple[str, ...]


def key_of(path: Path) -> str:
    """A layer's name in the K-FAC state: its parameter path joined by '/'."""
    return "/".join(path)


def layer_params(tree: Any, path: Path) -> Any:
    for name in path:
        tree = tree[name]
    return tree


def input_factor(a3: jax.Array, approximation: str) -> jax.Array:
    """A of one batch from (N, R, in) inputs (see the module docstring)."""
    n, r = a3.shape[0], a3.shape[1]
    if approximation == "expand":
        a2 = a3.reshape(n * r, -1)
        return a2.T @ a2 / (n * r)
    abar = a3.mean(axis=1)
    return abar.T @ abar / n


def output_factor(g3: jax.Array, approximation: str) -> jax.Array:
    """B of one batch, for the mean loss, from (N, R, out) per-example output gradients."""
    n = g3.shape[0]
    if approximation == "expand":
        g2 = g3.reshape(-1, g3.shape[-1])
        return g2.T @ g2 / n
    gsum = g3.sum(axis=1)
    return gsum.T @ gsum / n


def kronecker_factors(a3: jax.Array, g3: jax.Array, approximation: str) -> tuple[jax.Array, jax.Array]:
    """(A, B) of one batch for the mean loss."""
    if approximation not in APPROXIMATIONS:
        raise ValueError(f"approximation must be one of {APPROXIMATIONS}, got {approximation!r}")
    return input_factor(a3, approximation), output_factor(g3, approximation)


def fisher_output_gradients(logits: jax.Array, loss: str, fisher_type: str, key: Any = None) -> jax.Array:
    """(P, *logits.shape): P vectors of per-example output gradients d loss_n / d f_n whose outer
    products give the Fisher's output-space curvature (the logits' last axis is the prediction
    vector; leading axes index examples and positions, each with its own loss term).

    mc: one target sampled from the model's predictive distribution (P = 1); type2: the exact GGN
    from the columns of the loss Hessian's square root (P = number of outputs). The empirical
    Fisher uses the true targets' gradients, which the training step already has."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    f = jax.lax.stop_gradient(logits)
    c = f.shape[-1]
    if fisher_type == "mc":
        if loss == "softmax_cross_entropy":
            y = jax.nn.one_hot(jax.random.categorical(key, f), c, dtype=f.dtype)
            return (jax.nn.softmax(f) - y)[None]
        if loss == "sigmoid_cross_entropy":
            s = jax.nn.sigmoid(f)
            return (s - jax.random.bernoulli(key, s).astype(f.dtype))[None]
        return -jax.random.normal(key, f.shape, f.dtype)[None]  # mse: f - (f + noise)
    if fisher_type != "type2":
        raise ValueError(f"fisher_output_gradients serves 'mc' and 'type2', got {fisher_type!r}")
    e = jnp.eye(c, dtype=f.dtype).reshape(c, *([1] * (f.ndim - 1)), c)  # e_k for every position
    if loss == "mse":
        return jnp.broadcast_to(e, (c, *f.shape))
    if loss == "sigmoid_cross_entropy":
        s = jax.nn.sigmoid(f)
        return jnp.sqrt(s * (1 - s))[None] * e
    # softmax: H = diag(p) - p p^T = sum_k p_k (e_k - p)(e_k - p)^T
    p = jax.nn.softmax(f)
    return jnp.sqrt(jnp.moveaxis(p, -1, 0))[..., None] * (e - p[None])


def spd_inverse(m: jax.Array) -> jax.Array:
    """The inverse of a symmetric positive definite matrix from its Cholesky factor, as the PyTorch
    K-FAC inverts. (On a Zen 4 CPU, float32 LU inverses, jnp.linalg.inv, made the mnist1d K-FAC run
    diverge by step 200, where this one reaches the target at step 400: tests/test_jax_baselines_e2e.py.)"""
    factor = jax.scipy.linalg.cho_factor(m, lower=True)
    return jax.scipy.linalg.cho_solve(factor, jnp.eye(m.shape[0], dtype=m.dtype))


def damped_inverses(factors: Sequence[tuple[jax.Array, jax.Array]], damping: float,
                    dtype: Any = None) -> list[tuple[jax.Array, jax.Array]]:
    """((A + pi sqrt(lambda) I)^-1, (B + sqrt(lambda)/pi I)^-1) per layer, inverted with one
    batched call per matrix size; stored in `dtype` (default: the factors')."""
    root = math.sqrt(damping)
    damped: list[jax.Array] = []
    for a, b in factors:
        pi = jnp.sqrt((jnp.trace(a) / a.shape[0]) / jnp.maximum(jnp.trace(b) / b.shape[0], 1e-30))
        pi = jnp.where(jnp.isfinite(pi) & (pi > 0), pi, 1.0)
        damped += [a + pi * root * jnp.eye(a.shape[0], dtype=a.dtype),
                   b + (root / pi) * jnp.eye(b.shape[0], dtype=b.dtype)]
    by_size: dict[int, list[int]] = {}
    for i, m in enumerate(damped):
        by_size.setdefault(m.shape[0], []).append(i)
    out: list[jax.Array] = list(damped)
    for members in by_size.values():
        inverses = over_stack(spd_inverse, jnp.stack([damped[i] for i in members]))
        for k, i in enumerate(members):
            out[i] = inverses[k].astype(dtype or damped[i].dtype)
    return [(out[2 * j], out[2 * j + 1]) for j in range(len(factors))]


class KfacState(NamedTuple):
    count: jax.Array  # steps taken
    seen: jax.Array  # whether factors have been collected yet
    A: dict[str, jax.Array]  # input factors, by layer key
    B: dict[str, jax.Array]  # output-gradient factors
    A_inv: dict[str, jax.Array]  # damped inverses (identity until the first recomputation)
    B_inv: dict[str, jax.Array]


def _matrix_grad(layer: dict[str, jax.Array]) -> jax.Array:
    """(fan_in [+ 1], out): the kernel's gradient as a matrix, the bias's as its last row."""
    kernel = layer["kernel"]
    g = kernel.reshape(-1, kernel.shape[-1])
    return jnp.concatenate([g, layer["bias"][None]], axis=0) if "bias" in layer else g


def _split_matrix(d: jax.Array, like: dict[str, jax.Array]) -> dict[str, jax.Array]:
    kernel = like["kernel"]
    out = dict(like)
    out["kernel"] = d[: math.prod(kernel.shape[:-1])].reshape(kernel.shape)
    if "bias" in like:
        out["bias"] = d[-1]
    return out


def _replace_layer(tree: Any, path: Path, value: Any) -> Any:
    if not path:
        return value
    return {**tree, path[0]: _replace_layer(tree[path[0]], path[1:], value)}


def scale_by_kfac(layers: Sequence[Path], damping: float = 1e-3, factor_decay: float = 0.95,
                  inverse_frequency: int = 50, preconditioner_dtype: Any = None,
                  ) -> optax.GradientTransformationExtraArgs:
    """The K-FAC layers' gradients G -> A^-1 G B^-1; other gradients pass unchanged.

    `update(grads, state, params, kfac_factors=...)` folds a batch's factors {key: (A, B)} into
    the EMAs first (pass None on steps without a factor update). The inverses are recomputed
    before the update on every `inverse_frequency`-th step once factors exist (PyTorch's order).
    """
    keys = [key_of(p) for p in layers]

    def init(params: optax.Params) -> KfacState:
        zeros, eyes = {}, {}
        for path, key in zip(layers, keys):
            g = _matrix_grad(layer_params(params, path))
            for name, n in (("A", g.shape[0]), ("B", g.shape[1])):
                zeros[name, key] = jnp.zeros((n, n), g.dtype)
                eyes[name, key] = jnp.eye(n, dtype=preconditioner_dtype or g.dtype)
        return KfacState(
            count=jnp.zeros([], jnp.int32), seen=jnp.zeros([], bool),
            A={k: zeros["A", k] for k in keys}, B={k: zeros["B", k] for k in keys},
            A_inv={k: eyes["A", k] for k in keys}, B_inv={k: eyes["B", k] for k in keys},
        )

    def update(updates: optax.Updates, state: KfacState, params: optax.Params | None = None,
               kfac_factors: dict[str, tuple[jax.Array, jax.Array]] | None = None,
               **extra: Any) -> tuple[optax.Updates, KfacState]:
        A, B, seen = state.A, state.B, state.seen
        if kfac_factors is not None:
            decay = jnp.where(seen, factor_decay, 0.0)
            A = {k: decay * A[k] + (1 - decay) * kfac_factors[k][0].astype(A[k].dtype) for k in keys}
            B = {k: decay * B[k] + (1 - decay) * kfac_factors[k][1].astype(B[k].dtype) for k in keys}
            seen = jnp.ones([], bool)

        def recompute(_: Any) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
            inverses = damped_inverses([(A[k], B[k]) for k in keys], damping, preconditioner_dtype)
            return ({k: inv[0] for k, inv in zip(keys, inverses)},
                    {k: inv[1] for k, inv in zip(keys, inverses)})

        refresh = seen & (state.count % inverse_frequency == 0)
        A_inv, B_inv = jax.lax.cond(refresh, recompute, lambda _: (state.A_inv, state.B_inv), None)
        out = updates
        for path, key in zip(layers, keys):
            layer = layer_params(updates, path)
            g = _matrix_grad(layer)
            d = (A_inv[key] @ g.astype(A_inv[key].dtype) @ B_inv[key]).astype(g.dtype)
            out = _replace_layer(out, path, _split_matrix(d, layer))
        return out, KfacState(optax.safe_increment(state.count), seen, A, B, A_inv, B_inv)

    return optax.GradientTransformationExtraArgs(init, update)


def kfac(learning_rate: optax.ScalarOrSchedule, layers: Sequence[Path], momentum: float = 0.9,
         weight_decay: float = 0.0, damping: float = 1e-3, factor_decay: float = 0.95,
         inverse_frequency: int = 50, adam_b1: float = 0.9, adam_b2: float = 0.999,
         adam_eps: float = 1e-8, preconditioner_dtype: Any = None) -> optax.GradientTransformationExtraArgs:
    """K-FAC directions with heavy-ball momentum (buf = momentum buf + d) and decoupled weight
    decay on the K-FAC layers, Adam (no decay) on every other parameter, one learning rate."""
    kfac_paths = set(layers)

    def labels(params: optax.Params) -> Any:
        def label(path: Any, _: Any) -> str:
            names = tuple(getattr(k, "key", getattr(k, "name", str(k))) for k in path)
            return "kfac" if any(names[: len(p)] == p and len(names) == len(p) + 1 for p in kfac_paths) \
                else "adam"
        return jax.tree_util.tree_map_with_path(label, params)

    return optax.chain(
        scale_by_kfac(layers, damping, factor_decay, inverse_frequency, preconditioner_dtype),
        optax.partition({
            "kfac": optax.chain(optax.trace(decay=momentum), optax.add_decayed_weights(weight_decay)),
            "adam": optax.scale_by_adam(adam_b1, adam_b2, adam_eps),
        }, labels),
        optax.scale_by_learning_rate(learning_rate),
    )
