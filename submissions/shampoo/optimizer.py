"""Shampoo with blocking and grafting (Gupta et al. 2018; Anil et al. 2020; Shi et al. 2023).

For a matrix parameter W (m x n; a convolution kernel is viewed as out x (in * kh * kw)) and its
gradient G, per block of at most `max_preconditioner_dim` rows and columns:

    L <- beta2 L + (1 - beta2) G G^T        R <- beta2 R + (1 - beta2) G^T G   (beta2 = 1: L += G G^T)
    every `precondition_frequency` steps:  P_L = (L_hat + eps I)^(-1/4),  P_R = (R_hat + eps I)^(-1/4)
    with L_hat = L / (1 - beta2^t) (bias correction; none for the sum form), from one batched
    `torch.linalg.eigh` per block shape, in float32 or float64 (`inverse_root_dtype`); the roots
    are stored and applied in `preconditioner_dtype` (default: the parameter's; bfloat16 halves the
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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

GRAFTINGS = ("adam", "sgd", "none")


def matrix_view(p: torch.Tensor) -> torch.Tensor:
    """The 2-D view Shampoo preconditions: rows = first dim, columns = the rest (row-major)."""
    return p.reshape(p.shape[0], -1)


def block_slices(rows: int, cols: int, size: int) -> list[tuple[slice, slice]]:
    return [
        (slice(i, min(i + size, rows)), slice(j, min(j + size, cols)))
        for i in range(0, rows, size)
        for j in range(0, cols, size)
    ]


def inverse_root(matrices: torch.Tensor, eps: float, root: int, dtype: torch.dtype) -> torch.Tensor:
    """(A + eps I)^(-1/root) for a stack of symmetric PSD matrices, by one eigendecomposition."""
    a = matrices.to(dtype)
    eye = torch.eye(a.shape[-1], dtype=dtype, device=a.device)
    evals, evecs = torch.linalg.eigh(a + eps * eye)
    evals = evals.clamp_min(eps) ** (-1.0 / root)
    return ((evecs * evals.unsqueeze(-2)) @ evecs.transpose(-1, -2)).to(matrices.dtype)


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

    def _preconditioned(self, p: torch.Tensor, group: dict[str, Any]) -> bool:
        return p.ndim >= 2 and max(p.shape[0], p[0].numel()) <= group["skip_preconditioning_dim_size_gt"]

    def _init_state(self, p: torch.Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state = self.state[p]
        state["momentum"] = torch.zeros_like(p)
        # Adam statistics for Adam grafting, and for unpreconditioned parameters unless grafting
        # is SGD (then those parameters get SGD with momentum).
        if group["grafting"] == "adam" or (group["grafting"] == "none" and not self._preconditioned(p, group)):
            state["graft_v"] = torch.zeros_like(p)
        if self._preconditioned(p, group):
            m, n = matrix_view(p).shape
            blocks = block_slices(m, n, group["max_preconditioner_dim"])
            state["blocks"] = blocks
            state["L"] = [torch.zeros(r.stop - r.start, r.stop - r.start, dtype=p.dtype, device=p.device) for r, _ in blocks]
            state["R"] = [torch.zeros(c.stop - c.start, c.stop - c.start, dtype=p.dtype, device=p.device) for _, c in blocks]
            dtype = group["preconditioner_dtype"] or p.dtype
            state["PL"] = [torch.zeros_like(x, dtype=dtype) for x in state["L"]]
            state["PR"] = [torch.zeros_like(x, dtype=dtype) for x in state["R"]]
        return state

    @torch.no_grad()
    def _update_roots(self) -> None:
        """Recomputes every block's inverse roots: one batched eigh per (shape, dtype) group."""
        groups: dict[tuple[Any, ...], list[tuple[list[torch.Tensor], int, torch.Tensor, float, float]]] = {}
        for group in self.param_groups:
            beta2 = group["betas"][1]
            t = self._step
            correction = 1.0 - beta2**t if (group["use_bias_correction"] and beta2 < 1.0) else 1.0
            for p in group["params"]:
                state = self.state.get(p)
                if not state or "L" not in state:
                    continue
                for factors, root_name in (("L", "PL"), ("R", "PR")):
                    for i, f in enumerate(state[factors]):
                        key = (tuple(f.shape), f.dtype, f.device, group["epsilon"], group["inverse_root_dtype"])
                        groups.setdefault(key, []).append((state[root_name], i, f, correction, group["epsilon"]))
        for (_, _, _, eps, dtype), items in groups.items():
            stacked = torch.stack([f / c for _, _, f, c, _ in items])
            roots = inverse_root(stacked, eps, 4, dtype)
            for k, (target, i, _, _, _) in enumerate(items):
                target[i] = roots[k].to(target[i].dtype)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._step += 1
        t = self._step
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and not self.state[p]:
                    self._init_state(p, group)
                if p.grad is not None and "L" in self.state[p]:
                    self._accumulate_factors(p.grad, self.state[p], group["betas"][1])
        if t >= self._first_start() and (t - self._first_start()) % self._frequency() == 0:
            self._update_roots()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            filtered, directions = self._graft_directions(params, group, t)
            if t >= group["start_preconditioning_step"]:
                for p, m, direction in zip(params, filtered, directions):
                    if "L" in self.state[p]:
                        self._precondition(m, direction, self.state[p], group["grafting"] != "none")
            if group["weight_decay"] != 0.0:
                torch._foreach_mul_(params, 1.0 - group["lr"] * group["weight_decay"])
            torch._foreach_add_(params, directions, alpha=-group["lr"])
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "shampoo_step": self._step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        self._step = state_dict.pop("shampoo_step", 0)
        super().load_state_dict(state_dict)

    def _first_start(self) -> int:
        return min(g["start_preconditioning_step"] for g in self.param_groups)

    def _frequency(self) -> int:
        return min(g["precondition_frequency"] for g in self.param_groups)

    @staticmethod
    def _accumulate_factors(g: torch.Tensor, state: dict[str, Any], beta2: float) -> None:
        """L <- beta2 L + (1 - beta2) G G^T, R <- beta2 R + (1 - beta2) G^T G per block (sum if beta2 = 1)."""
        gm = matrix_view(g)
        decay, weight = (1.0, 1.0) if beta2 == 1.0 else (beta2, 1.0 - beta2)
        for (rs, cs), L, R in zip(state["blocks"], state["L"], state["R"]):
            gb = gm[rs, cs]
            L.addmm_(gb, gb.T, beta=decay, alpha=weight)
            R.addmm_(gb.T, gb, beta=decay, alpha=weight)

    def _graft_directions(self, params: list[torch.Tensor], group: dict[str, Any],
                          t: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The filtered gradients M and the grafted optimizer's directions A, in new tensors.

        M = beta1 M + (1 - beta1) G (Nesterov: beta1 M + (1 - beta1) G once more), / (1 - beta1^t);
        Adam: A = M / (sqrt(v / (1 - beta2^t)) + eps), v = beta2 v + (1 - beta2) G^2; SGD: A = M.
        """
        beta1 = group["betas"][0]
        grads = [p.grad for p in params if p.grad is not None]
        momenta = [self.state[p]["momentum"] for p in params]
        torch._foreach_lerp_(momenta, grads, 1.0 - beta1)
        if group["nesterov"]:
            filtered = list(torch._foreach_lerp(momenta, grads, 1.0 - beta1))
        else:
            filtered = list(torch._foreach_mul(momenta, 1.0))
        if beta1 > 0.0:
            torch._foreach_div_(filtered, 1.0 - beta1**t)
        adam = [i for i, p in enumerate(params) if "graft_v" in self.state[p]]
        if adam:
            b2 = group["grafting_beta2"]
            vs = [self.state[params[i]]["graft_v"] for i in adam]
            gs = [grads[i] for i in adam]
            torch._foreach_mul_(vs, b2)
            torch._foreach_addcmul_(vs, gs, gs, value=1.0 - b2)
            denom = torch._foreach_div(vs, 1.0 - b2**t)
            torch._foreach_sqrt_(denom)
            torch._foreach_add_(denom, group["grafting_epsilon"])
            graft = list(filtered)
            for i, a in zip(adam, torch._foreach_div([filtered[i] for i in adam], denom)):
                graft[i] = a
            return filtered, graft
        return filtered, filtered  # SGD grafting: A = M (and no grafting uses M alone)

    @staticmethod
    def _precondition(filtered: torch.Tensor, direction: torch.Tensor, state: dict[str, Any], graft: bool) -> None:
        """Per block, in place: D = P_L M P_R, rescaled to the grafted direction's norm if `graft`.

        `direction` holds the grafted direction A on entry (it may be M itself); each block is
        read before it is overwritten by D.
        """
        dm = matrix_view(direction)
        momentum = matrix_view(filtered)
        for (rs, cs), PL, PR in zip(state["blocks"], state["PL"], state["PR"]):
            d = (PL @ momentum[rs, cs].to(PL.dtype) @ PR).to(dm.dtype)
            if graft:
                # The clamp keeps a zero block (no gradient yet) finite, without a host sync.
                d.mul_(torch.linalg.norm(dm[rs, cs]) / torch.linalg.norm(d).clamp_min(1e-30))
            dm[rs, cs] = d
