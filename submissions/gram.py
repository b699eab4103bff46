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

# Rows per band: below this a band's product runs markedly less efficiently than one large
# product on the CPUs and GPUs measured (scripts/bench_optimizers.py), so smaller matrices are
# done in one piece.
BAND_ROWS = 512


def band_edges(n: int, band_rows: int | None = None) -> list[int]:
    """Boundaries of the row bands of an n x n Gram matrix (one band when n < 2 band_rows)."""
    bands = max(1, n // (band_rows or BAND_ROWS))
    return [round(i * n / bands) for i in range(bands + 1)]


def accumulate_lower_gram_(out: torch.Tensor, x: torch.Tensor, alpha: float = 1.0, beta: float = 1.0,
                           band_rows: int | None = None) -> torch.Tensor:
    """out <- beta out + alpha x x^T on the lower band triangle of `out`, in place.

    `x` is (n, m) or a batch (k, n, m) (any strides: a transposed view gives x^T x); `out` is
    (n, n) or (k, n, n). With beta = 0 the old values are ignored (NaN included), as in addmm_.
    """
    edges = band_edges(x.shape[-2], band_rows)
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
