"""K-FAC for Linear, Conv1d and Conv2d layers, Adam for every other parameter.

Martens & Grosse 2015 (K-FAC), Grosse & Martens 2016 (KFC for convolutions), Eschenhagen et al.
2023 (K-FAC-expand and K-FAC-reduce for layers with weight sharing).

For a layer s = W a (W: out x in, a bias as a column of W on an input of ones), each example n
and weight-sharing position r (sequence position, convolution patch) give an input a_nr and a
per-example output gradient g_nr (the gradient of that example's loss, or of a loss whose
targets are sampled from / spanned by the model's predictive distribution: the Fisher type).
With N examples and R positions:

    expand:  A = 1/(N R) sum_{n,r} a_nr a_nr^T          B = 1/N sum_{n,r} g_nr g_nr^T
    reduce:  A = 1/N sum_n abar_n abar_n^T (abar = mean_r a)   B = 1/N sum_n gsum_n gsum_n^T (gsum = sum_r g)

and the curvature of the *mean* loss over the batch is approximated by B (x) A: the Kronecker
order of PyTorch's row-major flattening of W (vec(W)[o * in + i]). For a loss that *sums* over
the batch (`loss_reduction='sum'`), B is scaled by N. Factors are EMAs (`factor_decay`); every
`inverse_frequency` steps the damped inverses are recomputed with the pi-split of the damping
lambda (Martens & Grosse 2015, sec. 6.3): A + pi sqrt(lambda) I and B + sqrt(lambda)/pi I,
pi = sqrt((tr A / dim A) / (tr B / dim B)), in one batched call per shape, and stored in
`preconditioner_dtype` (default: the factors'; bfloat16 halves the cost of applying them where
there are bf16 matrix units). The update is momentum on B^-1 G A^-1 with
decoupled weight decay.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

FISHER_TYPES = ("empirical", "mc", "type2")
APPROXIMATIONS = ("expand", "reduce")
LOSSES = ("softmax_cross_entropy", "sigmoid_cross_entropy", "mse")


def _inputs_and_grads(module: nn.Module, a: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, R, in) inputs, bias column included, and (N, R, out) output gradients of one layer."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        if isinstance(module, nn.Conv1d):  # a Conv1d is a Conv2d of height 1
            a = a.unsqueeze(2)
            size, dil, pad, stride = ((1, *module.kernel_size), (1, *module.dilation), (0, *module.padding),
                                      (1, *module.stride))
        else:
            size, dil, pad, stride = module.kernel_size, module.dilation, module.padding, module.stride  # type: ignore[assignment]
        patches = F.unfold(a, size, dilation=dil, padding=pad, stride=stride)  # (N, C*kh*kw, R)
        a3 = patches.transpose(1, 2)
        g3 = g.flatten(2).transpose(1, 2)  # (N, R, out)
    else:
        a3 = a.reshape(a.shape[0], -1, a.shape[-1])
        g3 = g.reshape(g.shape[0], -1, g.shape[-1])
    if module.bias is not None:
        a3 = torch.cat([a3, torch.ones_like(a3[..., :1])], dim=-1)
    return a3, g3


def kronecker_factors(a3: torch.Tensor, g3: torch.Tensor, approximation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) of one batch for the mean loss (see the module docstring)."""
    n, r = a3.shape[0], a3.shape[1]
    if approximation == "expand":
        a2 = a3.reshape(n * r, -1)
        g2 = g3.reshape(n * r, -1)
        return a2.T @ a2 / (n * r), g2.T @ g2 / n
    abar = a3.mean(dim=1)
    gsum = g3.sum(dim=1)
    return abar.T @ abar / n, gsum.T @ gsum / n


