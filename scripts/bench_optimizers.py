"""Whole-cycle speed of the second-order baselines against AdamW and public implementations (issue 19).

One process, one model, one batch and the same data for every optimizer. Each optimizer trains its
own copy of the model; they take their steps in turn (step i of every optimizer, then step i + 1),
so a shared machine's changing load hits all alike. A round is one whole cycle of `CYCLE` = 100
steps, the least common multiple of the periodic work: Shampoo's root recomputation (every 100
steps) and K-FAC's inverses (every 50; factors every 10). Every window of 100 consecutive steps
holds exactly one recomputation of Shampoo's roots, two of K-FAC's inverses and ten factor updates,
for ours and for each library (their schedules have the same periods).

Printed last, per optimizer of ours (`shampoo`, `kfac`, `schedule_free`, `kfac_empirical`):
- `<name>_step_ratio=`: its time for the cycles / AdamW's time for the same steps;
- `<name>_flop_ratio=`: the FLOPs of its cycle / AdamW's (torch.utils.flop_counter: matrix
  products and convolutions; plus the dense factorisations, which it does not count, at their
  textbook costs, `FACTORISATION_FLOPS`), composed from FLOP-counted pieces: a typical step, a
  factor step, one recomputation of the roots / inverses;
- `<library>_flop_ratio>=`: the same for a library, from its typical step's FLOPs times CYCLE: a
  lower bound (its periodic work, factor updates and factorisations, is not counted);
- `<ours>_vs_<library>=`: our cycle time / the library's, configured as close to ours as it allows
  (`LIBRARIES` says how, `DIFFERENCES` what remains different).

Models (`--model`): `resnet18`, the cifar workload's ResNet-18 at batch 32 on 32 x 32 inputs; and
`transformer`, a stack of the WMT workload's encoder layers (width 1024, 16 heads, feed-forward
1024, pre-LN) on 16 x 128 tokens with a 1024-way softmax head (the WMT model's 32,000-word tied
embedding would make K-FAC's output factor 32,000 x 32,000, which no implementation inverts, and
Shampoo skips it as wider than 24,576).

On a GPU (`--device cuda`) every timed interval starts and ends with torch.cuda.synchronize(), as
torch documents for timing asynchronous CUDA work; the same lines are printed.

    python scripts/bench_optimizers.py --model resnet18 --rounds 2
    python scripts/bench_optimizers.py --model transformer --rounds 1
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import importlib.util
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

CYCLE = 100
SHAMPOO = dict(lr=2e-3, betas=(0.9, 0.995), epsilon=1e-8, weight_decay=0.05, precondition_frequency=100,
               start_preconditioning_step=1, max_preconditioner_dim=1024, grafting="adam",
               grafting_beta2=0.995, grafting_epsilon=1e-8, nesterov=True)
KFAC = dict(lr=1e-3, damping=1e-3, momentum=0.9, weight_decay=0.01, factor_decay=0.95, inverse_frequency=50,
            approximation="expand")
FACTOR_EVERY = 10
ADAMW = dict(lr=2e-3, betas=(0.9, 0.995), eps=1e-8, weight_decay=0.05)

# Remaining differences between each library's configuration and ours (same model, batch, data).
DIFFERENCES = {
    "po_shampoo": "pytorch-optimizer Shampoo: one factor per tensor dimension (a conv kernel gets four, "
                  "root -1/8), no blocking, no grafting, heavy-ball momentum on the preconditioned update, "
                  "roots by SVD (preconditioning_compute_steps=100, matrix_eps=1e-8), statistics summed "
                  "(no EMA); decoupled weight decay as ours",
    "po_scalable_shampoo": "pytorch-optimizer ScalableShampoo: small dimensions merged (a 3x3 conv kernel "
                           "512x512x3x3 -> 512x512x9, three factors, root -1/6) instead of our matrix view, "
                           "blocks of 1024, roots by batched SVD (use_svd=True; ours: eigh), RMSProp grafting "
                           "without bias correction (ours: Adam), momentum on the preconditioned update "
                           "(ours: on the gradient), statistics EMA 0.995 initialised at 1e-8 I",
    "hb_soap": "heavyball SOAP (heavyball has no plain Shampoo): Adam in the eigenbasis of the Shampoo "
               "factors, eigenbasis refreshed every 100 steps by one power iteration + QR (ours: eigh "
               "and a -1/4 root); dimensions above 1024 are left unpreconditioned instead of blocked; "
               "run eagerly (heavyball.utils.compile_mode=None: its default max-autotune compile takes "
               "minutes per shape on a CPU; --heavyball-compile keeps it)",
    "asdl_kfac": "ASDL KfacGradientMaker (MC Fisher, 1 sample; curvature every 10, inverses every 50, "
                 "damping 1e-3 pi-split, EMA 0.95) + SGD momentum 0.9 with decoupled weight decay and Adam "
                 "elsewhere, as ours; the bias is preconditioned by B alone (ours: a column of W under "
                 "B and A), BatchNorm/LayerNorm left to Adam (ignore_modules), inverses by Cholesky per "
                 "layer",
    "singd": "SINGD (inverse-free, kfac_like=True, dense structures, T=10, lr_cov 1e-2, alpha1 0.5): empirical "
             "Fisher only, so compared with our K-FAC with fisher_type='empirical' (kfac_empirical); no "
             "separate inverse period (its preconditioner update every 10 steps is all its periodic work)",
}
COMPARISONS = [("shampoo", "po_shampoo"), ("shampoo", "po_scalable_shampoo"), ("shampoo", "hb_soap"),
               ("kfac", "asdl_kfac"), ("kfac_empirical", "singd")]
OURS = ["shampoo", "kfac", "schedule_free", "kfac_empirical"]

# Golub & Van Loan, Matrix Computations (4th ed.): symmetric QR with eigenvectors ~9 n^3 (sec. 8.3),
# LU-based inverse 2 n^3, Cholesky n^3 / 3 (sec. 4.2), inverse from the Cholesky factor 2 n^3 / 3.
FACTORISATION_COST = {"eigh": 9.0, "inv": 2.0, "cholesky": 1.0 / 3.0, "cholesky_inverse": 2.0 / 3.0}


def _batched_cube(shape: Any, cost: float) -> int:
    n = shape[-1]
    batch = 1
    for d in shape[:-2]:
        batch *= d
    return int(cost * batch * n**3)


def _inplace_matmul_flops(self_shape: Any, a_shape: Any, b_shape: Any, *args: Any, **kwargs: Any) -> int:
    """addmm_ / baddbmm_: torch counts the out-of-place forms only."""
    batch = a_shape[0] if len(a_shape) == 3 else 1
    return 2 * batch * a_shape[-2] * a_shape[-1] * b_shape[-1]


FACTORISATION_FLOPS = {
    torch.ops.aten.addmm_: _inplace_matmul_flops,
    torch.ops.aten.baddbmm_: _inplace_matmul_flops,
    torch.ops.aten._linalg_eigh: lambda a, *args, **kw: _batched_cube(a, FACTORISATION_COST["eigh"]),
    torch.ops.aten.linalg_inv_ex: lambda a, *args, **kw: _batched_cube(a, FACTORISATION_COST["inv"]),
    torch.ops.aten.linalg_cholesky_ex: lambda a, *args, **kw: _batched_cube(a, FACTORISATION_COST["cholesky"]),
    torch.ops.aten.cholesky_inverse: lambda a, *args, **kw: _batched_cube(a, FACTORISATION_COST["cholesky_inverse"]),
}


def count_flops(fn: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=FACTORISATION_FLOPS) as counter:
        fn()
    return counter.get_total_flops()


# ---- models ------------------------------------------------------------------------------------
class BlockStack(nn.Module):
    """The WMT workload's encoder layers, a final norm and a softmax head; logits as (tokens, classes)."""

    def __init__(self, layers: int, d: int = 1024, classes: int = 1024) -> None:
        super().__init__()
        from workloads.wmt.torch_workload import TransformerEncoderLayer

        self.layers = nn.ModuleList(
            TransformerEncoderLayer(d, 16, 1024, "relu", False, 1e-6, 1.0, True) for _ in range(layers))
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, None, 0.0)
        return self.head(self.norm(x)).flatten(0, 1)


