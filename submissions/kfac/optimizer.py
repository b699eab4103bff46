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
pi = sqrt((tr A / dim A) / (tr B / dim B)), and stored in `preconditioner_dtype` (default: the
factors'; bfloat16 halves the cost of applying them where there are bf16 matrix units). The
update is momentum on B^-1 G A^-1 with decoupled weight decay.

Under data parallelism (torch.distributed initialised, several ranks) each factor update is
averaged over the ranks before it is used, as kfac-pytorch does, so that every rank inverts the
same factors and every optimizer state stays identical across ranks.

How (speed, not arithmetic): the factors are accumulated in place (`addmm_` with the EMA's
weights) into their lower triangle only (`submissions/gram.py`; a Cholesky factorisation and a
trace read no other), all in one flat buffer (one all-reduce); the damped inverses come from one
batched Cholesky factorisation per matrix size (half the arithmetic of an LU inverse; a matrix
that is not positive definite keeps its previous inverse, without a host sync); layers of the same
shape are preconditioned with two batched products (float32 on a CPU: per layer, as 1 x 1
convolutions, `submissions/matmul.py`) and keep their momentum stacked; the Fisher's
extra backward pass asks autograd for the layers' output gradients only (no weight gradients).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from submissions.gram import accumulate_lower_gram_, symmetrize
from submissions.matmul import sandwich

FISHER_TYPES = ("empirical", "mc", "type2")
APPROXIMATIONS = ("expand", "reduce")
LOSSES = ("softmax_cross_entropy", "sigmoid_cross_entropy", "mse")
Layer = nn.Linear | nn.Conv1d | nn.Conv2d


def _inputs(module: nn.Module, a: torch.Tensor) -> torch.Tensor:
    """The layer's inputs as the columns of an (in, N * R) matrix (no bias entry)."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        if isinstance(module, nn.Conv1d):  # a Conv1d is a Conv2d of height 1
            a = a.unsqueeze(2)
            size, dil, pad, stride = ((1, *module.kernel_size), (1, *module.dilation), (0, *module.padding),
                                      (1, *module.stride))
        else:
            size, dil, pad, stride = module.kernel_size, module.dilation, module.padding, module.stride  # type: ignore[assignment]
        patches = F.unfold(a, size, dilation=dil, padding=pad, stride=stride)  # (N, C*kh*kw, R)
        return patches.transpose(0, 1).reshape(patches.shape[1], -1)
    return a.reshape(-1, a.shape[-1]).T


def _output_grads(module: nn.Module, g: torch.Tensor) -> torch.Tensor:
    """The layer's output gradients as the columns of an (out, N * R) matrix."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return g.transpose(0, 1).reshape(g.shape[1], -1)
    return g.reshape(-1, g.shape[-1]).T


def _per_example(x: torch.Tensor, n: int, reduce: Callable[..., torch.Tensor]) -> torch.Tensor:
    """(features, N) from (features, N * R): `reduce` (mean or sum) over each example's positions."""
    return reduce(x.reshape(x.shape[0], n, -1), dim=2)


class LayerStack:
    """Layers whose (out, in + bias) shapes agree: momentum and inverses as (k, ...) stacks."""

    def __init__(self, layers: list[Layer], dtype: torch.dtype, device: torch.device,
                 preconditioner_dtype: torch.dtype) -> None:
        self.layers = layers
        w = layers[0].weight
        self.out, self.fan_in = w.shape[0], w[0].numel()
        self.bias = layers[0].bias is not None
        k, o, i = len(layers), self.out, self.fan_in + self.bias
        self.momentum = torch.zeros(k, o, i, dtype=dtype, device=device)
        eye = dict(dtype=preconditioner_dtype, device=device)
        self.A_inv = torch.eye(i, **eye).repeat(k, 1, 1)
        self.B_inv = torch.eye(o, **eye).repeat(k, 1, 1)
        self.ready = False  # inverses computed from factors (else the gradient is used as is)

    def gradients(self) -> torch.Tensor:
        """(k, out, in [+ 1]): weight gradients (bias gradients as the last column); zeros if absent."""
        ws = [m.weight.grad.reshape(self.out, -1) if m.weight.grad is not None
              else torch.zeros(self.out, self.fan_in, dtype=self.momentum.dtype, device=self.momentum.device)
              for m in self.layers]
        if not self.bias:
            return ws[0].unsqueeze(0) if len(ws) == 1 else torch.stack(ws)  # a lone layer: a view, no copy
        g = torch.stack(ws)
        bs = [m.bias.grad if m.bias.grad is not None else torch.zeros_like(m.bias) for m in self.layers]
        return torch.cat([g, torch.stack(bs).unsqueeze(2)], dim=2)

    def parameter_views(self, stack: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(the layers' parameters, the matching views of a (k, out, in [+ 1]) stack)."""
        params, views = [], []
        for j, m in enumerate(self.layers):
            params.append(m.weight)
            views.append(stack[j, :, : self.fan_in].view(m.weight.shape) if m.weight.is_contiguous()
                         else stack[j, :, : self.fan_in].reshape(m.weight.shape))
            if self.bias:
                params.append(m.bias)
                views.append(stack[j, :, self.fan_in])
        return params, views


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
        self.layers: list[Layer] = [m for m in model.modules()
                                    if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)) and m.weight.requires_grad
                                    and not (isinstance(m, (nn.Conv1d, nn.Conv2d))
                                             and (m.groups != 1 or m.padding_mode != "zeros"))]
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
        self._calls: dict[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._grads: dict[nn.Module, list[torch.Tensor]] = {}
        self._batch_size = 1
        self.seen: set[nn.Module] = set()  # layers whose factors hold at least one update
        self._build_state()
        self._handles = [m.register_forward_hook(self._capture_layer) for m in self.layers]

    def _build_state(self) -> None:
        """The flat factor buffer (A and B of every layer as views) and the layer stacks."""
        dims = []
        for m in self.layers:
            i = m.weight[0].numel() + (m.bias is not None)
            dims += [i, m.weight.shape[0]]
        w = self.layers[0].weight if self.layers else torch.zeros(())
        self._factors = torch.zeros(sum(d * d for d in dims), dtype=w.dtype, device=w.device)
        self.A: dict[nn.Module, torch.Tensor] = {}
        self.B: dict[nn.Module, torch.Tensor] = {}
        offset = 0
        for m, (i, o) in zip(self.layers, zip(dims[::2], dims[1::2])):
            self.A[m] = self._factors[offset : offset + i * i].view(i, i)
            offset += i * i
            self.B[m] = self._factors[offset : offset + o * o].view(o, o)
            offset += o * o
        groups: dict[tuple[Any, ...], list[Layer]] = {}
        for m in self.layers:
            key = (tuple(m.weight.shape[:1]), m.weight[0].numel(), m.bias is not None, m.weight.dtype, m.weight.device)
            groups.setdefault(key, []).append(m)
        self.stacks = [LayerStack(layers, key[3], key[4], self.preconditioner_dtype or key[3])
                       for key, layers in groups.items()]

    # ---- capturing inputs and output gradients -----------------------------------------------
    def _capture_layer(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        """Keeps the layer's input and output (for a factor update), only while capturing."""
        if not (self._capturing and torch.is_grad_enabled() and output.requires_grad):
            return
        self._calls.setdefault(module, []).append((inputs[0].detach(), output))
        if self.fisher_type == "empirical":
            # The true targets' gradients flow back through the loss's own backward pass.
            def keep(grad: torch.Tensor, module: nn.Module = module) -> None:
                if self._capturing:
                    self._grads.setdefault(module, []).append(grad.detach())

            output.register_hook(keep)

    @contextlib.contextmanager
    def capture(self, enabled: bool = True) -> Iterator[None]:
        """Records layer inputs in the forward pass run inside this block (for a factor update)."""
        self._capturing = enabled
        self._calls.clear()
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
        self._batch_size = outputs.shape[0]
        calls = [(m, out) for m, cs in self._calls.items() for _, out in cs]
        grads: dict[nn.Module, list[torch.Tensor]] = {}
        for vector in self._output_gradients(outputs.detach(), loss, targets, generator):
            found = torch.autograd.grad(outputs, [out for _, out in calls], grad_outputs=vector,
                                        retain_graph=True, allow_unused=True)
            for (m, _), g in zip(calls, found):
                if g is not None:
                    grads.setdefault(m, []).append(g)
        self._update_factors(grads)

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
    def _update_factors(self, grads: dict[nn.Module, list[torch.Tensor]]) -> None:
        """EMA of A and B from this batch: A from every call of a layer, B summed over its output
        gradients (one per call and backward pass: type2 has one pass per output); then the
        factors are averaged over ranks."""
        for m in self.layers:
            calls, gs = self._calls.get(m), grads.get(m)
            if not calls or not gs:
                continue
            decay = self.factor_decay if m in self.seen else 0.0
            xs = [_inputs(m, a) for a, _ in calls]
            n = calls[0][0].shape[0]
            positions = sum(x.shape[1] for x in xs) // n
            self._accumulate_a(m, xs, n, positions, decay)
            scale = self._batch_size if self.loss_reduction == "sum" else 1.0
            for k, g in enumerate(gs):
                y = _output_grads(m, g)
                if self.approximation == "reduce":
                    y = _per_example(y, n, torch.sum)
                accumulate_lower_gram_(self.B[m], y, alpha=(1 - decay) * scale / n, beta=decay if k == 0 else 1.0)
            self.seen.add(m)
        self._calls.clear()
        self._grads.clear()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self._factors)
            self._factors.div_(dist.get_world_size())

    def _accumulate_a(self, m: Layer, xs: list[torch.Tensor], n: int, positions: int, decay: float) -> None:
        """A <- decay A + (1 - decay) A_batch, with the bias as a last input of ones."""
        A = self.A[m]
        fan_in = m.weight[0].numel()
        if self.approximation == "reduce":
            xs = [_per_example(x, n, torch.mean) for x in xs]
            count = n * len(xs)
        else:
            count = n * positions
        w = A[:fan_in, :fan_in] if m.bias is not None else A
        for k, x in enumerate(xs):
            accumulate_lower_gram_(w, x, alpha=(1 - decay) / count, beta=decay if k == 0 else 1.0)
        if m.bias is not None:
            mean = sum(x.sum(dim=1) for x in xs) / count
            A[fan_in, :fan_in].mul_(decay).add_(mean, alpha=1 - decay)
            A[fan_in, fan_in].mul_(decay).add_(1 - decay)

    def factors(self, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """The current (A, B) of a layer as full symmetric matrices; its curvature block is kron(B, A)."""
        return symmetrize(self.A[module]), symmetrize(self.B[module])

    def inverses(self, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """The damped inverses (A^-1, B^-1) a layer's gradient is preconditioned with."""
        for stack in self.stacks:
            if module in stack.layers:
                j = stack.layers.index(module)
                return stack.A_inv[j], stack.B_inv[j]
        raise KeyError(f"{module} is not preconditioned by K-FAC")

    # ---- the update --------------------------------------------------------------------------
    @torch.no_grad()
    def _update_inverses(self, damping: float) -> None:
        """The damped inverses of every seen layer: one batched Cholesky per matrix size."""
        root = math.sqrt(damping)
        by_size: dict[tuple[Any, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for stack in self.stacks:
            if not all(m in self.seen for m in stack.layers):
                continue
            A = torch.stack([self.A[m] for m in stack.layers])
            B = torch.stack([self.B[m] for m in stack.layers])
            trace_a = A.diagonal(dim1=-2, dim2=-1).sum(-1) / A.shape[-1]
            trace_b = B.diagonal(dim1=-2, dim2=-1).sum(-1) / B.shape[-1]
            pi = torch.sqrt(trace_a / trace_b.clamp_min(1e-30))
            pi = torch.where(torch.isfinite(pi) & (pi > 0), pi, torch.ones_like(pi))
            A.diagonal(dim1=-2, dim2=-1).add_((pi * root).unsqueeze(-1))
            B.diagonal(dim1=-2, dim2=-1).add_((root / pi).unsqueeze(-1))
            for damped, target in ((A, stack.A_inv), (B, stack.B_inv)):
                by_size.setdefault((damped.shape[-1], damped.dtype, damped.device), []).append((damped, target))
            stack.ready = True
        for items in by_size.values():
            damped = torch.cat([d for d, _ in items]) if len(items) > 1 else items[0][0]
            factor, info = torch.linalg.cholesky_ex(damped)
            inverses = torch.cholesky_inverse(factor)
            sizes = [d.shape[0] for d, _ in items]
            for (_, target), new, ok in zip(items, inverses.split(sizes), (info == 0).split(sizes)):
                # A factor that is not positive definite (NaN, overflow) keeps its previous inverse.
                target.copy_(torch.where(ok.view(-1, 1, 1), new.to(target.dtype), target))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._capturing and self.fisher_type == "empirical" and self._grads:
            # The gradients of the mean loss were captured: per-example gradients are N x those.
            self._batch_size = next(iter(self._calls.values()))[0][0].shape[0]
            self._update_factors({m: [g * self._batch_size for g in gs] for m, gs in self._grads.items()})
        self._capturing = False
        self._calls.clear()
        group = self.param_groups[0]
        if self.steps % self.inverse_frequency == 0 and self.seen:
            self._update_inverses(group["damping"])
        self.steps += 1
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        params, updates = [], []
        for stack in self.stacks:
            g = stack.gradients()
            if stack.ready:
                a_inv, b_inv = stack.A_inv, stack.B_inv
                g = sandwich(b_inv, g.to(b_inv.dtype).contiguous(), a_inv).to(stack.momentum.dtype)
            stack.momentum.mul_(mu).add_(g)
            p, v = stack.parameter_views(stack.momentum)
            params += p
            updates += v
        if params:
            if wd != 0.0:
                torch._foreach_mul_(params, 1.0 - lr * wd)
            torch._foreach_add_(params, updates, alpha=-lr)
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
            "factors": self._factors,
            "seen": sorted(index[m] for m in self.seen),
            "stacks": [{"momentum": s.momentum, "A_inv": s.A_inv, "B_inv": s.B_inv, "ready": s.ready}
                       for s in self.stacks],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state["base"])
        if self.adam is not None and state["adam"] is not None:
            self.adam.load_state_dict(state["adam"])
        self.steps = state["steps"]
        self._factors.copy_(state["factors"])
        self.seen = {self.layers[i] for i in state["seen"]}
        for stack, saved in zip(self.stacks, state["stacks"]):
            for name in ("momentum", "A_inv", "B_inv"):
                getattr(stack, name).copy_(saved[name])
            stack.ready = bool(saved["ready"])
