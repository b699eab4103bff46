"""Symmetric Gram products accumulated into their lower triangle only.

Shampoo's statistics (G G^T and G^T G) and K-FAC's factors (a a^T, g g^T) are symmetric, and
what consumes them reads one triangle: `torch.linalg.eigh` and `torch.linalg.cholesky` read the
lower one, a trace reads the diagonal. Splitting the rows of X into k bands and computing only
the band pairs i >= j does (k + 1) / 2k of the full product's arithmetic; the strict upper
triangle of the off-diagonal bands is never written (it keeps whatever it held: zeros for state
allocated with zeros). `symmetrize` gives the full matrix where one is needed (tests, inspection).
"""

from __future__ import annotations

import torch

from submissions.matmul import accumulate_lower_gram_conv_

# When to split (products that do not take the convolution route of submissions/matmul.py):
# `scripts/bench_optimizers.py --gram` times the banded product against one full product. On the
# Zen 4 EPYC machine (MKL's sgemm at 85-100 GFLOP/s on one thread) this rule's bands took 0.60-0.81
# of the full product's time for every shape the baselines have with 256-4608 rows and inner
# dimensions 128-32768 (the rate fell less than the arithmetic), 0.99 for 128 x 1024 in two bands;
# eight bands lost again where bands got short (record: docs/benchmarks/bench_optimizers.txt).
# A product is split into BANDS bands of at least MIN_BAND_ROWS rows, when its inner dimension is
# at least MIN_BAND_ROWS.
BANDS = 4
MIN_BAND_ROWS = 64


def band_edges(n: int, band_rows: int | None = None, inner: int | None = None) -> list[int]:
    """Boundaries of the row bands of an n x n Gram matrix with inner dimension `inner`: bands of
    `band_rows` rows when given, else BANDS bands of at least MIN_BAND_ROWS rows (fewer when n is
    small, one when `inner` is below MIN_BAND_ROWS)."""
    if band_rows is not None:
        bands = max(1, n // band_rows)
    elif inner is not None and inner < MIN_BAND_ROWS:
        bands = 1
    else:
        bands = max(1, min(BANDS, n // MIN_BAND_ROWS))
    return [round(i * n / bands) for i in range(bands + 1)]


def accumulate_lower_gram_(out: torch.Tensor, x: torch.Tensor, alpha: float = 1.0, beta: float = 1.0,
                           band_rows: int | None = None) -> torch.Tensor:
    """out <- beta out + alpha x x^T on the lower band triangle of `out`, in place.

    `x` is (n, m) or a batch (k, n, m) (any strides: a transposed view gives x^T x); `out` is
    (n, n) or (k, n, n). With beta = 0 the old values are ignored (NaN included), as in addmm_.
    An explicit `band_rows` splits regardless of the inner dimension (tests, benchmarks). Float32 on a CPU
    takes the convolution route of `submissions/matmul.py` where it applies (its own bands).
    """
    if band_rows is None and accumulate_lower_gram_conv_(out, x, alpha, beta):
        return out
    edges = band_edges(x.shape[-2], band_rows, x.shape[-1])
    product = torch.Tensor.baddbmm_ if x.dim() == 3 else torch.Tensor.addmm_
    for i in range(len(edges) - 1):
        rows = slice(edges[i], edges[i + 1])
        for j in range(i + 1):
            cols = slice(edges[j], edges[j + 1])
            product(out[..., rows, cols], x[..., rows, :], x[..., cols, :].transpose(-1, -2),
                    beta=beta, alpha=alpha)
    return out


def symmetrize(lower: torch.Tensor) -> torch.Tensor:
    """The symmetric matrix whose lower triangle is `lower`'s (batched over leading dims)."""
    return torch.tril(lower) + torch.tril(lower, -1).transpose(-1, -2)
