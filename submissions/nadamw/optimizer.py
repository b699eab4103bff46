"""NAdamW as AlgoPerf's baselines define it (not `torch.optim.NAdam`).

Adam with Nesterov momentum and decoupled weight decay (Dozat 2016; Loshchilov & Hutter 2019).
Per step t, with gradient g:
    p <- p (1 - lr wd)
    m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
    m_nesterov = b1 m + (1 - b1) g
    p <- p - lr / (1 - b1^t) * m_nesterov / (sqrt(v / (1 - b2^t)) + eps)
`torch.optim.NAdam` instead uses Dozat's momentum-decay schedule, which AlgoPerf does not.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch


class NAdamW(torch.optim.Optimizer):
    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                g = p.grad
                m, v = state["exp_avg"], state["exp_avg_sq"]
                p.mul_(1.0 - lr * wd)
                m.lerp_(g, 1.0 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
                nesterov = m.mul(beta1).add_(g, alpha=1.0 - beta1)
                denom = (v.sqrt() / math.sqrt(1.0 - beta2**t)).add_(eps)
                p.addcdiv_(nesterov, denom, value=-lr / (1.0 - beta1**t))
        return loss
