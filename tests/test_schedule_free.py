"""Schedule-Free AdamW against closed forms (float64, tests/closed_forms.py, which the JAX
baseline is checked against too)."""

from __future__ import annotations

import copy

import closed_forms as cf
import numpy as np
import torch

from submissions.schedule_free import pytorch_submission as sf
from submissions.schedule_free.optimizer import AdamWScheduleFree
from workloads import registry
from workloads.cifar.torch_workload import CifarWorkload


def _iterates(shape, steps, seed, **kw):
    """(y, z, x) after each step of the PyTorch optimizer (x None when beta1 = 0: y is then z and
    x cannot be recovered from them), and the gradients."""
    rng = np.random.default_rng(seed)
    p = torch.nn.Parameter(torch.tensor(rng.standard_normal(shape)))
    y0 = p.detach().numpy().copy()
    opt = AdamWScheduleFree([p], **kw)
    out, grads = [], []
    for _ in range(steps):
        g = rng.standard_normal(shape)
        p.grad = torch.tensor(g)
        opt.step()
        out.append((p.detach().numpy().copy(), opt.state[p]["z"].numpy().copy(),
                    opt.x_point(p).numpy() if opt.param_groups[0]["betas"][0] else None))
        grads.append(g)
    return y0, grads, out


def test_is_the_closed_form_with_warmup_and_r():
    kw = dict(lr=0.05, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.02, warmup_steps=4, r=0.75, weight_lr_power=2.0)
    y0, grads, got = _iterates((6,), 9, 3, **kw)
    expected = cf.schedule_free_iterates(y0, grads, 0.05, 0.9, 0.99, 1e-8, 0.02, warmup=4, r=0.75)
    for (y, z, x), (ey, ez, ex) in zip(got, expected):
        np.testing.assert_allclose(y, ey, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(z, ez, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(x, ex, rtol=1e-9, atol=1e-12)


def test_with_beta1_zero_the_z_iterates_are_adamw():
    y0, grads, got = _iterates((6,), 8, 0, lr=0.05, betas=(0.0, 0.99), weight_decay=0.02)
    expected = cf.adamw_iterates(y0, grads, 0.05, 0.0, 0.99, 1e-8, 0.02)
    np.testing.assert_allclose([z for _, z, _ in got], expected, rtol=1e-12, atol=1e-14)


def test_with_r_zero_and_constant_lr_x_is_the_running_mean_of_z():
    torch.manual_seed(1)
    p = torch.nn.Parameter(torch.randn(4, dtype=torch.float64))
    opt = AdamWScheduleFree([p], lr=0.1, betas=(0.9, 0.999), r=0.0, weight_lr_power=2.0, warmup_steps=0)
    zs = []
    for _ in range(7):
        p.grad = torch.randn(4, dtype=torch.float64)
        opt.step()
        zs.append(opt.state[p]["z"].clone().numpy())
        np.testing.assert_allclose(opt.x_point(p).numpy(), np.mean(zs, axis=0), rtol=1e-10, atol=1e-13)


def test_eval_and_train_modes_move_between_x_and_y():
    torch.manual_seed(2)
    p = torch.nn.Parameter(torch.randn(3, dtype=torch.float64))
    opt = AdamWScheduleFree([p], lr=0.1, betas=(0.9, 0.999))
    for _ in range(3):
        p.grad = torch.randn(3, dtype=torch.float64)
        opt.step()
    y, x = p.detach().clone(), opt.x_point(p)
    opt.eval_mode()
    np.testing.assert_allclose(p.detach().numpy(), x.numpy(), rtol=1e-12)
    opt.train_mode()
    np.testing.assert_allclose(p.detach().numpy(), y.numpy(), rtol=1e-12)
    # y = (1 - beta1) z + beta1 x
    np.testing.assert_allclose(y.numpy(), (0.1 * opt.state[p]["z"] + 0.9 * x).numpy(), rtol=1e-12)


def test_builtin_warmup_scales_the_first_steps():
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = AdamWScheduleFree([p], lr=1.0, betas=(0.0, 0.5), warmup_steps=4, eps=0.0)
    p.grad = torch.ones(1, dtype=torch.float64)
    opt.step()
    # Step 1 of 4: lr 1/4, the Adam direction of a first gradient is sign(g) = 1.
    assert opt.state[p]["z"].item() == -0.25


class SmallCifar(CifarWorkload):
    """The cifar workload (synthetic data) with a small convolutional net that has BatchNorm."""

    def build_model(self) -> torch.nn.Module:
        return torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 8, 3, stride=2, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10),
        )


def small_cifar() -> SmallCifar:
    return SmallCifar(registry.get("cifar"), data="synthetic")


def _cifar_run(prepare_between: bool, steps: int = 4) -> tuple[torch.nn.Module, dict]:
    """A few Schedule-Free steps on synthetic cifar, optionally with a prepare_for_eval before the
    last one."""
    workload = small_cifar()
    model, _ = workload.init_model_fn(0)
    state = sf.init_optimizer_state(workload, model, None, None, 0)
    queue = workload.build_input_queue(0, "train", None, 16)
    kwargs = dict(workload=workload, current_param_container=model, current_params_types=None,
                  model_state=None, hyperparameters=None, loss_type=workload.loss_type, eval_results=[], rng=0)
    for step in range(steps):
        if prepare_between and step == steps - 1:
            state, _, _ = sf.prepare_for_eval(**kwargs, optimizer_state=state, global_step=step)
        state, _, _ = sf.update_params(**kwargs, batch=next(queue), optimizer_state=state, global_step=step)
    return model, state


def _batch_norms(model: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def test_prepare_for_eval_puts_x_in_the_model_with_batch_norm_statistics_recomputed_there():
    model, state = _cifar_run(prepare_between=False)
    opt = state["optimizer"]
    x = [opt.x_point(p) for p in model.parameters()]
    # The reference: a copy of the model at x whose BatchNorm statistics are the plain average of
    # the batch statistics over the kept training batches.
    expected = copy.deepcopy(model)
    with torch.no_grad():
        for p, xp in zip(expected.parameters(), x):
            p.copy_(xp)
    for bn in _batch_norms(expected):
        bn.reset_running_stats()
        bn.momentum = None
    expected.train()
    with torch.no_grad():
        for batch in state["recent_batches"]:
            expected(batch["inputs"])
    workload = small_cifar()
    sf.prepare_for_eval(workload=workload, current_param_container=model, current_params_types=None,
                        model_state=None, hyperparameters=None, loss_type=workload.loss_type,
                        optimizer_state=state, eval_results=[], global_step=4, rng=0)
    for p, xp in zip(model.parameters(), x):
        torch.testing.assert_close(p.detach(), xp, rtol=1e-6, atol=1e-7)
    for bn, ref in zip(_batch_norms(model), _batch_norms(expected)):
        torch.testing.assert_close(bn.running_mean, ref.running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bn.running_var, ref.running_var, rtol=1e-5, atol=1e-6)


def test_an_eval_in_between_leaves_the_training_trajectory_unchanged():
    plain, _ = _cifar_run(prepare_between=False)
    with_eval, _ = _cifar_run(prepare_between=True)
    for a, b in zip(plain.state_dict().values(), with_eval.state_dict().values()):
        # x and back to y is a lerp there and back in float32: equal to rounding, not bit for bit.
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