class KFAC(torch.optim.Optimizer):
    def __init__(
        self,
        model: nn.Module,
        lr: float = 1e-3,
        damping: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        factor_decay: float = 0.95,
        inverse_frequency: int = 50,
        fisher_type: str = "mc",
        approximation: str = "expand",
        loss_reduction: str = "mean",
        adam_betas: tuple[float, float] = (0.9, 0.999),
        adam_eps: float = 1e-8,
        preconditioner_dtype: torch.dtype | None = None,
    ) -> None:
        if fisher_type not in FISHER_TYPES:
            raise ValueError(f"fisher_type must be one of {FISHER_TYPES}, got {fisher_type!r}")
        if approximation not in APPROXIMATIONS:
            raise ValueError(f"approximation must be one of {APPROXIMATIONS}, got {approximation!r}")
        if loss_reduction not in ("mean", "sum"):
            raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}")
        self.layers: list[nn.Linear | nn.Conv1d | nn.Conv2d] = [m for m in model.modules()
                       if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)) and m.weight.requires_grad
                       and not (isinstance(m, (nn.Conv1d, nn.Conv2d)) and (m.groups != 1 or m.padding_mode != "zeros"))]
        kfac_params = {id(p) for m in self.layers for p in m.parameters(recurse=False)}
        others = [p for p in model.parameters() if p.requires_grad and id(p) not in kfac_params]
        params = [p for m in self.layers for p in m.parameters(recurse=False)]
        defaults = dict(lr=lr, damping=damping, momentum=momentum, weight_decay=weight_decay)
        super().__init__(params, defaults)
        self.adam = torch.optim.Adam(others, lr=lr, betas=adam_betas, eps=adam_eps) if others else None
        self.factor_decay = factor_decay
        self.inverse_frequency = inverse_frequency
        self.fisher_type = fisher_type
        self.approximation = approximation
        self.loss_reduction = loss_reduction
        self.preconditioner_dtype = preconditioner_dtype
        self.steps = 0
        self._capturing = False
        self._inputs: dict[nn.Module, torch.Tensor] = {}
        self._grads: dict[nn.Module, list[torch.Tensor]] = {}
        self._batch_size = 1
        self.A: dict[nn.Module, torch.Tensor] = {}
        self.B: dict[nn.Module, torch.Tensor] = {}
        self.A_inv: dict[nn.Module, torch.Tensor] = {}
        self.B_inv: dict[nn.Module, torch.Tensor] = {}
        self._handles = []
        for m in self.layers:
            self._handles.append(m.register_forward_hook(self._capture_layer))

    # ---- capturing inputs and output gradients -----------------------------------------------
    def _capture_layer(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        """Keeps the layer's input, and hooks its output to keep the gradients that flow back.

        A tensor hook (not a module backward hook) fires for torch.autograd.grad too, and only
        exists while capturing: outside `capture()` the layers run untouched.
        """
        if not (self._capturing and torch.is_grad_enabled() and output.requires_grad):
            return
        self._inputs[module] = inputs[0].detach()

        def keep(grad: torch.Tensor, module: nn.Module = module) -> None:
            if self._capturing:
                self._grads.setdefault(module, []).append(grad.detach())

        output.register_hook(keep)

    @contextlib.contextmanager
    def capture(self, enabled: bool = True) -> Iterator[None]:
        """Records layer inputs in the forward pass run inside this block (for a factor update)."""
        self._capturing = enabled
        self._inputs.clear()
        self._grads.clear()
        try:
            yield
        finally:
            pass

    def fisher_backward(self, outputs: torch.Tensor, loss: str, targets: torch.Tensor | None = None,
                        generator: torch.Generator | None = None) -> None:
        """Backward passes that give the per-example output gradients g of the chosen Fisher.

        `outputs` holds the prediction vector in its last dimension; leading dimensions index
        examples and shared positions (a sequence, or the pixels of an NHWC image), each with
        its own loss term.

        empirical: the true targets' loss; mc: one target sampled from the model's predictive
        distribution; type2: the exact GGN, from the columns of the loss Hessian's square root
        (one backward pass per output). The parameters' .grad are left untouched.
        """
        if not self._capturing:
            return
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self._grads.clear()
        self._batch_size = outputs.shape[0]
        params = [p for m in self.layers for p in m.parameters(recurse=False)]
        for vector in self._output_gradients(outputs.detach(), loss, targets, generator):
            torch.autograd.grad(outputs, params, grad_outputs=vector, retain_graph=True, allow_unused=True)
        self._update_factors()

    def _output_gradients(self, f: torch.Tensor, loss: str, targets: torch.Tensor | None,
                          generator: torch.Generator | None) -> list[torch.Tensor]:
        """d loss_n / d f_n for every example n (one tensor per backward pass)."""
        if self.fisher_type == "empirical":
            if targets is None:
                raise ValueError("the empirical Fisher needs the targets")
            y = targets
        elif self.fisher_type == "mc":
            if loss == "softmax_cross_entropy":
                y = torch.multinomial(f.softmax(-1).reshape(-1, f.shape[-1]), 1, generator=generator).reshape(f.shape[:-1])
            elif loss == "sigmoid_cross_entropy":
                y = torch.bernoulli(torch.sigmoid(f), generator=generator)
            else:
                y = f + torch.randn(f.shape, generator=generator, dtype=f.dtype, device=f.device)
        else:
            return self._hessian_root_columns(f, loss)
        if loss == "softmax_cross_entropy":
            if y.dtype.is_floating_point and y.shape == f.shape:
                return [f.softmax(-1) - y]
            return [f.softmax(-1) - F.one_hot(y.long(), f.shape[-1]).to(f.dtype)]
        if loss == "sigmoid_cross_entropy":
            return [torch.sigmoid(f) - y.to(f.dtype)]
        return [f - y.to(f.dtype)]  # mse: loss_n = 1/2 ||f_n - y_n||^2

    @staticmethod
    def _hessian_root_columns(f: torch.Tensor, loss: str) -> list[torch.Tensor]:
        """Vectors v_c with sum_c v_c v_c^T = the Hessian of loss_n in f_n, for every n at once."""
        c = f.shape[-1]
        if loss == "mse":
            return [F.one_hot(torch.full(f.shape[:-1], k, device=f.device), c).to(f.dtype) for k in range(c)]
        if loss == "sigmoid_cross_entropy":
            s = torch.sigmoid(f)
            root = (s * (1 - s)).sqrt()
            return [root * F.one_hot(torch.full(f.shape[:-1], k, device=f.device), c).to(f.dtype) for k in range(c)]
        # softmax: H = diag(p) - p p^T = sum_k p_k (e_k - p)(e_k - p)^T
        p = f.softmax(-1)
        out = []
        for k in range(c):
            e = F.one_hot(torch.full(f.shape[:-1], k, device=f.device), c).to(f.dtype)
            out.append(p[..., k : k + 1].sqrt() * (e - p))
        return out

    @torch.no_grad()
    def _update_factors(self) -> None:
        decay = self.factor_decay if self.A else 0.0
        for m in self.layers:
            if m not in self._inputs or m not in self._grads:
                continue
            a_total, b_total = None, None
            for g in self._grads[m]:
                a3, g3 = _inputs_and_grads(m, self._inputs[m], g)
                a_f, b_f = kronecker_factors(a3, g3, self.approximation)
                a_total = a_f
                b_total = b_f if b_total is None else b_total + b_f
            assert a_total is not None and b_total is not None
            if self.loss_reduction == "sum":
                b_total = b_total * self._batch_size
            if m in self.A:
                self.A[m].mul_(decay).add_(a_total, alpha=1 - decay)
                self.B[m].mul_(decay).add_(b_total, alpha=1 - decay)
            else:
                self.A[m], self.B[m] = a_total.clone(), b_total.clone()
        self._grads.clear()

    def factors(self, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """The current (A, B) of a layer; its curvature block is kron(B, A)."""
        return self.A[module], self.B[module]

    # ---- the update --------------------------------------------------------------------------
    @torch.no_grad()
    def _update_inverses(self, damping: float) -> None:
        by_shape: dict[tuple[int, ...], list[tuple[dict[nn.Module, torch.Tensor], nn.Module, torch.Tensor]]] = {}
        for m in self.layers:
            if m not in self.A:
                continue
            A, B = self.A[m], self.B[m]
            pi = torch.sqrt((torch.trace(A) / A.shape[0]) / (torch.trace(B) / B.shape[0]).clamp_min(1e-30))
            pi = torch.where(torch.isfinite(pi) & (pi > 0), pi, torch.ones_like(pi))
            root = math.sqrt(damping)
            eye_a = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
            eye_b = torch.eye(B.shape[0], dtype=B.dtype, device=B.device)
            by_shape.setdefault(tuple(A.shape), []).append((self.A_inv, m, A + pi * root * eye_a))
            by_shape.setdefault(tuple(B.shape), []).append((self.B_inv, m, B + (root / pi) * eye_b))
        for items in by_shape.values():
            inverses = torch.linalg.inv(torch.stack([x for _, _, x in items]))  # one batched call per shape
            if self.preconditioner_dtype is not None:
                inverses = inverses.to(self.preconditioner_dtype)
            for k, (target, layer, _) in enumerate(items):
                target[layer] = inverses[k]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._capturing and self.fisher_type == "empirical" and self._grads:
            # The gradients of the mean loss were captured: per-example gradients are N x those.
            self._grads = {m: [g * self._inputs[m].shape[0] for g in gs] for m, gs in self._grads.items()}
            self._batch_size = next(iter(self._inputs.values())).shape[0]
            self._update_factors()
        self._capturing = False
        group = self.param_groups[0]
        if self.steps % self.inverse_frequency == 0 and self.A:
            self._update_inverses(group["damping"])
        self.steps += 1
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        for m in self.layers:
            w, b = m.weight, m.bias
            if w.grad is None:
                continue
            g = w.grad.reshape(w.shape[0], -1)
            if b is not None:
                g = torch.cat([g, b.grad.reshape(-1, 1) if b.grad is not None else torch.zeros_like(g[:, :1])], 1)
            if m in self.A_inv:
                g = (self.B_inv[m] @ g.to(self.B_inv[m].dtype) @ self.A_inv[m]).to(w.dtype)
            for p, d in ((w, g[:, : w[0].numel()].reshape(w.shape)), (b, g[:, -1] if b is not None else None)):
                if p is None or d is None:
                    continue
                state = self.state[p]
                buf = state.get("momentum")
                if buf is None:
                    buf = state["momentum"] = torch.zeros_like(p)
                buf.mul_(mu).add_(d)
                if wd != 0.0:
                    p.mul_(1.0 - lr * wd)
                p.add_(buf, alpha=-lr)
        if self.adam is not None:
            for pg in self.adam.param_groups:
                pg["lr"] = lr
            self.adam.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        if self.adam is not None:
            self.adam.zero_grad(set_to_none)

    def state_dict(self) -> dict[str, Any]:
        index: dict[nn.Module, int] = {m: i for i, m in enumerate(self.layers)}
        return {
            "base": super().state_dict(),
            "adam": self.adam.state_dict() if self.adam is not None else None,
            "steps": self.steps,
            "A": {index[m]: t for m, t in self.A.items()},
            "B": {index[m]: t for m, t in self.B.items()},
            "A_inv": {index[m]: t for m, t in self.A_inv.items()},
            "B_inv": {index[m]: t for m, t in self.B_inv.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state["base"])
        if self.adam is not None and state["adam"] is not None:
            self.adam.load_state_dict(state["adam"])
        self.steps = state["steps"]
        for name in ("A", "B", "A_inv", "B_inv"):
            setattr(self, name, {self.layers[i]: t for i, t in state[name].items()})
