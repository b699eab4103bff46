"""Shampoo with blocking and grafting (Gupta et al. 2018; Anil et al. 2020; Shi et al. 2023).

For a matrix parameter W (m x n; a convolution kernel is viewed as out x (in * kh * kw)) and its
gradient G, per block of at most `max_preconditioner_dim` rows and columns:

    L <- beta2 L + (1 - beta2) G G^T        R <- beta2 R + (1 - beta2) G^T G   (beta2 = 1: L += G G^T)
    every `precondition_frequency` steps:  P_L = (L_hat + eps I)^(-1/4),  P_R = (R_hat + eps I)^(-1/4)
    with L_hat = L / (1 - beta2^t) (bias correction; none for the sum form), from one
    eigendecomposition per block in float32 or float64 (`inverse_root_dtype`); the roots are
    stored and applied in `preconditioner_dtype` (default: the parameter's; bfloat16 halves the
    cost of applying them on CPUs and GPUs with bf16 matrix units, as Distributed Shampoo allows).
    D = P_L M P_R,  where M is the momentum-filtered gradient (below).

Grafting (Agarwal et al. 2020): D is rescaled per block to the Frobenius norm of the grafted
optimizer's direction A: Adam (A = M_hat / (sqrt(v_hat) + eps_graft), v the EMA of G^2), or SGD
(A = M). Before `start_preconditioning_step`, and for vectors and for parameters with a
dimension above `skip_preconditioning_dim_size_gt` (embedding tables), the update is A alone.

Momentum filters the gradient first, as Distributed Shampoo does: M = beta1 M + (1 - beta1) G,
bias-corrected; Nesterov uses beta1 M + (1 - beta1) G. Weight decay is decoupled:
W <- W - lr wd W. Then W <- W - lr D.

With beta1 = 0 and Adam grafting, before preconditioning starts this is exactly Adam.

Layout (speed, not arithmetic): the blocks of all preconditioned parameters of a parameter group
are stored by shape, each shape as one (k, r, c) stack holding their momentum and Adam second
moment, with (k, r, r) and (k, c, c) stacks of statistics and roots. A step copies the gradient
into the stacks once, updates the statistics with one batched product per shape (lower triangle
only, `submissions/gram.py`: eigh reads no other), preconditions with two batched products per
shape, and adds the update back into the parameters through views; nothing waits on the device.
The one Python loop over blocks is float32 on a CPU, where each block's products are two 1 x 1
convolutions (`submissions/matmul.py`: oneDNN's kernels at about twice the matmul's rate there).
A parameter of the layout without a gradient at a step is treated as having a zero gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from submissions.gram import accumulate_lower_gram_
from submissions.matmul import sandwich

GRAFTINGS = ("adam", "sgd", "none")


def matrix_view(p: torch.Tensor) -> torch.Tensor:
    """The 2-D view Shampoo preconditions: rows = first dim, columns = the rest (row-major)."""
    return p.reshape(p.shape[0], -1)


def block_slices(rows: int, cols: int, size: int) -> list[tuple[slice, slice]]:
    """The blocks of a rows x cols matrix, row-major: full blocks of `size`, smaller at the edges."""
    return [
        (slice(i, min(i + size, rows)), slice(j, min(j + size, cols)))
        for i in range(0, rows, size)
        for j in range(0, cols, size)
    ]


def inverse_root(matrices: torch.Tensor, eps: float, root: int, dtype: torch.dtype) -> torch.Tensor:
    """(A + eps I)^(-1/root) for a stack of symmetric PSD matrices given by their lower triangle."""
    a = matrices.to(dtype, copy=True)
    a.diagonal(dim1=-2, dim2=-1).add_(eps)
    evals, evecs = torch.linalg.eigh(a, UPLO="L")
    evals = evals.clamp_min(eps) ** (-1.0 / root)
    return ((evecs * evals.unsqueeze(-2)) @ evecs.transpose(-1, -2)).to(matrices.dtype)


@dataclass(frozen=True)
class Region:
    """A rectangle of a parameter's matrix view tiled by nr x nc equal blocks of r x c."""

    param: int  # index into the layout's parameters
    rows: slice
    cols: slice
    nr: int
    nc: int
    r: int
    c: int

    def blocks(self, matrix: torch.Tensor) -> torch.Tensor:
        """The region's blocks as an (nr, nc, r, c) view of `matrix` (row-major block order)."""
        return matrix[self.rows, self.cols].reshape(self.nr, self.r, self.nc, self.c).permute(0, 2, 1, 3)


