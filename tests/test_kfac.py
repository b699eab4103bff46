"""K-FAC factors against the exact generalised Gauss-Newton, computed by brute force."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jacrev

from submissions import gram
from submissions.kfac.optimizer import KFAC

DT = torch.float64


def ggn_block(net: nn.Module, x: torch.Tensor, name: str, reduction: str) -> torch.Tensor:
    """J^T H J of the loss sum_n 1/2 ||f_n - y_n||^2 (H = I), for one weight, row-major vec(W)."""
    params = {k: v.detach() for k, v in net.named_parameters()}

    def f(w: torch.Tensor) -> torch.Tensor:
        return functional_call(net, {**params, name: w}, (x,))

    jac = jacrev(f)(params[name]).reshape(-1, params[name].numel())
    g = jac.T @ jac
    return g / x.shape[0] if reduction == "mean" else g


def kfac_blocks(net: nn.Module, x: torch.Tensor, reduction: str = "mean", approximation: str = "expand",
                fisher: str = "type2", channels_last: bool = False) -> dict[str, torch.Tensor]:
    opt = KFAC(net, fisher_type=fisher, factor_decay=0.0, loss_reduction=reduction, approximation=approximation)
    with opt.capture():
        out = net(x)
        # fisher_backward takes the prediction vector in the last dimension.
        opt.fisher_backward(out.movedim(1, -1) if channels_last else out, "mse")
    names = {m: n for n, m in net.named_modules()}
    return {f"{names[m]}.weight": torch.kron(*reversed(opt.factors(m))) for m in opt.layers}


def deep_linear(*sizes: int) -> nn.Sequential:
    return nn.Sequential(*[nn.Linear(a, b, bias=False) for a, b in zip(sizes, sizes[1:])]).to(DT)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("batch", [1, 3, 16])
def test_deep_linear_network_blocks_are_the_exact_ggn(reduction, batch):
    torch.manual_seed(batch)
    net = deep_linear(3, 5, 4, 2)
    x = torch.randn(batch, 3, dtype=DT)
    for name, block in kfac_blocks(net, x, reduction).items():
        torch.testing.assert_close(block, ggn_block(net, x, name, reduction), rtol=1e-10, atol=1e-12)


def test_any_mlp_at_batch_size_one_is_exact():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 6, bias=False), nn.Tanh(), nn.Linear(6, 5, bias=False), nn.ReLU(),
                        nn.Linear(5, 2, bias=False)).to(DT)
    x = torch.randn(1, 3, dtype=DT)
    for name, block in kfac_blocks(net, x).items():
        torch.testing.assert_close(block, ggn_block(net, x, name, "mean"), rtol=1e-10, atol=1e-12)


def test_negative_control_a_nonlinear_net_at_batch_eight_differs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 6, bias=False), nn.Tanh(), nn.Linear(6, 2, bias=False)).to(DT)
    x = torch.randn(8, 3, dtype=DT)
    blocks = kfac_blocks(net, x)
    exact = ggn_block(net, x, "0.weight", "mean")
    assert (blocks["0.weight"] - exact).abs().max() > 1e-3 * exact.abs().max()


def test_expand_is_exact_when_the_loss_is_over_every_shared_position():
    torch.manual_seed(1)
    net = deep_linear(3, 4, 2)
    x = torch.randn(5, 6, 3, dtype=DT)  # 6 positions share the weights; a loss term per position
    for name, block in kfac_blocks(net, x, approximation="expand").items():
        torch.testing.assert_close(block, ggn_block(net, x, name, "mean"), rtol=1e-10, atol=1e-12)


class SumPooled(nn.Module):
    """A deep linear net over positions whose output is summed over them before the loss."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(3, 4, bias=False)
        self.second = nn.Linear(4, 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x)).sum(dim=1)