def build(model: str, layers: int, device: torch.device) -> tuple[nn.Module, torch.Tensor, torch.Tensor, str]:
    """(model, inputs, targets, SINGD's loss_average) with a fixed seed."""
    torch.manual_seed(0)
    if model == "resnet18":
        from workloads.cifar.torch_workload import ResNet18

        net, x = ResNet18(num_classes=10), torch.randn(32, 3, 32, 32)
        y, average = torch.randint(0, 10, (32,)), "batch"
    else:
        net, x = BlockStack(layers), torch.randn(16, 128, 1024)
        y, average = torch.randint(0, 1024, (16 * 128,)), "batch+sequence"
    return net.to(device), x.to(device), y.to(device), average


def kfac_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def split_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(Linear and Conv2d parameters, the others): what K-FAC preconditions, what Adam trains."""
    inside = {id(p) for m in kfac_layers(model) for p in m.parameters(recurse=False)}
    params = list(model.parameters())
    return [p for p in params if id(p) in inside], [p for p in params if id(p) not in inside]


# ---- trainers ----------------------------------------------------------------------------------
class Trainer:
    """One optimizer on its own copy of the model: forward, cross-entropy, backward, step."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        self.model, self.x, self.y = model, x, y
        self.optimizer: Any = None

    def step(self, t: int) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(self.model(self.x), self.y).backward()
        self.optimizer.step()

    def cycle_flops(self, t: int) -> int:
        """FLOPs of CYCLE steps from step t (ours only)."""
        return CYCLE * count_flops(lambda: self.step(t))


