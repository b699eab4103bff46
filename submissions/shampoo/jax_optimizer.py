"""Shampoo with blocking and grafting as an optax transformation (Gupta et al. 2018; Anil et al.
2020; Shi et al. 2023), the same algorithm as `optimizer.py` (PyTorch).

A parameter with at least two dimensions is preconditioned as a matrix G (`matrix_view`: rows =
all leading axes, columns = the last axis, i.e. fan-in x out for flax's Dense and Conv kernels;
the transpose of PyTorch's out x fan-in view, which gives the same update since Shampoo treats
rows and columns alike). Per block of at most `max_preconditioner_dim` rows and columns:

    L <- beta2 L + (1 - beta2) G G^T        R <- beta2 R + (1 - beta2) G^T G   (beta2 = 1: sums)
    every `precondition_frequency` steps:  P_L = (L_hat + eps I)^(-1/4),  P_R = (R_hat + eps I)^(-1/4)
    L_hat = L / (1 - beta2^t) (bias correction; none for the sums), from one batched `eigh` per
    matrix size over every block of every parameter (`inverse_roots`);
    D = P_L M P_R,   M the momentum-filtered gradient (`filter_momentum`).

Grafting (Agarwal et al. 2020, `graft_direction`): D is rescaled per block to the Frobenius norm
of the grafted optimizer's direction A: Adam (A = M / (sqrt(v_hat) + eps_graft)) or SGD (A = M).
Before `start_preconditioning_step`, and for vectors and for parameters with a dimension above
`skip_preconditioning_dim_size_gt`, the update is A alone (Adam for those under `grafting='none'`).
Momentum: M = (beta1 M + (1 - beta1) G) / (1 - beta1^t); Nesterov uses beta1 M + (1 - beta1) G
once more. Weight decay is decoupled (`optax.add_decayed_weights` after this transformation).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from submissions.jax_linalg import over_stack

GRAFTINGS = ("adam", "sgd", "none")


class Region(NamedTuple):
    """A rectangle of a matrix tiled by equal blocks: rows [r0, r0 + nr * br), columns alike."""

    r0: int
    c0: int
    nr: int  # blocks along the rows
    nc: int  # blocks along the columns
    br: int  # rows of a block
    bc: int  # columns of a block


class BlockFactors(NamedTuple):
    """One parameter's statistics and roots: per region a stack (blocks, n, n)."""

    L: tuple[jax.Array, ...]
    R: tuple[jax.Array, ...]
    PL: tuple[jax.Array, ...]
    PR: tuple[jax.Array, ...]


class ShampooState(NamedTuple):
    count: jax.Array  # steps taken
    momentum: optax.Updates
    graft_v: optax.Updates  # Adam's second moment (zeros of shape () where unused)
    factors: tuple[BlockFactors | None, ...]  # per leaf of the parameters (None: not preconditioned)


def matrix_view(x: jax.Array) -> jax.Array:
    """The 2-D view Shampoo preconditions: rows = leading axes, columns = the last."""
    return x.reshape(-1, x.shape[-1])


def _segments(n: int, size: int) -> list[tuple[int, int, int]]:
    """(start, count, length) of the full blocks and of the remainder along one axis."""
    full = n // size
    out = [(0, full, size)] if full else []
    if n % size:
        out.append((full * size, 1, n % size))
    return out


def regions(rows: int, cols: int, size: int) -> tuple[Region, ...]:
    """The blocks of at most size x size covering a rows x cols matrix, as up to four regions of
    equal blocks (full blocks, the right edge, the bottom edge, the corner)."""
    return tuple(Region(r0, c0, nr, nc, br, bc)
                 for r0, nr, br in _segments(rows, size) for c0, nc, bc in _segments(cols, size))


def to_blocks(m: jax.Array, g: Region) -> jax.Array:
    """The (nr * nc, br, bc) stack of a region's blocks."""
    part = m[g.r0:g.r0 + g.nr * g.br, g.c0:g.c0 + g.nc * g.bc]
    return part.reshape(g.nr, g.br, g.nc, g.bc).transpose(0, 2, 1, 3).reshape(-1, g.br, g.bc)


def from_blocks(stacks: tuple[jax.Array, ...], gs: tuple[Region, ...], shape: tuple[int, ...]) -> jax.Array:
    """The matrix of `shape` assembled from its regions' block stacks (inverse of `to_blocks`)."""
    parts = {(g.r0, g.c0): s.reshape(g.nr, g.nc, g.br, g.bc).transpose(0, 2, 1, 3)
             .reshape(g.nr * g.br, g.nc * g.bc) for g, s in zip(gs, stacks)}
    rows = sorted({g.r0 for g in gs})
    cols = sorted({g.c0 for g in gs})
    return jnp.concatenate([jnp.concatenate([parts[r, c] for c in cols], axis=1) for r in rows],
                           axis=0).reshape(shape)


