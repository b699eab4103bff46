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

# When to split: `scripts/bench_optimizers.py --gram` times the banded product against one full
# product. On the 2-core AVX-512 CPU it was measured on, bands pay only when the inner dimension is
# long (576 x 32768, K-FAC's first-stage conv factors: 256-row bands take 0.85 of the full
# product's time) and cost more than they save otherwise (1024 x 1024: 0.89-3.3; 4608 x 512 with
# 512-row bands: 1.6), so a product is split into bands of BAND_ROWS rows only when its inner
# dimension is at least MIN_INNER_PER_ROW times its rows.
BAND_ROWS = 256
MIN_INNER_PER_ROW = 16


def band_edges(n: int, band_rows: int | None = None, inner: int | None = None) -> list[int]:
    """Boundaries of the row bands of an n x n Gram matrix with inner dimension `inner` (one band
    when n < 2 band_rows, or when `inner` is given and below MIN_INNER_PER_ROW x n)."""
    bands = max(1, n // (band_rows or BAND_ROWS))
    if inner is not None and inner < MIN_INNER_PER_ROW * n:
        bands = 1
    return [round(i * n / bands) for i in range(bands + 1)]


def accumulate_lower_gram_(out: torch.Tensor, x: torch.Tensor, alpha: float = 1.0, beta: float = 1.0,
                           band_rows: int | None = None) -> torch.Tensor:
    """out <- beta out + alpha x x^T on the lower band triangle of `out`, in place.

    `x` is (n, m) or a batch (k, n, m) (any strides: a transposed view gives x^T x); `out` is
    (n, n) or (k, n, n). With beta = 0 the old values are ignored (NaN included), as in addmm_.
    An explicit `band_rows` splits regardless of the inner dimension (tests). Float32 on a CPU
    takes the convolution route of `submissions/matmul.py` where it applies (its own bands).
    """
    if band_rows is None and accumulate_lower_gram_conv_(out, x, alpha, beta):
        return out
    edges = band_edges(x.shape[-2], band_rows, None if band_rows else x.shape[-1])
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
