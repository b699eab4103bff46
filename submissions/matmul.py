"""Matrix products of the second-order baselines, on CPUs through oneDNN's convolution kernels.

A product x @ w^T (x: p x n, w: m x n) is a 1 x 1 convolution: the p rows of x are pixels with n
channels (a channels-last image batch, which is x's memory as it is), w is m filters of n
channels, and the output's channels-last memory is the p x m product. Same arithmetic, same FLOPs
(torch.utils.flop_counter counts 2 p n m for both), float32 rounding in another order.

Why: on the 2-core AVX-512 CPU the benchmarks run on (an AMD EPYC), torch's float32 matmul (MKL's
sgemm) ran at about 100 GFLOP/s on one thread, and the same product as a 1 x 1 convolution on a
batch of CONV_BATCH images at 140-218 GFLOP/s, for rows from MIN_ROWS up; with fewer rows, or
batches of 1-8 images, oneDNN falls back to a GEMM and the rate to MKL's (measured by
`scripts/bench_optimizers.py --matmul`; record in docs/benchmarks/bench_optimizers.txt). The
convolution route is taken only where it was measured to pay: float32 tensors on the CPU, with
oneDNN available, and at least MIN_ROWS rows. Everything else (CUDA, bfloat16, float64, small
blocks) is torch.mm / torch.bmm as before.

On a Zen 4 EPYC (AVX-512 on 256-bit units) the route ran at the matmul's rate (`--matmul`:
conv_matmul_speedup=0.975); whole cycles there took 3% longer with it for Shampoo and 7% less for
K-FAC than with plain products (same record). It stays on: a submission may not choose by
timing the machine (`algoperf check` refuses reading the clock), and neither route wins both there.

`ENABLED = False` (this module's attribute) turns the route off (benchmarks time both; results
differ only in the rounding of float32 sums); `GRAM_ROUTE = False` only for Gram products, which
then take submissions/gram.py's plain bands. On the Zen 4 those ran 20-24% faster than the route's
at the transformer's shapes, and whole transformer cycles took 4% (Shampoo) and 0.5% (K-FAC) less
(`bench_optimizers.py --before <this checkout> --before-route gram-off`); on the Zen 5 the route's
products ran at about twice the plain ones' rate, so Gram products keep the route too. Neither is
an environment variable: a submission reads none that could steer it differently from run to run
(`algoperf check`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CONV_BATCH = 16
MIN_ROWS = 256
ENABLED = True
GRAM_ROUTE = True


def conv_route(t: torch.Tensor) -> bool:
    """Whether products of this tensor's dtype and device may go through the convolution route."""
    return (t.device.type == "cpu" and t.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and ENABLED)


def rows_fit(rows: int) -> bool:
    return rows >= MIN_ROWS


def linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x @ w^T for 2-D x (p x n) and w (m x n): a p x m tensor. On the convolution route (both
    operands contiguous) the first multiple of CONV_BATCH rows are a convolution and the few
    left over (a K-FAC factor's bias row) a plain product; F.linear otherwise."""
    p, n = x.shape
    if not (conv_route(x) and rows_fit(p) and x.is_contiguous() and w.is_contiguous()):
        return F.linear(x, w)
    m, q = w.shape[0], p - p % CONV_BATCH
    images = x[:q].view(CONV_BATCH, q // CONV_BATCH, 1, n).permute(0, 3, 1, 2)  # channels-last view
    out = F.conv2d(images, w.view(m, n, 1, 1)).permute(0, 2, 3, 1).reshape(q, m)
    return out if q == p else torch.cat([out, F.linear(x[q:], w)])


def sandwich(left: torch.Tensor, middle: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """left[i] @ middle[i] @ right[i] for stacks of symmetric `left` (k, r, r) and `right` (k, c, c)
    and a contiguous `middle` (k, r, c), in a new (k, r, c) tensor.

    On the convolution route, per block: T = right M^T = linear(right, M) (c x r, contiguous), then
    left T^T = linear(left, T) = left M right, with no transposed copies (left and right are
    symmetric). Otherwise two batched products."""
    k, r, c = middle.shape
    if not (conv_route(middle) and (rows_fit(r) or rows_fit(c)) and middle.is_contiguous()
            and left.is_contiguous() and right.is_contiguous()):
        return torch.bmm(torch.bmm(left, middle), right)
    out = torch.empty_like(middle)
    for i in range(k):
        out[i] = linear(left[i], linear(right[i], middle[i]))
    return out


def band_edges(n: int, min_rows: int = 2 * MIN_ROWS) -> list[int]:
    """Row bands of an n x n Gram matrix on the convolution route: as many as keep each band at
    least `min_rows` rows (2 MIN_ROWS), starting at multiples of CONV_BATCH (one band when n has no
    such split). k bands do (k + 1) / 2k of the full product's arithmetic. Bands of MIN_ROWS rows
    did less arithmetic but took the same whole Shampoo cycle on the Zen 5 machine (step ratio
    1.556 with these, 1.557 with those) and the same time on the Zen 4 one (`--gram`: 0.87 and
    0.88 of the full products'), so the bands stay at the faster rate per FLOP
    (docs/benchmarks/bench_optimizers.txt)."""
    bands = max(1, n // min_rows)
    edges = [CONV_BATCH * round(i * n / bands / CONV_BATCH) for i in range(bands)] + [n]
    return edges if all(rows_fit(b - a) and b - a >= min_rows for a, b in zip(edges, edges[1:])) else [0, n]


def accumulate(out: torch.Tensor, product: torch.Tensor, alpha: float, beta: float) -> None:
    """out <- beta out + alpha product, in place (beta = 0 ignores out's old values, NaN included)."""
    if beta == 0.0:
        torch.mul(product, alpha, out=out)
    elif beta == 1.0:
        out.add_(product, alpha=alpha)
    elif abs(alpha + beta - 1.0) < 1e-12:
        out.lerp_(product, alpha)
    else:
        out.mul_(beta).add_(product, alpha=alpha)


def accumulate_lower_gram_conv_(out: torch.Tensor, x: torch.Tensor, alpha: float, beta: float,
                                min_rows: int = 2 * MIN_ROWS) -> bool:
    """out <- beta out + alpha x x^T on the lower band triangle of `out`, by the convolution route;
    False (nothing done) when the route does not apply. `x` is (n, m) or (k, n, m), any strides
    (a transposed block is copied contiguous once); bands of at least `min_rows` rows."""
    n = x.shape[-2]
    if not (GRAM_ROUTE and conv_route(x) and rows_fit(n)):
        return False
    blocks = [(out, x)] if x.dim() == 2 else list(zip(out.unbind(0), x.unbind(0)))
    edges = band_edges(n, min_rows)
    for o, xi in blocks:
        xi = xi.contiguous()
        for lo, hi in zip(edges, edges[1:]):
            accumulate(o[lo:hi, :hi], linear(xi[lo:hi], xi[:hi]), alpha, beta)
    return True