class AdamW(Trainer):
    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **_: Any) -> None:
        super().__init__(model, x, y)
        self.optimizer = torch.optim.AdamW(model.parameters(), **ADAMW)


def our_optimizer(folder: str, name: str, before: str | None) -> Any:
    """Our optimizer class: this checkout's, or that of another checkout of the repository
    (`--before DIR`: the same benchmark run times the code before a change beside the code after it)."""
    if before is None:
        return getattr(importlib.import_module(f"submissions.{folder}.optimizer"), name)
    path = Path(before) / "submissions" / folder / "optimizer.py"
    spec = importlib.util.spec_from_file_location(f"before_{folder}_optimizer", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--before {before}: no {path}; give the root of another checkout of this repository")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return getattr(module, name)


class OurShampoo(Trainer):
    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, before: str | None = None,
                 **_: Any) -> None:
        super().__init__(model, x, y)
        self.optimizer = our_optimizer("shampoo", "Shampoo", before)(model.parameters(), **SHAMPOO)

    def cycle_flops(self, t: int) -> int:
        # One root recomputation per cycle, on top of CYCLE steps that only accumulate and apply.
        return CYCLE * count_flops(lambda: self.step(t)) + count_flops(self.optimizer._update_roots)


class OurScheduleFree(Trainer):
    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, before: str | None = None,
                 **_: Any) -> None:
        super().__init__(model, x, y)
        self.optimizer = our_optimizer("schedule_free", "AdamWScheduleFree", before)(
            model.parameters(), lr=2.5e-3, betas=(0.9, 0.9955), eps=1e-8, weight_decay=0.08, warmup_steps=0,
            r=0.75, weight_lr_power=2.0)


class OurKFAC(Trainer):
    """As submissions/kfac/pytorch_submission.py steps it: factors every FACTOR_EVERY steps."""

    fisher = "mc"

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, before: str | None = None,
                 **_: Any) -> None:
        super().__init__(model, x, y)
        self.optimizer = our_optimizer("kfac", "KFAC", before)(model, fisher_type=self.fisher, **KFAC)

    def step(self, t: int) -> None:
        kfac = self.optimizer
        kfac.zero_grad(set_to_none=True)
        update = t % FACTOR_EVERY == 0
        with kfac.capture(update):
            logits = self.model(self.x)
            loss = F.cross_entropy(logits, self.y)
            if update and kfac.fisher_type != "empirical":
                kfac.fisher_backward(logits, "softmax_cross_entropy")
            loss.backward()
        kfac.step()

    def cycle_flops(self, t: int) -> int:
        typical = t + 1 if (t + 1) % FACTOR_EVERY else t + 2
        factor_step = (t // FACTOR_EVERY + 1) * FACTOR_EVERY
        n_factor = CYCLE // FACTOR_EVERY
        n_inverse = CYCLE // self.optimizer.inverse_frequency
        damping = self.optimizer.param_groups[0]["damping"]
        return ((CYCLE - n_factor) * count_flops(lambda: self.step(typical))
                + n_factor * count_flops(lambda: self.step(factor_step))
                + n_inverse * count_flops(lambda: self.optimizer._update_inverses(damping)))


class OurKFACEmpirical(OurKFAC):
    fisher = "empirical"


class PytorchOptimizerShampoo(Trainer):
    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **_: Any) -> None:
        from pytorch_optimizer import Shampoo

        super().__init__(model, x, y)
        self.optimizer = Shampoo(model.parameters(), lr=SHAMPOO["lr"], momentum=0.9,
                                 weight_decay=SHAMPOO["weight_decay"], weight_decouple=True,
                                 preconditioning_compute_steps=100, matrix_eps=1e-8)


