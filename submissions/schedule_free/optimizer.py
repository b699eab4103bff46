"""Schedule-Free AdamW (Defazio et al. 2024, "The Road Less Scheduled", Alg. 1 with Adam).

Three sequences share one parameter tensor. The model holds y, where gradients are taken; the
optimizer keeps z; the evaluation point x is implicit, x = (y - (1 - beta1) z) / beta1. Per step
t (from 1), with lr_t = lr * min(1, t / warmup_steps):

    v   <- beta2 v + (1 - beta2) g^2,         d = g / (sqrt(v / (1 - beta2^t)) + eps) + wd * y
    c   =  w_t / sum_{i<=t} w_i,              w_t = t^r * (max_{i<=t} lr_i)^weight_lr_power
    z   <- z - lr_t d
    x   <- (1 - c) x + c z                    (so x is a weighted average of the z's)
    y   =  (1 - beta1) z + beta1 x

`eval_mode()` puts x in the parameters (for evaluation); `train_mode()` puts y back. No
schedule is needed beyond the built-in warmup: the averaging replaces the decay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


class AdamWScheduleFree(torch.optim.Optimizer):
    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 2.5e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, warmup_steps=warmup_steps,
                        r=r, weight_lr_power=weight_lr_power, k=0, lr_max=-1.0, weight_sum=0.0, train_mode=True)
        super().__init__(params, defaults)

    @torch.no_grad()
    def eval_mode(self) -> None:
        """Parameters y -> x (x = y + (1 - 1/beta1)(z - y) is the lerp towards z)."""
        for group in self.param_groups:
            if group["train_mode"]:
                beta1 = group["betas"][0]
                for p in group["params"]:
                    z = self.state[p].get("z")
                    if z is not None:
                        p.lerp_(z, 1.0 - 1.0 / beta1)
                group["train_mode"] = False

    @torch.no_grad()
    def train_mode(self) -> None:
        """Parameters x -> y (y = x + (1 - beta1)(z - x))."""
        for group in self.param_groups:
            if not group["train_mode"]:
                beta1 = group["betas"][0]
                for p in group["params"]:
                    z = self.state[p].get("z")
                    if z is not None:
                        p.lerp_(z, 1.0 - beta1)
                group["train_mode"] = True

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if not group["train_mode"]:
                raise RuntimeError("AdamWScheduleFree.step() in eval mode: call train_mode() first.")
            beta1, beta2 = group["betas"]
            k = group["k"]
            warmup = group["warmup_steps"]
            schedule = (k + 1) / warmup if k < warmup else 1.0
            lr = group["lr"] * schedule
            group["lr_max"] = lr_max = max(lr, group["lr_max"])
            weight = ((k + 1) ** group["r"]) * (lr_max ** group["weight_lr_power"])
            group["weight_sum"] = weight_sum = group["weight_sum"] + weight
            c = weight / weight_sum if weight_sum != 0 else 0.0
            bias_correction2 = 1.0 - beta2 ** (k + 1)
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if not self.state[p]:
                    self.state[p]["z"] = p.detach().clone()
                    self.state[p]["exp_avg_sq"] = torch.zeros_like(p)
            if params:
                self._update(params, group, lr, c, bias_correction2)
            group["k"] = k + 1
        return loss

    def _update(self, ys: list[torch.Tensor], group: dict[str, Any], lr: float, c: float,
                bias_correction2: float) -> None:
        """One step of Alg. 1 on every parameter of a group at once (foreach math, y in place).

        y_{t+1} follows from y_t without storing x: x_{t+1} = (1 - c) x_t + c z_{t+1} and
        y = (1 - beta1) z + beta1 x give y_{t+1} = lerp(y_t, z_t, c) + lr (beta1 (1 - c) - 1) d.
        """
        beta1, beta2 = group["betas"]
        grads = [p.grad for p in ys if p.grad is not None]
        zs = [self.state[p]["z"] for p in ys]
        vs = [self.state[p]["exp_avg_sq"] for p in ys]
        torch._foreach_mul_(vs, beta2)
        torch._foreach_addcmul_(vs, grads, grads, value=1.0 - beta2)
        denom = torch._foreach_div(vs, bias_correction2)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, group["eps"])
        d = torch._foreach_div(grads, denom)
        if group["weight_decay"] != 0.0:
            torch._foreach_add_(d, ys, alpha=group["weight_decay"])
        torch._foreach_lerp_(ys, zs, c)
        torch._foreach_add_(ys, d, alpha=lr * (beta1 * (1.0 - c) - 1.0))
        torch._foreach_add_(zs, d, alpha=-lr)

    def x_point(self, p: torch.Tensor) -> torch.Tensor:
        """The evaluation point x of a parameter (in train mode), without changing it."""
        for group in self.param_groups:
            if any(q is p for q in group["params"]):
                beta1 = group["betas"][0]
                z = self.state[p]["z"]
                return torch.lerp(p.detach(), z, 1.0 - 1.0 / beta1)
        raise KeyError("parameter not managed by this optimizer")
