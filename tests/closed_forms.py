"""The baselines' optimizers in closed form, in plain numpy (float64): what both the PyTorch and
the JAX implementations are checked against (tests/test_shampoo.py, test_kfac.py,
test_schedule_free.py for PyTorch; tests/test_jax_baselines.py for JAX).

Every function is the paper's formula written out once, with no framework: an iterate sequence
from a list of gradients, or one quantity (a root, a factor, a curvature block).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


# ---- first-order baselines --------------------------------------------------------------------
def adamw_iterates(p0: np.ndarray, grads: Sequence[np.ndarray], lr: float, b1: float, b2: float,
                   eps: float, wd: float) -> list[np.ndarray]:
    """AdamW (Loshchilov & Hutter 2019, Alg. 2; PyTorch's form): p <- p (1 - lr wd) - lr m_hat /
    (sqrt(v_hat) + eps). The parameters after each step."""
    p, m, v, out = p0.copy(), np.zeros_like(p0), np.zeros_like(p0), []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p * (1 - lr * wd) - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        out.append(p)
    return out


def nadamw_iterates(p0: np.ndarray, grads: Sequence[np.ndarray], lr: float, b1: float, b2: float,
                    eps: float, wd: float) -> list[np.ndarray]:
    """AlgoPerf's NAdamW: Adam with the Nesterov look-ahead b1 m + (1 - b1) g, both terms
    bias-corrected by (1 - b1^t), and decoupled weight decay."""
    p, m, v, out = p0.copy(), np.zeros_like(p0), np.zeros_like(p0), []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        nesterov = (b1 * m + (1 - b1) * g) / (1 - b1**t)
        p = p * (1 - lr * wd) - lr * nesterov / (np.sqrt(v / (1 - b2**t)) + eps)
        out.append(p)
    return out


def sgd_iterates(p0: np.ndarray, grads: Sequence[np.ndarray], lr: float, momentum: float,
                 nesterov: bool, wd: float) -> list[np.ndarray]:
    """`torch.optim.SGD`: g <- g + wd p (coupled L2), buf <- momentum buf + g (buf_1 = g),
    step along g + momentum buf (Nesterov) or buf (heavy ball)."""
    p, buf, out = p0.copy(), np.zeros_like(p0), []
    for g in grads:
        g = g + wd * p
        buf = momentum * buf + g
        p = p - lr * (g + momentum * buf if nesterov else buf)
        out.append(p)
    return out


# ---- Schedule-Free AdamW ----------------------------------------------------------------------
def schedule_free_iterates(y0: np.ndarray, grads: Sequence[np.ndarray], lr: float, b1: float,
                           b2: float, eps: float, wd: float, warmup: int = 0, r: float = 0.0,
                           weight_lr_power: float = 2.0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(y, z, x) after each step of Schedule-Free AdamW (Defazio et al. 2024, Alg. 1), with the
    three sequences kept explicitly (the implementations keep only y and z)."""
    z, x, y, v = y0.copy(), y0.copy(), y0.copy(), np.zeros_like(y0)
    lr_max, weight_sum, out = -1.0, 0.0, []
    for t, g in enumerate(grads, start=1):
        lr_t = lr * min(1.0, t / warmup) if warmup > 0 else lr
        lr_max = max(lr_max, lr_t)
        weight = t**r * lr_max**weight_lr_power
        weight_sum += weight
        c = weight / weight_sum
        v = b2 * v + (1 - b2) * g * g
        d = g / (np.sqrt(v / (1 - b2**t)) + eps) + wd * y
        z = z - lr_t * d
        x = (1 - c) * x + c * z
        y = (1 - b1) * z + b1 * x
        out.append((y, z, x))
    return out


# ---- Shampoo ----------------------------------------------------------------------------------
def inverse_root(a: np.ndarray, p: int) -> np.ndarray:
    """A^(-1/p) of a symmetric positive definite matrix."""
    w, v = np.linalg.eigh(a)
    return (v * w ** (-1.0 / p)) @ v.T


def shampoo_direction(L: np.ndarray, R: np.ndarray, g: np.ndarray, eps: float) -> np.ndarray:
    """(L + eps I)^(-1/4) G (R + eps I)^(-1/4) (Gupta et al. 2018, Alg. 1)."""
    return inverse_root(L + eps * np.eye(len(L)), 4) @ g @ inverse_root(R + eps * np.eye(len(R)), 4)


def shampoo_sum_updates(grads: Sequence[np.ndarray], lr: float, eps: float) -> list[np.ndarray]:
    """Parameter changes of Shampoo with summed statistics L = sum G G^T, R = sum G^T G, roots
    every step, no momentum, no grafting."""
    L, R, out = 0.0, 0.0, []
    for g in grads:
        L = L + g @ g.T
        R = R + g.T @ g
        out.append(-lr * shampoo_direction(L, R, g, eps))
    return out


def shampoo_ema_updates(grads: Sequence[np.ndarray], lr: float, eps: float, beta2: float) -> list[np.ndarray]:
    """As `shampoo_sum_updates`, with EMA statistics bias-corrected by 1 - beta2^t."""
    L, R, out = 0.0, 0.0, []
    for t, g in enumerate(grads, start=1):
        L = beta2 * L + (1 - beta2) * g @ g.T
        R = beta2 * R + (1 - beta2) * g.T @ g
        c = 1 - beta2**t
        out.append(-lr * shampoo_direction(L / c, R / c, g, eps))
    return out


def block_slices(rows: int, cols: int, size: int) -> list[tuple[slice, slice]]:
    """The blocks of at most size x size that tile a rows x cols matrix."""
    return [(slice(i, min(i + size, rows)), slice(j, min(j + size, cols)))
            for i in range(0, rows, size) for j in range(0, cols, size)]


def adam_directions(grads: Sequence[np.ndarray], b2: float, eps: float) -> list[np.ndarray]:
    """Adam's direction without momentum, g / (sqrt(v_hat) + eps): the grafted norm of Shampoo
    with beta1 = 0."""
    v, out = 0.0, []
    for t, g in enumerate(grads, start=1):
        v = b2 * v + (1 - b2) * g**2
        out.append(g / (np.sqrt(v / (1 - b2**t)) + eps))
    return out


def filtered_sgd_iterates(p0: np.ndarray, grads: Sequence[np.ndarray], lr: float, beta1: float,
                          wd: float) -> list[np.ndarray]:
    """Nesterov-filtered, bias-corrected SGD with decoupled weight decay: Shampoo's momentum
    before preconditioning starts, with SGD grafting."""
    p, m, out = p0.copy(), np.zeros_like(p0), []
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        d = (beta1 * m + (1 - beta1) * g) / (1 - beta1**t)
        p = p * (1 - lr * wd) - lr * d
        out.append(p)
    return out


# ---- K-FAC ------------------------------------------------------------------------------------
def kronecker_factors(a3: np.ndarray, g3: np.ndarray, approximation: str) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) from (N, R, in) inputs and (N, R, out) per-example output gradients (Eschenhagen et
    al. 2023): expand treats positions as examples, reduce averages inputs and sums gradients."""
    n, r = a3.shape[:2]
    if approximation == "expand":
        a2, g2 = a3.reshape(n * r, -1), g3.reshape(n * r, -1)
        return a2.T @ a2 / (n * r), g2.T @ g2 / n
    abar, gsum = a3.mean(axis=1), g3.sum(axis=1)
    return abar.T @ abar / n, gsum.T @ gsum / n


def pi_damped(A: np.ndarray, B: np.ndarray, damping: float) -> tuple[np.ndarray, np.ndarray]:
    """(A + pi sqrt(lambda) I, B + sqrt(lambda)/pi I), pi = sqrt((tr A / dim A) / (tr B / dim B))
    (Martens & Grosse 2015, sec. 6.3)."""
    pi = np.sqrt((np.trace(A) / len(A)) / (np.trace(B) / len(B)))
    return A + pi * np.sqrt(damping) * np.eye(len(A)), B + np.sqrt(damping) / pi * np.eye(len(B))


def kfac_step(W: np.ndarray, G: np.ndarray, A: np.ndarray, B: np.ndarray, lr: float,
              damping: float) -> np.ndarray:
    """W - lr (B + ...)^-1 G (A + ...)^-1 for W and G laid out out x in (PyTorch's layout; flax's
    in x out kernel takes the transpose of both sides)."""
    Ad, Bd = pi_damped(A, B, damping)
    return W - lr * np.linalg.solve(Bd, G) @ np.linalg.inv(Ad)


def deep_linear_ggn(weights: Sequence[np.ndarray], x: np.ndarray, layer: int,
                    layout: str = "out_in") -> np.ndarray:
    """The generalised Gauss-Newton block of weight `layer` of f(x) = W_L ... W_1 x (W_l: out x in)
    for the mean over the N rows of x of 1/2 ||f - y||^2, on the row-major vec(W_l):
    (P^T P) (x) (1/N sum_n a_n a_n^T), with a_n = W_{l-1} ... W_1 x_n the layer's input and
    P = W_L ... W_{l+1} the map from its output to f. K-FAC's B (x) A is exactly this for deep
    linear networks (Bernacchia et al. 2018). `layout="in_out"` orders vec as flax's kernel W_l^T
    (in x out) is laid out: (1/N sum_n a_n a_n^T) (x) (P^T P)."""
    a = x.T
    for w in weights[:layer]:
        a = w @ a
    P = np.eye(weights[layer].shape[0])
    for w in weights[layer + 1:]:
        P = w @ P
    inputs, outputs = a @ a.T / x.shape[0], P.T @ P
    return np.kron(outputs, inputs) if layout == "out_in" else np.kron(inputs, outputs)