def matrix_inverse_root(a: jax.Array, eps: float, root: int) -> jax.Array:
    """(A + eps I)^(-1/root) of a (k, n, n) stack of symmetric PSD matrices, by one
    eigendecomposition each (eigenvalues floored at eps, as the PyTorch side does)."""
    eye = jnp.eye(a.shape[-1], dtype=a.dtype)
    evals, evecs = over_stack(jnp.linalg.eigh, a + eps * eye)
    scale = jnp.maximum(evals, eps) ** (-1.0 / root)
    return (evecs * scale[..., None, :]) @ jnp.swapaxes(evecs, -1, -2)


def inverse_roots(stacks: list[jax.Array], eps: float, root: int, dtype: Any) -> list[jax.Array]:
    """`matrix_inverse_root` of every stack, computed in `dtype` with one batched call per
    matrix size (all L and R blocks of that size, across parameters), returned in the stacks'
    dtypes."""
    by_size: dict[int, list[int]] = {}
    for i, s in enumerate(stacks):
        by_size.setdefault(s.shape[-1], []).append(i)
    out: list[jax.Array] = list(stacks)
    for members in by_size.values():
        roots = matrix_inverse_root(jnp.concatenate([stacks[i].astype(dtype) for i in members]), eps, root)
        offsets = [0]
        for i in members:
            offsets.append(offsets[-1] + stacks[i].shape[0])
        for k, i in enumerate(members):
            out[i] = roots[offsets[k]:offsets[k + 1]].astype(stacks[i].dtype)
    return out


def accumulate_factors(g: jax.Array, f: BlockFactors, gs: tuple[Region, ...], beta2: float) -> BlockFactors:
    """L <- beta2 L + (1 - beta2) G G^T, R <- beta2 R + (1 - beta2) G^T G per block (sums if beta2 = 1)."""
    decay, weight = (1.0, 1.0) if beta2 == 1.0 else (beta2, 1.0 - beta2)
    gm = matrix_view(g)
    L, R = [], []
    for region, l_stack, r_stack in zip(gs, f.L, f.R):
        b = to_blocks(gm, region).astype(l_stack.dtype)
        L.append(decay * l_stack + weight * b @ jnp.swapaxes(b, -1, -2))
        R.append(decay * r_stack + weight * jnp.swapaxes(b, -1, -2) @ b)
    return f._replace(L=tuple(L), R=tuple(R))