def test_reduce_is_exact_when_shared_positions_are_pooled_and_expand_is_not():
    torch.manual_seed(2)
    net = SumPooled().to(DT)
    x = torch.randn(5, 6, 3, dtype=DT)
    reduce = kfac_blocks(net, x, approximation="reduce")
    expand = kfac_blocks(net, x, approximation="expand")
    for name, block in reduce.items():
        exact = ggn_block(net, x, name, "mean")
        torch.testing.assert_close(block, exact, rtol=1e-10, atol=1e-12)
        assert (expand[name] - exact).abs().max() > 1e-2 * exact.abs().max()


def test_a_convolution_is_unfolded_into_patches_as_shared_positions():
    torch.manual_seed(3)
    conv = nn.Sequential(nn.Conv2d(2, 3, kernel_size=3, padding=1, stride=2, bias=False)).to(DT)
    x = torch.randn(4, 2, 5, 5, dtype=DT)
    block = kfac_blocks(conv, x, channels_last=True)["0.weight"]
    torch.testing.assert_close(block, ggn_block(conv, x, "0.weight", "mean"), rtol=1e-10, atol=1e-12)


def test_monte_carlo_fisher_estimates_the_exact_one():
    torch.manual_seed(4)
    net = deep_linear(3, 2)
    x = torch.randn(6, 3, dtype=DT)
    exact = kfac_blocks(net, x, fisher="type2")["0.weight"]
    opt = KFAC(net, fisher_type="mc", factor_decay=0.0)
    total = torch.zeros_like(exact)
    samples = 4000
    gen = torch.Generator().manual_seed(0)
    for _ in range(samples):
        with opt.capture():
            out = net(x)
            opt.fisher_backward(out, "mse", generator=gen)
        total += torch.kron(*reversed(opt.factors(net[0])))
    torch.testing.assert_close(total / samples, exact, rtol=0.1, atol=0.05 * exact.abs().max().item())


def test_empirical_fisher_uses_the_true_targets_gradients():
    torch.manual_seed(5)
    net = deep_linear(3, 2)
    x, y = torch.randn(4, 3, dtype=DT), torch.randn(4, 2, dtype=DT)
    opt = KFAC(net, fisher_type="empirical", factor_decay=0.0)
    with opt.capture():
        out = net(x)
        opt.fisher_backward(out, "mse", targets=y)
    residual = (out - y).detach()
    A, B = opt.factors(net[0])
    np.testing.assert_allclose(B.numpy(), (residual.T @ residual / 4).numpy(), rtol=1e-12)
    np.testing.assert_allclose(A.numpy(), (x.T @ x / 4).numpy(), rtol=1e-12)


def test_step_applies_the_pi_damped_kronecker_inverse():
    torch.manual_seed(6)
    layer = nn.Linear(3, 2, bias=False).to(DT)
    net = nn.Sequential(layer)
    lr, damping = 0.5, 0.01
    opt = KFAC(net, lr=lr, damping=damping, momentum=0.0, factor_decay=0.0, inverse_frequency=1, fisher_type="type2")
    x = torch.randn(5, 3, dtype=DT)
    w0 = layer.weight.detach().clone()
    with opt.capture():
        out = net(x)
        opt.fisher_backward(out, "mse")
        (0.5 * (out**2).sum() / 5).backward()
    A, B = opt.factors(layer)
    G = layer.weight.grad.detach().clone()
    opt.step()
    pi = math.sqrt((torch.trace(A) / 3) / (torch.trace(B) / 2))
    Ad = A + pi * math.sqrt(damping) * torch.eye(3, dtype=DT)
    Bd = B + math.sqrt(damping) / pi * torch.eye(2, dtype=DT)
    expected = w0 - lr * torch.linalg.solve(Bd, G) @ torch.linalg.inv(Ad)
    torch.testing.assert_close(layer.weight.detach(), expected, rtol=1e-10, atol=1e-12)