class PytorchOptimizerScalableShampoo(Trainer):
    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **_: Any) -> None:
        from pytorch_optimizer import ScalableShampoo
        from pytorch_optimizer.optimizer.utils.graft import LayerWiseGrafting

        super().__init__(model, x, y)
        self.optimizer = ScalableShampoo(
            model.parameters(), lr=SHAMPOO["lr"], betas=SHAMPOO["betas"], moving_average_for_momentum=True,
            weight_decay=SHAMPOO["weight_decay"], decoupled_weight_decay=True, start_preconditioning_step=1,
            preconditioning_compute_steps=100, block_size=1024, no_preconditioning_for_layers_with_dim_gt=24576,
            graft_type=LayerWiseGrafting.RMSPROP, nesterov=True, diagonal_eps=1e-8, matrix_eps=1e-8, use_svd=True)


class HeavyballSOAP(Trainer):
    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, compile: bool = False, **_: Any) -> None:
        import heavyball

        if not compile:
            heavyball.utils.compile_mode = None
        super().__init__(model, x, y)
        self.optimizer = heavyball.SOAP(model.parameters(), lr=SHAMPOO["lr"], betas=SHAMPOO["betas"],
                                        shampoo_beta=0.995, eps=1e-8, weight_decay=SHAMPOO["weight_decay"],
                                        precondition_frequency=100, max_precond_dim=1024)


class SGDWithAdam:
    """SGD with momentum and decoupled weight decay on K-FAC's layers, Adam on the rest (as ours)."""

    def __init__(self, kfac_params: list[nn.Parameter], others: list[nn.Parameter]) -> None:
        self.params = kfac_params
        self.sgd = torch.optim.SGD(kfac_params, lr=KFAC["lr"], momentum=KFAC["momentum"])
        self.adam = torch.optim.Adam(others, lr=KFAC["lr"]) if others else None

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.sgd.zero_grad(set_to_none)
        if self.adam is not None:
            self.adam.zero_grad(set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        torch._foreach_mul_(self.params, 1.0 - KFAC["lr"] * KFAC["weight_decay"])
        self.sgd.step()
        if self.adam is not None:
            self.adam.step()


class ASDLKFAC(Trainer):
    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **_: Any) -> None:
        import asdl.operations.operation
        import asdl.precondition.natural_gradient
        from asdl import KfacGradientMaker, PreconditioningConfig

        # ASDL marks its phases with torch.cuda.nvtx ranges unconditionally; a CPU build of torch
        # raises on them, so they become no-ops here (they only label profiler timelines).
        for module in (asdl.operations.operation, asdl.precondition.natural_gradient):
            module.nvtx = SimpleNamespace(range=lambda *args, **kwargs: contextlib.nullcontext())
        super().__init__(model, x, y)
        config = PreconditioningConfig(
            damping=KFAC["damping"], ema_decay=1.0 - KFAC["factor_decay"], curvature_upd_interval=FACTOR_EVERY,
            preconditioner_upd_interval=KFAC["inverse_frequency"], data_size=y.shape[0],
            ignore_modules=[nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm])
        self.maker = KfacGradientMaker(model, config, fisher_type="fisher_mc", loss_type="cross_entropy")
        self.optimizer = SGDWithAdam(*split_params(model))

    def step(self, t: int) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.maker.setup_model_call(self.model, self.x)
        self.maker.setup_loss_call(F.cross_entropy, logits, self.y)
        self.maker.forward_and_backward()
        self.optimizer.step()