def regions(param: int, rows: int, cols: int, size: int) -> list[Region]:
    """The up to four regions of equal blocks of a rows x cols matrix: full blocks, the right
    and bottom edges, the corner."""
    fr, fc = rows // size, cols // size  # full blocks along each side
    er, ec = rows - fr * size, cols - fc * size  # edge sizes
    out = []
    for nr, r, row0 in ((fr, size, 0), (1, er, fr * size)):
        for nc, c, col0 in ((fc, size, 0), (1, ec, fc * size)):
            if nr and nc and r and c:
                out.append(Region(param, slice(row0, row0 + nr * r), slice(col0, col0 + nc * c), nr, nc, r, c))
    return out


class BlockStack:
    """Every block of one shape (r, c) in a parameter group: their state as (k, ...) stacks."""

    def __init__(self, shape: tuple[int, int], parts: list[tuple[Region, int]], like: torch.Tensor,
                 adam: bool, preconditioner_dtype: torch.dtype) -> None:
        self.shape = shape
        self.parts = parts  # (region, index of its first block in the stack)
        k = sum(region.nr * region.nc for region, _ in parts)
        r, c = shape
        zeros = dict(dtype=like.dtype, device=like.device)
        self.grad = torch.zeros(k, r, c, **zeros)  # the step's gradient blocks (scratch)
        self.state: dict[str, torch.Tensor] = {
            "momentum": torch.zeros(k, r, c, **zeros),
            "L": torch.zeros(k, r, r, **zeros),
            "R": torch.zeros(k, c, c, **zeros),
            "PL": torch.zeros(k, r, r, dtype=preconditioner_dtype, device=like.device),
            "PR": torch.zeros(k, c, c, dtype=preconditioner_dtype, device=like.device),
        }
        if adam:
            self.state["graft_v"] = torch.zeros(k, r, c, **zeros)

    def views(self, stack: torch.Tensor, matrices: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(block views of `matrices`, the matching (nr, nc, r, c) views of `stack`) per region."""
        outside, inside = [], []
        for region, start in self.parts:
            n = region.nr * region.nc
            outside.append(region.blocks(matrices[region.param]))
            inside.append(stack[start : start + n].view(region.nr, region.nc, region.r, region.c))
        return outside, inside


class Shampoo(torch.optim.Optimizer):
    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        epsilon: float = 1e-12,
        weight_decay: float = 0.0,
        precondition_frequency: int = 100,
        start_preconditioning_step: int = 1,
        max_preconditioner_dim: int = 1024,
        skip_preconditioning_dim_size_gt: int = 24576,
        grafting: str = "adam",
        grafting_beta2: float = 0.999,
        grafting_epsilon: float = 1e-8,
        nesterov: bool = False,
        use_bias_correction: bool = True,
        inverse_root_dtype: torch.dtype = torch.float32,
        preconditioner_dtype: torch.dtype | None = None,
    ) -> None:
        if grafting not in GRAFTINGS:
            raise ValueError(f"grafting must be one of {GRAFTINGS}, got {grafting!r}")
        if not 0.0 <= betas[0] < 1.0 or not 0.0 < betas[1] <= 1.0:
            raise ValueError(f"betas must be in [0, 1) x (0, 1], got {betas}")
        defaults = dict(
            lr=lr, betas=betas, epsilon=epsilon, weight_decay=weight_decay,
            precondition_frequency=precondition_frequency, start_preconditioning_step=start_preconditioning_step,
            max_preconditioner_dim=max_preconditioner_dim,
            skip_preconditioning_dim_size_gt=skip_preconditioning_dim_size_gt, grafting=grafting,
            grafting_beta2=grafting_beta2, grafting_epsilon=grafting_epsilon, nesterov=nesterov,
            use_bias_correction=use_bias_correction, inverse_root_dtype=inverse_root_dtype,
            preconditioner_dtype=preconditioner_dtype,
        )
        super().__init__(params, defaults)
        self._step = 0
        self._layouts = [self._layout(group) for group in self.param_groups]
        self._buffers: dict[tuple[str, int], list[torch.Tensor]] = {}

    # ---- layout --------------------------------------------------------------------------------
    @staticmethod
    def _preconditioned(p: torch.Tensor, group: dict[str, Any]) -> bool:
        return p.ndim >= 2 and max(p.shape[0], p[0].numel()) <= group["skip_preconditioning_dim_size_gt"]

    def _layout(self, group: dict[str, Any]) -> tuple[list[torch.Tensor], list[BlockStack]]:
        """(the group's preconditioned parameters, their blocks stacked by shape)."""
        params = [p for p in group["params"] if p.requires_grad and self._preconditioned(p, group)]
        by_shape: dict[tuple[Any, ...], list[tuple[Region, int]]] = {}
        counts: dict[tuple[Any, ...], int] = {}
        for i, p in enumerate(params):
            m, n = matrix_view(p).shape
            for region in regions(i, m, n, group["max_preconditioner_dim"]):
                key = (region.r, region.c, p.dtype, p.device)
                by_shape.setdefault(key, []).append((region, counts.get(key, 0)))
                counts[key] = counts.get(key, 0) + region.nr * region.nc
        stacks = [
            BlockStack((r, c), parts, params[parts[0][0].param], group["grafting"] == "adam",
                       group["preconditioner_dtype"] or dtype)
            for (r, c, dtype, _), parts in by_shape.items()
        ]
        return params, stacks

    # ---- roots -------------------------------------------------------------------------------
    @torch.no_grad()
    def _update_roots(self) -> None:
        """Recomputes every block's inverse roots: one batched eigh per matrix size and settings."""
        by_size: dict[tuple[Any, ...], list[tuple[torch.Tensor, torch.Tensor, float]]] = {}
        for group, (_, stacks) in zip(self.param_groups, self._layouts):
            beta2 = group["betas"][1]
            correction = 1.0 - beta2**self._step if (group["use_bias_correction"] and beta2 < 1.0) else 1.0
            for stack in stacks:
                for statistic, root in (("L", "PL"), ("R", "PR")):
                    s = stack.state[statistic]
                    key = (s.shape[-1], s.dtype, s.device, group["epsilon"], group["inverse_root_dtype"])
                    by_size.setdefault(key, []).append((stack.state[root], s, correction))
        for (_, _, _, eps, dtype), items in by_size.items():
            scales = torch.cat([torch.full((s.shape[0],), 1.0 / c, dtype=s.dtype, device=s.device)
                                for _, s, c in items])
            statistics = torch.cat([s for _, s, _ in items]) if len(items) > 1 else items[0][1]
            roots = inverse_root(statistics * scales.view(-1, 1, 1), eps, 4, dtype)
            for (target, _, _), part in zip(items, roots.split([t.shape[0] for t, _, _ in items])):
                target.copy_(part)

    # ---- the step ----------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._step += 1
        t = self._step
        gradients = []
        for group, (params, stacks) in zip(self.param_groups, self._layouts):
            grads = [matrix_view(p.grad) if p.grad is not None else torch.zeros_like(matrix_view(p))
                     for p in params]
            gradients.append(grads)
            if stacks:
                outside, inside = [], []
                for stack in stacks:
                    o, i = stack.views(stack.grad, grads)
                    outside += o
                    inside += i
                torch._foreach_copy_(inside, outside)
                beta2 = group["betas"][1]
                decay, weight = (1.0, 1.0) if beta2 == 1.0 else (beta2, 1.0 - beta2)
                for stack in stacks:
                    accumulate_lower_gram_(stack.state["L"], stack.grad, alpha=weight, beta=decay)
                    accumulate_lower_gram_(stack.state["R"], stack.grad.transpose(1, 2), alpha=weight, beta=decay)
        if t >= self._first_start() and (t - self._first_start()) % self._frequency() == 0:
            self._update_roots()
        for group, (params, stacks), grads in zip(self.param_groups, self._layouts, gradients):
            self._update_group(group, params, stacks, grads, t)
        return loss

    def _update_group(self, group: dict[str, Any], params: list[torch.Tensor], stacks: list[BlockStack],
                      grads: list[torch.Tensor], t: int) -> None:
        laid_out = {id(p) for p in params}
        others = [p for p in group["params"] if p.grad is not None and id(p) not in laid_out]
        for p in others:
            if not self.state[p]:
                self._init_state(p, group)
        momenta = [s.state["momentum"] for s in stacks] + [self.state[p]["momentum"] for p in others]
        seconds = [s.state.get("graft_v") for s in stacks] + [self.state[p].get("graft_v") for p in others]
        gs = [s.grad for s in stacks] + [p.grad for p in others]
        if not gs:
            return
        filtered, directions = self._graft_directions(momenta, seconds, gs, group, t)
        n = len(stacks)
        if t >= group["start_preconditioning_step"]:
            for k, (stack, m, a) in enumerate(zip(stacks, filtered[:n], directions[:n])):
                directions[k] = self._precondition(stack, m, a, group["grafting"] != "none")
        if group["weight_decay"] != 0.0:
            torch._foreach_mul_(params + others, 1.0 - group["lr"] * group["weight_decay"])
        # A parameter stored in another memory format (channels_last) has no 2-D view to add
        # into: its update is assembled in a matrix first.
        targets = [matrix_view(p) if p.is_contiguous() else torch.zeros(matrix_view(p).shape, dtype=p.dtype,
                                                                         device=p.device) for p in params]
        outside, inside = [], []
        for stack, d in zip(stacks, directions[:n]):
            o, i = stack.views(d, targets)
            outside += o
            inside += i
        torch._foreach_add_(outside + others, inside + directions[n:], alpha=-group["lr"])
        for p, target in zip(params, targets):
            if not p.is_contiguous():
                p.add_(target.view(p.shape))

    def _init_state(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        """Momentum for a parameter outside the layout, and Adam's second moment unless the
        grafting is SGD (then it gets SGD with momentum)."""
        state = self.state[p]
        state["momentum"] = torch.zeros_like(p)
        if group["grafting"] in ("adam", "none"):
            state["graft_v"] = torch.zeros_like(p)

    def _scratch(self, name: str, group: dict[str, Any], like: list[torch.Tensor]) -> list[torch.Tensor]:
        """Buffers shaped as `like`, kept from step to step (allocating ~params-sized tensors every
        step costs page faults that the arithmetic does not); never part of the state."""
        key = (name, id(group))
        buffers = self._buffers.get(key)
        if buffers is None or [b.shape for b in buffers] != [t.shape for t in like]:
            buffers = self._buffers[key] = [torch.empty_like(t) for t in like]
        return buffers

    def _graft_directions(self, momenta: list[torch.Tensor], seconds: list[torch.Tensor | None],
                          grads: list[torch.Tensor], group: dict[str, Any],
                          t: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The filtered gradients M and the grafted optimizer's directions A, in scratch buffers.

        M = beta1 M + (1 - beta1) G (Nesterov: beta1 M + (1 - beta1) G once more), / (1 - beta1^t);
        Adam: A = M / (sqrt(v / (1 - beta2^t)) + eps), v = beta2 v + (1 - beta2) G^2; SGD: A = M.
        """
        beta1 = group["betas"][0]
        torch._foreach_lerp_(momenta, grads, 1.0 - beta1)
        filtered = self._scratch("filtered", group, momenta)
        if group["nesterov"]:
            for f, m, g in zip(filtered, momenta, grads):
                torch.lerp(m, g, 1.0 - beta1, out=f)
        else:
            torch._foreach_copy_(filtered, momenta)
        if beta1 > 0.0:
            torch._foreach_div_(filtered, 1.0 - beta1**t)
        adam = [i for i, v in enumerate(seconds) if v is not None]
        if not adam:
            return filtered, list(filtered)  # SGD grafting: A = M
        b2 = group["grafting_beta2"]
        vs = [seconds[i] for i in adam]
        gs = [grads[i] for i in adam]
        torch._foreach_mul_(vs, b2)
        torch._foreach_addcmul_(vs, gs, gs, value=1.0 - b2)
        denom = self._scratch("denom", group, vs)
        for d, v in zip(denom, vs):
            torch.div(v, 1.0 - b2**t, out=d)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, group["grafting_epsilon"])
        graft = list(filtered)
        for i, a, d in zip(adam, self._scratch("graft", group, vs), denom):
            graft[i] = torch.div(filtered[i], d, out=a)
        return filtered, graft

    @staticmethod
    def _precondition(stack: BlockStack, filtered: torch.Tensor, direction: torch.Tensor,
                      graft: bool) -> torch.Tensor:
        """Per block: P_L M P_R, rescaled to the grafted direction A's norm if `graft`."""
        pl, pr = stack.state["PL"], stack.state["PR"]
        d = sandwich(pl, filtered.to(pl.dtype), pr).to(direction.dtype)
        if graft:
            # The clamp keeps a zero block (no gradient yet) finite, without a host sync.
            scale = torch.linalg.vector_norm(direction, dim=(1, 2)) / torch.linalg.vector_norm(d, dim=(1, 2)).clamp_min(1e-30)
            d.mul_(scale.view(-1, 1, 1))
        return d

    # ---- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        blocks = [[dict(stack.state) for stack in stacks] for _, stacks in self._layouts]
        return {**super().state_dict(), "shampoo_step": self._step, "shampoo_blocks": blocks}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        self._step = state_dict.pop("shampoo_step", 0)
        blocks = state_dict.pop("shampoo_blocks", None)
        super().load_state_dict(state_dict)
        if blocks is not None:
            for (_, stacks), saved in zip(self._layouts, blocks):
                for stack, values in zip(stacks, saved):
                    for name, value in values.items():
                        stack.state[name].copy_(value)

    def _first_start(self) -> int:
        return min(g["start_preconditioning_step"] for g in self.param_groups)

    def _frequency(self) -> int:
        return min(g["precondition_frequency"] for g in self.param_groups)