def test_parameters_of_other_layers_get_adam():
    torch.manual_seed(7)
    norm = nn.LayerNorm(3).to(DT)
    net = nn.Sequential(norm, nn.Linear(3, 2).to(DT))
    opt = KFAC(net, lr=0.1)
    assert opt.adam is not None
    assert {id(p) for p in opt.adam.param_groups[0]["params"]} == {id(norm.weight), id(norm.bias)}


def test_bfloat16_inverses_give_the_float64_step_to_bfloat16_precision():
    torch.manual_seed(8)
    x = torch.randn(5, 3, dtype=DT)
    steps = {}
    for dtype in (None, torch.bfloat16):
        torch.manual_seed(9)
        net = nn.Sequential(nn.Linear(3, 4, bias=False).to(DT))
        opt = KFAC(net, lr=0.5, damping=0.01, momentum=0.0, factor_decay=0.0, inverse_frequency=1,
                   fisher_type="type2", preconditioner_dtype=dtype)
        w0 = net[0].weight.detach().clone()
        with opt.capture():
            out = net(x)
            opt.fisher_backward(out, "mse")
            (0.5 * (out**2).sum() / 5).backward()
        opt.step()
        steps[dtype] = net[0].weight.detach() - w0
        assert opt.inverses(net[0])[0].dtype == (dtype or DT) and net[0].weight.dtype == DT
    exact, low = steps[None], steps[torch.bfloat16]
    assert (low - exact).norm() <= 2e-2 * exact.norm()


@pytest.mark.parametrize("fisher", ["empirical", "type2"])
def test_it_is_asdl_kfac_where_the_algorithms_coincide(fisher):
    # ASDL's KfacGradientMaker (pi-damped inverses, factors replaced at every step) followed by
    # plain SGD takes the same steps as ours on layers without bias, for the empirical and the
    # exact Fisher, to float64 rounding.
    import contextlib
    from types import SimpleNamespace

    import asdl.operations.operation
    import asdl.precondition.natural_gradient
    from asdl import KfacGradientMaker, PreconditioningConfig

    for module in (asdl.operations.operation, asdl.precondition.natural_gradient):
        # ASDL labels its phases with CUDA profiler ranges, which a CPU build of torch rejects.
        module.nvtx = SimpleNamespace(range=lambda *args, **kwargs: contextlib.nullcontext())
    torch.manual_seed(10)
    net = nn.Sequential(nn.Linear(4, 5, bias=False), nn.Tanh(), nn.Linear(5, 3, bias=False)).to(DT)
    reference = copy.deepcopy(net)
    lr, damping, n = 0.1, 1e-2, 8
    opt = KFAC(net, lr=lr, damping=damping, momentum=0.0, factor_decay=0.0, inverse_frequency=1, fisher_type=fisher)
    config = PreconditioningConfig(damping=damping, ema_decay=1.0, data_size=n, curvature_upd_interval=1,
                                   preconditioner_upd_interval=1)
    maker = KfacGradientMaker(reference, config, fisher_type={"empirical": "fisher_emp", "type2": "fisher_exact"}[fisher],
                              loss_type="cross_entropy")
    sgd = torch.optim.SGD(reference.parameters(), lr=lr)
    for _ in range(3):
        x, y = torch.randn(n, 4, dtype=DT), torch.randint(0, 3, (n,))
        opt.zero_grad()
        with opt.capture():
            out = net(x)
            if fisher != "empirical":
                opt.fisher_backward(out, "softmax_cross_entropy")
            F.cross_entropy(out, y).backward()
        opt.step()
        sgd.zero_grad()
        maker.setup_loss_call(F.cross_entropy, maker.setup_model_call(reference, x), y)
        maker.forward_and_backward()
        sgd.step()
        for ours, theirs in zip(net.parameters(), reference.parameters()):
            torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)


def test_a_bias_is_a_last_input_of_ones_in_every_band(monkeypatch):
    # A = mean over examples and patches of [a; 1][a; 1]^T; statistics split into one-row bands.
    monkeypatch.setattr(gram, "BANDS", 10**6)
    monkeypatch.setattr(gram, "MIN_BAND_ROWS", 1)
    torch.manual_seed(11)
    conv = nn.Conv2d(2, 3, kernel_size=2, stride=1, bias=True).to(DT)
    x = torch.randn(3, 2, 4, 4, dtype=DT)
    opt = KFAC(nn.Sequential(conv), fisher_type="type2", factor_decay=0.0)
    with opt.capture():
        out = conv(x)
        opt.fisher_backward(out.movedim(1, -1), "mse")
    patches = F.unfold(x, 2).transpose(1, 2).reshape(-1, 8)  # (N R, C kh kw)
    a = torch.cat([patches, torch.ones(len(patches), 1, dtype=DT)], 1)
    A, B = opt.factors(conv)
    torch.testing.assert_close(A, a.T @ a / len(a), rtol=1e-12, atol=1e-14)
    # mse type-2 output gradients are the unit vectors: B = R I (a loss term per position).
    torch.testing.assert_close(B, 9.0 * torch.eye(3, dtype=DT), rtol=1e-12, atol=1e-14)


def test_layers_of_one_shape_are_preconditioned_together_with_their_own_factors():
    # Two 3 x 3 layers share a stack; each step must still be its own momentum on B^-1 G A^-1.
    torch.manual_seed(12)
    net = nn.Sequential(nn.Linear(3, 3, bias=False), nn.Tanh(), nn.Linear(3, 3, bias=False), nn.Tanh(),
                        nn.Linear(3, 2, bias=False)).to(DT)
    lr, mu, damping = 0.1, 0.5, 0.01
    opt = KFAC(net, lr=lr, damping=damping, momentum=mu, factor_decay=0.0, inverse_frequency=1, fisher_type="type2")
    assert sorted(len(s.layers) for s in opt.stacks) == [1, 2]
    buffers = {m: torch.zeros_like(m.weight) for m in opt.layers}
    for _ in range(2):
        x = torch.randn(6, 3, dtype=DT)
        opt.zero_grad()
        with opt.capture():
            out = net(x)
            opt.fisher_backward(out, "mse")
            (0.5 * (out**2).sum() / 6).backward()
        expected = {}
        for m in opt.layers:
            A, B = opt.factors(m)
            pi = math.sqrt((torch.trace(A) / len(A)) / (torch.trace(B) / len(B)))
            Ad = A + pi * math.sqrt(damping) * torch.eye(len(A), dtype=DT)
            Bd = B + math.sqrt(damping) / pi * torch.eye(len(B), dtype=DT)
            buffers[m] = mu * buffers[m] + torch.linalg.solve(Bd, m.weight.grad) @ torch.linalg.inv(Ad)
            expected[m] = m.weight.detach() - lr * buffers[m]
        opt.step()
        for m in opt.layers:
            torch.testing.assert_close(m.weight.detach(), expected[m], rtol=1e-10, atol=1e-12)


def test_a_factor_that_is_not_positive_definite_keeps_the_previous_inverse():
    torch.manual_seed(13)
    net = nn.Sequential(nn.Linear(3, 2, bias=False)).to(DT)
    opt = KFAC(net, damping=0.01, factor_decay=0.0, inverse_frequency=1, fisher_type="type2")
    with opt.capture():
        opt.fisher_backward(net(torch.randn(4, 3, dtype=DT)), "mse")
    opt._update_inverses(0.01)
    before = opt.inverses(net[0])[0].clone()
    opt.A[net[0]].fill_(float("nan"))
    opt._update_inverses(0.01)  # no exception, no host sync on the result
    a_inv, b_inv = opt.inverses(net[0])
    torch.testing.assert_close(a_inv, before, rtol=0, atol=0)
    assert torch.isfinite(b_inv).all()  # B itself is fine (its damping falls back to pi = 1)