class SINGDWithAdam:
    """SINGD on K-FAC's layers (its own momentum and weight decay), Adam on the rest (as ours)."""

    def __init__(self, model: nn.Module, loss_average: str) -> None:
        from singd.optim.optimizer import SINGD as SINGDOptimizer

        kfac_params, others = split_params(model)
        self.singd = SINGDOptimizer(model, params=kfac_params, lr=KFAC["lr"], momentum=KFAC["momentum"],
                                    damping=KFAC["damping"], alpha1=0.5, weight_decay=KFAC["weight_decay"],
                                    T=FACTOR_EVERY, loss_average=loss_average, lr_cov=1e-2,
                                    structures=("dense", "dense"), kfac_approx="expand", kfac_like=True,
                                    warn_unsupported=False)
        self.adam = torch.optim.Adam(others, lr=KFAC["lr"]) if others else None

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.singd.zero_grad(set_to_none)
        if self.adam is not None:
            self.adam.zero_grad(set_to_none)

    def step(self) -> None:
        self.singd.step()
        if self.adam is not None:
            self.adam.step()


class SINGD(Trainer):
    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_average: str = "batch",
                 **_: Any) -> None:
        super().__init__(model, x, y)
        self.optimizer = SINGDWithAdam(model, loss_average)


TRAINERS: dict[str, type[Trainer]] = {
    "adamw": AdamW, "shampoo": OurShampoo, "kfac": OurKFAC, "schedule_free": OurScheduleFree,
    "kfac_empirical": OurKFACEmpirical, "po_shampoo": PytorchOptimizerShampoo,
    "po_scalable_shampoo": PytorchOptimizerScalableShampoo, "hb_soap": HeavyballSOAP, "asdl_kfac": ASDLKFAC,
    "singd": SINGD,
}


