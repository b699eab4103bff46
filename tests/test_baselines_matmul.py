"""The convolution route of the baselines' matrix products (submissions/matmul.py) against numpy."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from submissions import matmul
from submissions.gram import accumulate_lower_gram_
from submissions.kfac.optimizer import KFAC
from submissions.shampoo.optimizer import Shampoo

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


def convolutions(fn) -> int:
    """How many oneDNN convolutions `fn` ran."""
    with profile(activities=[ProfilerActivity.CPU]) as p:
        fn()
    return sum(e.count for e in p.key_averages() if e.key == "aten::mkldnn_convolution")


def close(actual: torch.Tensor, expected: np.ndarray, scale: float) -> None:
    np.testing.assert_allclose(actual.double().numpy(), expected, rtol=0, atol=2e-6 * scale)


def test_linear_of_enough_rows_is_a_convolution_with_the_same_product():
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(512, 300, generator=g), torch.randn(200, 300, generator=g)
    assert convolutions(lambda: matmul.linear(x, w)) == 1
    close(matmul.linear(x, w), x.double().numpy() @ w.double().numpy().T, scale=300**0.5 * 4)


def test_rows_beyond_a_multiple_of_the_batch_are_a_plain_product_appended():
    x, w = torch.randn(4609, 40), torch.randn(24, 40)  # a K-FAC factor with its bias row
    assert convolutions(lambda: matmul.linear(x, w)) == 1
    close(matmul.linear(x, w), x.double().numpy() @ w.double().numpy().T, scale=40**0.5 * 4)


@pytest.mark.parametrize("rows, dtype", [(128, torch.float32), (512, torch.float64)])
def test_linear_elsewhere_is_a_plain_product(rows, dtype):
    x, w = torch.randn(rows, 64, dtype=dtype), torch.randn(32, 64, dtype=dtype)
    assert convolutions(lambda: matmul.linear(x, w)) == 0
    close(matmul.linear(x, w), x.double().numpy() @ w.double().numpy().T, scale=8 * 4)


def test_the_route_can_be_turned_off(monkeypatch):
    x = torch.randn(512, 64)
    monkeypatch.setattr(matmul, "ENABLED", False)
    assert convolutions(lambda: matmul.linear(x, x)) == 0


def symmetric(k: int, n: int, g: torch.Generator) -> torch.Tensor:
    a = torch.randn(k, n, n, generator=g) / n**0.5
    return a @ a.transpose(1, 2)


@pytest.mark.parametrize("r, c", [(512, 256), (64, 512), (256, 272)])
def test_sandwich_is_left_middle_right(r, c):
    g = torch.Generator().manual_seed(1)
    left, right, middle = symmetric(3, r, g), symmetric(3, c, g), torch.randn(3, r, c, generator=g)
    assert convolutions(lambda: matmul.sandwich(left, middle, right)) > 0
    expected = left.double().numpy() @ middle.double().numpy() @ right.double().numpy()
    close(matmul.sandwich(left, middle, right), expected, scale=np.abs(expected).max() * 30)


def test_band_edges_are_multiples_of_the_batch_and_cover_the_rows():
    assert matmul.band_edges(1024) == [0, 512, 1024]
    assert matmul.band_edges(576) == [0, 576]
    assert matmul.band_edges(1100) == [0, 544, 1100]  # the last band takes the rows past 16's multiples
    edges = matmul.band_edges(4608)
    assert edges[0] == 0 and edges[-1] == 4608 and len(edges) == 10
    assert all((b - a) % matmul.CONV_BATCH == 0 and b - a >= 2 * matmul.MIN_ROWS for a, b in zip(edges, edges[1:]))


def band_triangle(n: int, rows: int) -> np.ndarray:
    """The entries of an n x n Gram matrix computed in bands of `rows` rows: each band's diagonal
    block and all left of it."""
    lower = np.zeros((n, n), dtype=bool)
    for lo in range(0, n, rows):
        lower[lo : lo + rows, : lo + rows] = True
    return lower


@pytest.mark.parametrize("alpha, beta", [(0.05, 0.95), (1.0, 1.0), (0.5, 0.0), (2.0, 0.5)])
def test_gram_by_convolution_updates_the_lower_band_triangle(alpha, beta):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 300, 1024, generator=g).transpose(1, 2)  # x^T x of a (300 x 1024) block, as Shampoo's R
    out = torch.randn(2, 1024, 1024, generator=g)
    if beta == 0.0:
        out[:, 5, 3] = float("nan")  # ignored, as addmm_ with beta = 0 does
    before = out.double().numpy().copy()
    assert convolutions(lambda: accumulate_lower_gram_(out, x, alpha=alpha, beta=beta)) == 2 * 2  # 2 blocks x 2 bands
    xd = x.double().numpy()
    expected = beta * np.nan_to_num(before) + alpha * xd @ xd.transpose(0, 2, 1)
    lower = band_triangle(1024, 512)
    close(out[:, lower], expected[:, lower], scale=300 * 4 * alpha)
    np.testing.assert_array_equal(out.double().numpy()[:, ~lower], before[:, ~lower])  # never written


def test_gram_products_alone_can_leave_the_route(monkeypatch):
    """GRAM_ROUTE = False: Gram products take gram.py's plain bands (four of 256 rows here), the
    same lower triangle; other products keep the route."""
    g = torch.Generator().manual_seed(3)
    x, out = torch.randn(1024, 300, generator=g), torch.zeros(1024, 1024)
    monkeypatch.setattr(matmul, "GRAM_ROUTE", False)
    assert convolutions(lambda: accumulate_lower_gram_(out, x, alpha=0.5, beta=0.0)) == 0
    assert convolutions(lambda: matmul.linear(x, x)) == 1
    xd = x.double().numpy()
    expected = 0.5 * xd @ xd.T
    lower = band_triangle(1024, 256)
    close(out[lower], expected[lower], scale=300 * 4 * 0.5)
    assert out.double().numpy()[~lower].max() == 0.0  # the upper band triangle never written


def steps(make_optimizer, model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    optimizer = make_optimizer(model)
    for x, y in batches:
        optimizer.zero_grad()
        with optimizer.capture() if isinstance(optimizer, KFAC) else contextlib.nullcontext():
            # K-FAC's empirical Fisher: its factors from this backward pass's output gradients
            nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", ["shampoo", "kfac"])
def test_baselines_are_as_accurate_either_route(name, monkeypatch):
    """Float32 layers large enough for the route (512 x 512 and 256 x 512 blocks), five steps with the roots or
    inverses recomputed twice: the parameters' distance to the same steps in float64 (where the
    route is never taken) is no larger by the route than by the plain products, up to 1.5x or
    ten float32 epsilons of the steps' size (the route sums in another order).
    (Shampoo's float32 steps are about 1% from float64 either way: eps = 1e-8 under a -1/4 root
    amplifies the rounding of the statistics' near-null directions; K-FAC's about 2e-6.)"""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(512, 512), nn.Tanh(), nn.Linear(512, 256), nn.Tanh(), nn.Linear(256, 16))
    batches = [(torch.randn(256, 512), torch.randint(0, 16, (256,))) for _ in range(5)]
    if name == "shampoo":
        def make(m):
            return Shampoo(m.parameters(), lr=1e-2, precondition_frequency=2, epsilon=1e-8, grafting="adam")
    else:
        def make(m):
            return KFAC(m, lr=1e-2, damping=1e-3, inverse_frequency=2, fisher_type="empirical")
    start = [p.detach().clone() for p in model.parameters()]

    def run(dtype: torch.dtype, route: bool) -> list[torch.Tensor]:
        monkeypatch.setattr(matmul, "ENABLED", route)
        model.to(dtype)
        with torch.no_grad():
            for p, p0 in zip(model.parameters(), start):
                p.copy_(p0)
        return [p.double() for p in steps(make, model, [(x.to(dtype), y) for x, y in batches])]

    exact, by_route, plain = run(torch.float64, False), run(torch.float32, True), run(torch.float32, False)
    assert any((r - p).abs().max() > 0 for r, p in zip(by_route, plain))  # the route was taken
    # One distance over all parameters: a 16-entry bias alone is a handful of roundings, whose
    # ratio between two summation orders varies with the machine's thread count.
    exact, by_route, plain, start = (torch.cat([t.flatten().double() for t in ts])
                                     for ts in (exact, by_route, plain, start))
    rounding = 10 * torch.finfo(torch.float32).eps * (exact - start).norm()
    assert (by_route - exact).norm() <= 1.5 * (plain - exact).norm() + rounding