def filter_momentum(g: jax.Array, m: jax.Array, beta1: float, nesterov: bool,
                    count: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(new momentum, filtered gradient M): EMA of the gradients, Nesterov's look-ahead if asked,
    bias-corrected (Distributed Shampoo's order: momentum before preconditioning)."""
    m = beta1 * m + (1.0 - beta1) * g
    filtered = beta1 * m + (1.0 - beta1) * g if nesterov else m
    if beta1 > 0.0:
        filtered = filtered / (1.0 - beta1**count)
    return m, filtered


def graft_direction(g: jax.Array, filtered: jax.Array, v: jax.Array, adam: bool, beta2: float,
                    eps: float, count: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(new second moment, grafted direction A): Adam's M / (sqrt(v_hat) + eps), or M itself."""
    if not adam:
        return v, filtered
    v = beta2 * v + (1.0 - beta2) * g * g
    return v, filtered / (jnp.sqrt(v / (1.0 - beta2**count)) + eps)


def precondition(filtered: jax.Array, grafted: jax.Array, f: BlockFactors, gs: tuple[Region, ...],
                 graft: bool) -> jax.Array:
    """D = P_L M P_R per block, rescaled to the grafted direction's block norm if `graft`."""
    mm, am = matrix_view(filtered), matrix_view(grafted)
    out = []
    for region, pl, pr in zip(gs, f.PL, f.PR):
        m = to_blocks(mm, region)
        d = (pl @ m.astype(pl.dtype) @ pr).astype(m.dtype)
        if graft:
            a_norm = jnp.linalg.norm(to_blocks(am, region), axis=(-2, -1))
            d_norm = jnp.maximum(jnp.linalg.norm(d, axis=(-2, -1)), 1e-30)  # a zero block stays finite
            d = d * (a_norm / d_norm)[:, None, None]
        out.append(d)
    return from_blocks(tuple(out), gs, mm.shape).reshape(filtered.shape)


def scale_by_shampoo(
    beta1: float = 0.9,
    beta2: float = 0.999,
    epsilon: float = 1e-12,
    precondition_frequency: int = 100,
    start_preconditioning_step: int = 1,
    max_preconditioner_dim: int = 1024,
    skip_preconditioning_dim_size_gt: int = 24576,
    grafting: str = "adam",
    grafting_beta2: float = 0.999,
    grafting_epsilon: float = 1e-8,
    nesterov: bool = False,
    use_bias_correction: bool = True,
    inverse_root_dtype: Any = jnp.float32,
    preconditioner_dtype: Any = None,
) -> optax.GradientTransformation:
    """The Shampoo direction of the module docstring (no learning rate, no weight decay)."""
    if grafting not in GRAFTINGS:
        raise ValueError(f"grafting must be one of {GRAFTINGS}, got {grafting!r}")
    if not 0.0 <= beta1 < 1.0 or not 0.0 < beta2 <= 1.0:
        raise ValueError(f"betas must be in [0, 1) x (0, 1], got {(beta1, beta2)}")

    def preconditioned(p: Any) -> bool:
        return p.ndim >= 2 and max(matrix_view(p).shape) <= skip_preconditioning_dim_size_gt

    def adam_moment(p: Any) -> bool:
        """Adam statistics for Adam grafting, and for unpreconditioned parameters under 'none'."""
        return grafting == "adam" or (grafting == "none" and not preconditioned(p))

    def layout(p: Any) -> tuple[Region, ...]:
        return regions(*matrix_view(p).shape, max_preconditioner_dim)

    def init_factors(p: Any) -> BlockFactors | None:
        if not preconditioned(p):
            return None
        gs = layout(p)
        stats = lambda n: tuple(jnp.zeros((g.nr * g.nc, n(g), n(g)), p.dtype) for g in gs)  # noqa: E731
        roots = lambda n: tuple(jnp.zeros((g.nr * g.nc, n(g), n(g)), preconditioner_dtype or p.dtype)  # noqa: E731
                                for g in gs)
        return BlockFactors(stats(lambda g: g.br), stats(lambda g: g.bc), roots(lambda g: g.br),
                            roots(lambda g: g.bc))

    def init(params: optax.Params) -> ShampooState:
        return ShampooState(
            count=jnp.zeros([], jnp.int32),
            momentum=optax.tree.zeros_like(params),
            graft_v=jax.tree.map(lambda p: jnp.zeros_like(p) if adam_moment(p) else jnp.zeros([], p.dtype),
                                 params),
            factors=tuple(init_factors(p) for p in jax.tree.leaves(params)),
        )

    def refresh_roots(factors: list[BlockFactors | None], count: jax.Array) -> list[BlockFactors | None]:
        correction = (1.0 - beta2**count) if (use_bias_correction and beta2 < 1.0) else 1.0
        stacks = [s / correction for f in factors if f is not None for s in (*f.L, *f.R)]
        roots = iter(inverse_roots(stacks, epsilon, 4, inverse_root_dtype))
        out: list[BlockFactors | None] = []
        for f in factors:
            if f is None:
                out.append(None)
                continue
            pl = tuple(next(roots).astype(x.dtype) for x in f.PL)
            pr = tuple(next(roots).astype(x.dtype) for x in f.PR)
            out.append(f._replace(PL=pl, PR=pr))
        return out

    def update(updates: optax.Updates, state: ShampooState,
               params: optax.Params | None = None) -> tuple[optax.Updates, ShampooState]:
        count = optax.safe_increment(state.count)
        grads, treedef = jax.tree.flatten(updates)
        momenta = treedef.flatten_up_to(state.momentum)
        vs = treedef.flatten_up_to(state.graft_v)
        factors = [None if f is None else accumulate_factors(g, f, layout(g), beta2)
                   for g, f in zip(grads, state.factors)]
        refresh = (count >= start_preconditioning_step) & (
            (count - start_preconditioning_step) % precondition_frequency == 0)
        factors = jax.lax.cond(refresh, refresh_roots, lambda f, c: f, factors, count)
        directions, new_m, new_v = [], [], []
        for g, m, v, f in zip(grads, momenta, vs, factors):
            m, filtered = filter_momentum(g, m, beta1, nesterov, count)
            v, grafted = graft_direction(g, filtered, v, adam_moment(g), grafting_beta2,
                                         grafting_epsilon, count)
            direction = grafted
            if f is not None:
                shampoo = precondition(filtered, grafted, f, layout(g), grafting != "none")
                direction = jnp.where(count >= start_preconditioning_step, shampoo, grafted)
            directions.append(direction)
            new_m.append(m)
            new_v.append(v)
        new_state = ShampooState(count, treedef.unflatten(new_m), treedef.unflatten(new_v), tuple(factors))
        return treedef.unflatten(directions), new_state

    return optax.GradientTransformation(init, update)


def shampoo(learning_rate: optax.ScalarOrSchedule, weight_decay: float = 0.0,
            **shampoo_options: Any) -> optax.GradientTransformation:
    """Shampoo's direction, decoupled weight decay, the learning rate (as the PyTorch baseline)."""
    return optax.chain(
        scale_by_shampoo(**shampoo_options),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )
