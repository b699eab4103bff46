"""Shampoo against closed forms in plain numpy (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from submissions import gram
from submissions.shampoo.optimizer import Shampoo, block_slices

EPS = 1e-3
LR = 0.1


def inv_root(a: np.ndarray, p: int) -> np.ndarray:
    w, v = np.linalg.eigh(a)
    return (v * w ** (-1.0 / p)) @ v.T


def run(shape, steps, seed=0, **kw):
    """Parameter updates (new - old) of Shampoo and the gradients that produced them."""
    torch.manual_seed(seed)
    w = torch.nn.Parameter(torch.randn(*shape, dtype=torch.float64))
    opt = Shampoo([w], lr=LR, epsilon=EPS, inverse_root_dtype=torch.float64, **kw)
    updates, grads = [], []
    for _ in range(steps):
        g = torch.randn(*shape, dtype=torch.float64)
        w.grad = g.clone()
        before = w.detach().clone()
        opt.step()
        updates.append((w.detach() - before).numpy())
        grads.append(g.numpy())
    return updates, grads


def test_sum_form_without_grafting_is_the_closed_form():
    updates, grads = run((4, 3), 4, betas=(0.0, 1.0), grafting="none", precondition_frequency=1)
    L, R = np.zeros((4, 4)), np.zeros((3, 3))
    for du, g in zip(updates, grads):
        L += g @ g.T
        R += g.T @ g
        expected = -LR * inv_root(L + EPS * np.eye(4), 4) @ g @ inv_root(R + EPS * np.eye(3), 4)
        np.testing.assert_allclose(du, expected, rtol=1e-9, atol=1e-13)


def test_ema_form_with_bias_correction_is_the_closed_form():
    beta2 = 0.9
    updates, grads = run((3, 5), 4, betas=(0.0, beta2), grafting="none", precondition_frequency=1)
    L, R = np.zeros((3, 3)), np.zeros((5, 5))
    for t, (du, g) in enumerate(zip(updates, grads), start=1):
        L = beta2 * L + (1 - beta2) * g @ g.T
        R = beta2 * R + (1 - beta2) * g.T @ g
        c = 1 - beta2**t
        expected = -LR * inv_root(L / c + EPS * np.eye(3), 4) @ g @ inv_root(R / c + EPS * np.eye(5), 4)
        np.testing.assert_allclose(du, expected, rtol=1e-9, atol=1e-13)


def test_adam_grafting_gives_each_block_the_adam_norm():
    b2 = 0.99
    updates, grads = run((6, 5), 3, betas=(0.0, 0.95), grafting="adam", grafting_beta2=b2,
                         grafting_epsilon=1e-8, precondition_frequency=1, max_preconditioner_dim=4)
    v = np.zeros((6, 5))
    for t, (du, g) in enumerate(zip(updates, grads), start=1):
        v = b2 * v + (1 - b2) * g**2
        adam = g / (np.sqrt(v / (1 - b2**t)) + 1e-8)
        for rs, cs in block_slices(6, 5, 4):
            assert np.linalg.norm(du[rs, cs]) == pytest.approx(LR * np.linalg.norm(adam[rs, cs]), rel=1e-9)


def test_before_preconditioning_starts_it_is_adam():
    torch.manual_seed(1)
    w = torch.nn.Parameter(torch.randn(4, 6, dtype=torch.float64))
    w_adam = torch.nn.Parameter(w.detach().clone())
    shampoo = Shampoo([w], lr=LR, betas=(0.9, 0.999), grafting="adam", grafting_beta2=0.999,
                      grafting_epsilon=1e-8, start_preconditioning_step=10**9)
    adam = torch.optim.Adam([w_adam], lr=LR, betas=(0.9, 0.999), eps=1e-8)
    for _ in range(6):
        g = torch.randn(4, 6, dtype=torch.float64)
        w.grad, w_adam.grad = g.clone(), g.clone()
        shampoo.step()
        adam.step()
    np.testing.assert_allclose(w.detach().numpy(), w_adam.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_a_large_parameter_is_preconditioned_per_block():
    updates, grads = run((5, 7), 2, betas=(0.0, 1.0), grafting="none", precondition_frequency=1,
                         max_preconditioner_dim=3)
    blocks = block_slices(5, 7, 3)
    assert len(blocks) == 2 * 3
    stats = {i: (np.zeros((rs.stop - rs.start,) * 2), np.zeros((cs.stop - cs.start,) * 2))
             for i, (rs, cs) in enumerate(blocks)}
    for du, g in zip(updates, grads):
        for i, (rs, cs) in enumerate(blocks):
            gb = g[rs, cs]
            L, R = stats[i]
            L += gb @ gb.T
            R += gb.T @ gb
            expected = -LR * inv_root(L + EPS * np.eye(len(L)), 4) @ gb @ inv_root(R + EPS * np.eye(len(R)), 4)
            np.testing.assert_allclose(du[rs, cs], expected, rtol=1e-9, atol=1e-13)


def test_a_convolution_kernel_is_preconditioned_as_out_by_fan_in():
    updates, grads = run((2, 3, 2, 2), 1, betas=(0.0, 1.0), grafting="none", precondition_frequency=1)
    g = grads[0].reshape(2, 12)
    expected = -LR * inv_root(g @ g.T + EPS * np.eye(2), 4) @ g @ inv_root(g.T @ g + EPS * np.eye(12), 4)
    np.testing.assert_allclose(updates[0].reshape(2, 12), expected, rtol=1e-9, atol=1e-12)


def test_vectors_are_left_to_the_grafting_optimizer():
    torch.manual_seed(2)
    b = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    b_adam = torch.nn.Parameter(b.detach().clone())
    shampoo = Shampoo([b], lr=LR, betas=(0.9, 0.99), grafting="adam", grafting_beta2=0.99, grafting_epsilon=1e-8)
    adam = torch.optim.Adam([b_adam], lr=LR, betas=(0.9, 0.99), eps=1e-8)
    for _ in range(3):
        g = torch.randn(5, dtype=torch.float64)
        b.grad, b_adam.grad = g.clone(), g.clone()
        shampoo.step()
        adam.step()
    np.testing.assert_allclose(b.detach().numpy(), b_adam.detach().numpy(), rtol=1e-12)
    assert "L" not in shampoo.state[b]


def test_nesterov_and_decoupled_weight_decay():
    # beta1 = 0.5, SGD grafting, no preconditioning yet: a Nesterov-filtered SGD with decoupled decay.
    torch.manual_seed(3)
    w = torch.nn.Parameter(torch.randn(3, 3, dtype=torch.float64))
    w0 = w.detach().numpy().copy()
    opt = Shampoo([w], lr=LR, betas=(0.5, 1.0), grafting="sgd", nesterov=True, weight_decay=0.1,
                  start_preconditioning_step=10**9)
    m = np.zeros((3, 3))
    x = w0
    for t in range(1, 4):
        g = torch.randn(3, 3, dtype=torch.float64)
        w.grad = g.clone()
        opt.step()
        gn = g.numpy()
        m = 0.5 * m + 0.5 * gn
        d = (0.5 * m + 0.5 * gn) / (1 - 0.5**t)
        x = x * (1 - LR * 0.1) - LR * d
    np.testing.assert_allclose(w.detach().numpy(), x, rtol=1e-12)


def test_bfloat16_roots_give_the_closed_form_to_bfloat16_precision():
    updates, grads = run((6, 4), 2, betas=(0.0, 1.0), grafting="none", precondition_frequency=1,
                         preconditioner_dtype=torch.bfloat16)
    L = sum(g @ g.T for g in grads)
    R = sum(g.T @ g for g in grads)
    g = grads[-1]
    expected = -LR * inv_root(L + EPS * np.eye(6), 4) @ g @ inv_root(R + EPS * np.eye(4), 4)
    # bfloat16 keeps 8 bits of mantissa: each of the two products is good to about 2^-8.
    assert np.linalg.norm(updates[-1] - expected) <= 2e-2 * np.linalg.norm(expected)
    assert updates[-1].dtype == np.float64


def test_a_restored_state_dict_continues_the_run_exactly():
    torch.manual_seed(4)
    grads = [torch.randn(4, 3, dtype=torch.float64) for _ in range(4)]
    kw = dict(lr=LR, betas=(0.9, 0.99), epsilon=EPS, precondition_frequency=2, inverse_root_dtype=torch.float64)
    w = torch.nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
    w2 = torch.nn.Parameter(w.detach().clone())
    straight = Shampoo([w], **kw)
    for g in grads:
        w.grad = g.clone()
        straight.step()
    first = Shampoo([w2], **kw)
    for g in grads[:2]:
        w2.grad = g.clone()
        first.step()
    resumed = Shampoo([w2], **kw)
    resumed.load_state_dict(first.state_dict())
    for g in grads[2:]:
        w2.grad = g.clone()
        resumed.step()
    np.testing.assert_allclose(w2.detach().numpy(), w.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_blocks_of_every_shape_and_memory_format_are_each_the_closed_form(monkeypatch):
    # Several parameters, blocks of 3: full blocks, right and bottom edges and a corner, one
    # shape shared by two parameters, a channels_last kernel; statistics split into bands of
    # one row (every band pair a separate product) must still give each block's closed form.
    monkeypatch.setattr(gram, "BANDS", 10**6)
    monkeypatch.setattr(gram, "MIN_BAND_ROWS", 1)
    torch.manual_seed(5)
    shapes = [(5, 7), (3, 3), (2, 3, 2, 2), (4,)]
    params = [torch.nn.Parameter(torch.randn(*s, dtype=torch.float64)) for s in shapes]
    params[2] = torch.nn.Parameter(params[2].detach().to(memory_format=torch.channels_last))
    opt = Shampoo(params, lr=LR, epsilon=EPS, betas=(0.0, 1.0), grafting="none", precondition_frequency=1,
                  max_preconditioner_dim=3, inverse_root_dtype=torch.float64)
    stats: dict = {}
    for _ in range(3):
        grads = [torch.randn(*s, dtype=torch.float64) for s in shapes]
        before = [p.detach().clone() for p in params]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        for k, (p, g, b) in enumerate(zip(params[:3], grads[:3], before[:3])):
            gm, du = g.reshape(g.shape[0], -1).numpy(), (p.detach() - b).reshape(g.shape[0], -1).numpy()
            for rs, cs in block_slices(*gm.shape, 3):
                gb = gm[rs, cs]
                L, R = stats.setdefault((k, rs.start, cs.start), [0.0, 0.0])
                L, R = L + gb @ gb.T, R + gb.T @ gb
                stats[(k, rs.start, cs.start)] = [L, R]
                expected = -LR * inv_root(L + EPS * np.eye(len(gb)), 4) @ gb @ inv_root(R + EPS * np.eye(gb.shape[1]), 4)
                np.testing.assert_allclose(du[rs, cs], expected, rtol=1e-9, atol=1e-13)
    assert params[2].is_contiguous(memory_format=torch.channels_last)


def test_a_parameter_without_a_gradient_takes_a_zero_gradient_step():
    torch.manual_seed(6)
    a = torch.nn.Parameter(torch.randn(3, 4, dtype=torch.float64))
    b = torch.nn.Parameter(torch.randn(4, 2, dtype=torch.float64))
    opt = Shampoo([a, b], lr=LR, epsilon=EPS, betas=(0.0, 1.0), grafting="none", precondition_frequency=1)
    a.grad, b.grad = torch.randn_like(a), torch.randn_like(b)
    opt.step()
    b_before = b.detach().clone()
    a.grad, b.grad = torch.randn_like(a), None
    opt.step()
    torch.testing.assert_close(b.detach(), b_before, rtol=0, atol=0)


def test_it_is_pytorch_optimizers_shampoo_where_the_algorithms_coincide():
    # Sum-form statistics started at eps I, exact -1/4 roots recomputed every step (an SVD of a
    # PSD matrix is its eigendecomposition), no momentum, no grafting, one block: pytorch-optimizer's
    # Shampoo takes the same steps as ours.
    from pytorch_optimizer import Shampoo as Reference

    for shape in ((4, 3), (3, 5)):
        torch.manual_seed(7)
        ours = torch.nn.Parameter(torch.randn(*shape, dtype=torch.float64))
        theirs = torch.nn.Parameter(ours.detach().clone())
        opt = Shampoo([ours], lr=LR, betas=(0.0, 1.0), epsilon=EPS, grafting="none", precondition_frequency=1,
                      inverse_root_dtype=torch.float64)
        ref = Reference([theirs], lr=LR, momentum=0.0, preconditioning_compute_steps=1, matrix_eps=EPS)
        for _ in range(4):
            g = torch.randn(*shape, dtype=torch.float64)
            ours.grad, theirs.grad = g.clone(), g.clone()
            opt.step()
            ref.step()
            np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=1e-10, atol=1e-12)