# ---- the benchmark -----------------------------------------------------------------------------
@contextlib.contextmanager
def checkout_of(name: str, route: str = "off") -> Any:
    """While a `<ours>_before` trainer steps: no convolution route for products (its optimizer
    module is the other checkout's, but `submissions.gram` is this one's, whose only change since
    the route came is taking it; see submissions/matmul.py), or with `route="gram-off"` none for
    Gram products only."""
    if not name.endswith("_before"):
        yield
        return
    from submissions import matmul

    switch = "GRAM_ROUTE" if route == "gram-off" else "ENABLED"
    setattr(matmul, switch, False)
    try:
        yield
    finally:
        setattr(matmul, switch, True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_step(trainer: Trainer, t: int, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    trainer.step(t)
    sync(device)
    return time.perf_counter() - start


# (rows, columns) of the Gram products the baselines compute on the two models: Shampoo's blocks
# (L and R of 512 x 1024, 256 x 1024, 128 x 1024 blocks; 1024 x 1024), K-FAC's conv factors
# (in x N R, out x N R) of ResNet-18 layers 1 and 4, the transformer's.
GRAM_SHAPES = [(512, 1024), (1024, 512), (256, 1024), (1024, 256), (1024, 128), (128, 1024), (1024, 1024),
               (576, 32768), (4608, 512), (1024, 2048), (3072, 2048)]


def bench_gram(rounds: int) -> None:
    """Time of accumulating the lower band triangle of X X^T over that of the full product, per
    shape, interleaved, best of `rounds`: plain products (submissions/gram.py) in bands of 2, 4 and
    8 and as gram.py's rule splits them; the convolution route (submissions/matmul.py) in its
    bands of at least 2 MIN_ROWS rows and in bands of MIN_ROWS. The evidence for gram.BANDS, gram.MIN_BAND_ROWS and
    matmul.band_edges."""
    from submissions import gram, matmul

    variants: dict[str, Callable[[torch.Tensor, torch.Tensor], Any]] = {}
    for bands in (2, 4, 8):
        variants[f"{bands} bands"] = lambda out, x, b=bands: gram.accumulate_lower_gram_(
            out, x, band_rows=max(1, x.shape[0] // b))
    variants["rule"] = lambda out, x: gram.accumulate_lower_gram_(out, x)  # the route off: plain products
    variants["conv"] = lambda out, x: matmul.accumulate_lower_gram_conv_(out, x, 1.0, 1.0)
    variants["conv half rows"] = lambda out, x: matmul.accumulate_lower_gram_conv_(out, x, 1.0, 1.0,
                                                                                    min_rows=matmul.MIN_ROWS)
    ratios: dict[str, list[float]] = {v: [] for v in variants}
    saved = matmul.ENABLED
    for n, m in GRAM_SHAPES:
        x, out = torch.randn(n, m), torch.zeros(n, n)
        here = {v: fn for v, fn in variants.items() if n >= matmul.MIN_ROWS or not v.startswith("conv")}
        times: dict[str, list[float]] = {v: [] for v in ["full", *here]}
        for _ in range(rounds):
            start = time.perf_counter()
            out.addmm_(x, x.T)
            times["full"].append(time.perf_counter() - start)
            for name, fn in here.items():
                matmul.ENABLED = name.startswith("conv")
                start = time.perf_counter()
                fn(out, x)
                times[name].append(time.perf_counter() - start)
        matmul.ENABLED = saved
        best = min(times["full"])
        rule = gram.band_edges(n, None, m)
        line = ", ".join(f"{v} {min(times[v]) / best:.2f}" for v in here)
        print(f"gram {n} x {m}: full {best * 1e3:.2f} ms; banded / full: {line} (rule: {len(rule) - 1} bands; "
              f"conv: {len(matmul.band_edges(n)) - 1}, half rows: {len(matmul.band_edges(n, matmul.MIN_ROWS)) - 1})")
        for v in here:
            ratios[v].append(min(times[v]) / best)
    for v in variants:
        print(f"gram_{v.replace(' ', '_')}_ratio={math.exp(sum(map(math.log, ratios[v])) / len(ratios[v])):.3f}")


# (rows, inner, columns) of x @ w^T products: Shampoo's blocks (M P_R, P_L T), K-FAC's sandwiches
# and factors, and rows below submissions/matmul.py's MIN_ROWS.
MATMUL_SHAPES = [(1024, 512, 1024), (512, 1024, 512), (512, 512, 1024), (256, 512, 1024), (1024, 1024, 1024),
                 (576, 32768, 576), (128, 1024, 1024), (64, 576, 64)]


def bench_matmul(rounds: int) -> None:
    """GFLOP/s of x @ w^T as torch's product (F.linear) and as a 1 x 1 convolution of a batch of
    1, 4, 8, 16 or 32 channels-last images: the evidence for submissions/matmul.py's CONV_BATCH
    and MIN_ROWS. Best of `rounds`, interleaved."""
    def conv(x: torch.Tensor, w: torch.Tensor, batch: int) -> torch.Tensor:
        p, n = x.shape
        return F.conv2d(x.view(batch, p // batch, 1, n).permute(0, 3, 1, 2), w.view(w.shape[0], n, 1, 1))

    batches = [1, 4, 8, 16, 32]
    speedups = []
    for p, n, m in MATMUL_SHAPES:
        x, w = torch.randn(p, n), torch.randn(m, n)
        best = {b: math.inf for b in [0] + batches}
        for _ in range(rounds):
            for b in best:
                start = time.perf_counter()
                F.linear(x, w) if b == 0 else conv(x, w, b)
                best[b] = min(best[b], time.perf_counter() - start)
        rate = {b: 2 * p * n * m / t / 1e9 for b, t in best.items()}
        line = ", ".join(f"batch {b} {rate[b]:.0f}" for b in batches)
        print(f"matmul {p} x {n} x {m}: torch {rate[0]:.0f} GFLOP/s; as a 1x1 convolution: {line}")
        if p >= 256:
            speedups.append(best[0] / best[16])
    print(f"conv_matmul_speedup={math.exp(sum(map(math.log, speedups)) / len(speedups)):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["resnet18", "transformer"], default="resnet18")
    parser.add_argument("--layers", type=int, default=2, help="encoder layers of the transformer stack")
    parser.add_argument("--rounds", type=int, default=2, help="whole cycles of CYCLE steps per optimizer")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    parser.add_argument("--optimizers", default=",".join(TRAINERS),
                        help=f"comma-separated, adamw first; of {', '.join(TRAINERS)}")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (CPU)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--heavyball-compile", action="store_true",
                        help="keep heavyball's default torch.compile (max-autotune)")
    parser.add_argument("--cycle", type=int, default=CYCLE,
                        help="steps per round; anything but 100 breaks the whole-cycle figures (smoke tests)")
    parser.add_argument("--before", metavar="DIR",
                        help="also time our optimizers as another checkout of the repository at DIR has them "
                             "(e.g. `git worktree add DIR <commit>`), as <name>_before")
    parser.add_argument("--before-route", choices=["off", "gram-off"], default="off",
                        help="while a <name>_before steps: no convolution route for products (off), or "
                             "none for Gram products only (gram-off); --before <this checkout> times the route")
    parser.add_argument("--gram", action="store_true",
                        help="instead: time banded lower-triangle Gram products against full ones")
    parser.add_argument("--matmul", action="store_true",
                        help="instead: time products as torch's matmul and as 1x1 convolutions")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.matmul:
        bench_matmul(max(3, args.rounds))
        return
    if args.gram:
        bench_gram(max(3, args.rounds))
        return
    names = args.optimizers.split(",")
    unknown = [n for n in names if n not in TRAINERS]
    if unknown or names[0] != "adamw":
        raise SystemExit(f"--optimizers {args.optimizers!r}: expected adamw first, then any of {', '.join(TRAINERS)}")
    steps = args.cycle
    device = torch.device(args.device)
    base, x, y, average = build(args.model, args.layers, device)
    if args.before:
        names += [f"{n}_before" for n in names if n in OURS]
    trainers = {n: TRAINERS[n.removesuffix("_before")](
        copy.deepcopy(base), x, y, loss_average=average, compile=args.heavyball_compile,
        before=args.before if n.endswith("_before") else None) for n in names}
    print(f"{args.model}: {sum(p.numel() for p in base.parameters()):,} parameters, inputs {tuple(x.shape)}, "
          f"{args.threads} threads, device {device}", file=sys.stderr)
    for n in names:
        if n in DIFFERENCES:
            print(f"  {n}: {DIFFERENCES[n]}", file=sys.stderr)
    for t in range(args.warmup):
        for n, trainer in trainers.items():
            with checkout_of(n, args.before_route):
                trainer.step(t)
    totals = {n: [] for n in names}
    t0 = args.warmup
    for r in range(args.rounds):
        seconds = dict.fromkeys(names, 0.0)
        for t in range(t0 + r * steps, t0 + (r + 1) * steps):
            for n, trainer in trainers.items():
                with checkout_of(n, args.before_route):
                    seconds[n] += timed_step(trainer, t, device)
        for n in names:
            totals[n].append(seconds[n])
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {s:.1f} s" for n, s in seconds.items()),
              file=sys.stderr, flush=True)
    for n, trainer in trainers.items():
        bad = [name for name, p in trainer.model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            print(f"warning: {n} has non-finite parameters ({bad[0]}, ...)", file=sys.stderr)
    t_next = t0 + args.rounds * steps
    ours = [n for n in names if n.removesuffix("_before") in OURS]
    libraries = [n for n in names if n != "adamw" and n not in ours]
    flops = {}
    for n in ["adamw", *ours, *libraries]:
        with checkout_of(n, args.before_route):
            flops[n] = trainers[n].cycle_flops(t_next)
    total = {n: sum(v) for n, v in totals.items()}
    for n in names:
        print(f"{n}: {total[n] / (args.rounds * steps) * 1e3:.1f} ms/step over {args.rounds} cycle(s) of "
              f"{steps} steps; per round " + ", ".join(f"{s:.1f}" for s in totals[n]) + " s")
    for n in ours:
        print(f"{n}_step_ratio={total[n] / total['adamw']:.3f}")
        print(f"{n}_flop_ratio={flops[n] / flops['adamw']:.3f}")
    for n in libraries:
        print(f"{n}_flop_ratio>={flops[n] / flops['adamw']:.3f}")
    for mine, library in COMPARISONS:
        for n in (f"{mine}_before", mine):
            if n in trainers and library in trainers:
                print(f"{n}_vs_{library}={total[n] / total[library]:.3f}")


if __name__ == "__main__":
    main()
