"""Every initial parameter of every workload and variant is drawn as the reference draws it.

The expected distributions are the reference's initialisers (mlcommons/algorithmic-efficiency,
PyTorch models) written here as closed forms of the parameter's shape, never taken from the code
under test:

- LeCun normal (`init_utils.pytorch_default_init`): N(0, s^2) truncated at +-2 s,
  s = sqrt(1 / fan_in) / 0.87962566103423978, so its own std is s * std(unit normal truncated at
  +-2) (scipy's `truncnorm`), i.e. sqrt(1 / fan_in);
- Xavier uniform: U(+-sqrt(6 / (fan_in + fan_out)));
- PyTorch's defaults where the reference leaves a layer alone: Linear / Conv weight and bias
  U(+-1 / sqrt(fan_in)), LSTM U(+-1 / sqrt(hidden)), Embedding N(0, 1), norms 1 and 0;
- fan_in = shape[1] x receptive field, fan_out = shape[0] x receptive field (torch's convention,
  which the reference uses, also for transposed convolutions).

Each workload's model is built once by its own `init_model_fn` (seed 0) and every parameter must
match a rule: its bounds exactly, its mean and std within six standard errors of the sample
statistic (of an evenly spaced sample of 2^20 values in the largest tensors). A parameter no
rule names fails the test. Criteo and WMT are built with a smaller vocabulary (same layer code; the
embedding scale follows the vocabulary in the closed form), WMT with one encoder and one decoder
layer of full width, a sample of its six identical layers each.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from scipy import stats
from torch import nn

from algoperf.random_utils import prng_key
from workloads import registry

LECUN_CORRECTION = 0.87962566103423978  # the reference's divisor of the LeCun std
TRUNCATED_STD = float(stats.truncnorm(-2.0, 2.0).std())  # std of N(0, 1) truncated at +-2
TRUNCATED_KURTOSIS = float(stats.truncnorm(-2.0, 2.0).stats(moments="k")) + 3.0
SMALL_VOCAB = {"criteo1tb": 4096, "wmt": 1024}


@dataclass(frozen=True)
class Const:
    value: float

    def problems(self, w: torch.Tensor) -> list[str]:
        bad = int((w != self.value).sum())
        return [f"{bad} of {w.numel()} values differ from {self.value}"] if bad else []


@dataclass(frozen=True)
class Spread:
    """A zero-centred or uniform distribution: its mean, std, kurtosis and hard bounds."""

    mean: float
    std: float
    kurtosis: float
    low: float = -math.inf
    high: float = math.inf

    def problems(self, w: torch.Tensor) -> list[str]:
        w = w.detach().flatten()
        n = w.numel()
        low, high = (float(v) for v in torch.aminmax(w))
        out = []
        # The bounds are drawn in float32: allow their rounding (a few ulps).
        slack = 4 * torch.finfo(torch.float32).eps * max(abs(self.low), abs(self.high), 0.0)
        if low < self.low - slack or high > self.high + slack:
            out.append(f"values [{low:.4g}, {high:.4g}] outside [{self.low:.4g}, {self.high:.4g}]")
        if n < 8:  # too few for statistics: the bounds and finiteness only
            return out + ([] if bool(torch.isfinite(w).all()) else ["non-finite values"])
        if n > 2**20:  # statistics of an evenly spaced sample of about 2^20 iid values
            w = w[:: n // 2**20]
            n = w.numel()
        std, mean = (float(v) for v in torch.std_mean(w))
        mean_tol = 6 * self.std / math.sqrt(n) + 1e-6 * self.std
        if abs(mean - self.mean) > mean_tol:
            out.append(f"mean {mean:.4g}, expected {self.mean:.4g} +- {mean_tol:.2g}")
        # Standard error of a sample std: std * sqrt((kurtosis - 1) / (4 n)).
        std_tol = 6 * self.std * math.sqrt((self.kurtosis - 1) / (4 * n)) + 1e-3 * self.std
        if abs(std - self.std) > std_tol:
            out.append(f"std {std:.4g}, expected {self.std:.4g} +- {std_tol:.2g}")
        return out


def uniform(low: float, high: float) -> Spread:
    return Spread((low + high) / 2, (high - low) / math.sqrt(12), 1.8, low, high)


def normal(std: float) -> Spread:
    return Spread(0.0, std, 3.0)


def fans(shape: torch.Size) -> tuple[int, int]:
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def lecun_truncated(shape: torch.Size) -> Spread:
    s = math.sqrt(1.0 / fans(shape)[0]) / LECUN_CORRECTION
    return Spread(0.0, s * TRUNCATED_STD, TRUNCATED_KURTOSIS, -2 * s, 2 * s)


def xavier_uniform(shape: torch.Size) -> Spread:
    bound = math.sqrt(6.0 / sum(fans(shape)))
    return uniform(-bound, bound)


def torch_default(module: nn.Module) -> Spread:
    """nn.Linear / nn.ConvNd's own init: weight and bias U(+-1 / sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fans(module.weight.shape)[0])
    return uniform(-bound, bound)


Dist = Const | Spread
# (module name, module, parameter name, parameter) -> the reference's distribution, or None.
Rule = Callable[[str, nn.Module, str, torch.Tensor], Dist | None]


def norm_layer(module: nn.Module, pname: str) -> Dist | None:
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)):
        return Const(1.0 if pname == "weight" else 0.0)
    return None


# ---- the reference's initialisers, per base workload -------------------------------------------


def mnist(variant: str) -> Rule:
    # The reference's `_Model()` keeps torch's Linear init at the first `init_model_fn`.
    return lambda name, m, p, w: torch_default(m) if isinstance(m, nn.Linear) else None


def mnist1d(variant: str) -> Rule:
    # No reference (a development workload of this harness): torch's defaults, as declared.
    return lambda name, m, p, w: torch_default(m) if isinstance(m, (nn.Conv1d, nn.Linear)) else None


def cifar(variant: str) -> Rule:
    def rule(name: str, m: nn.Module, p: str, w: torch.Tensor) -> Dist | None:
        if isinstance(m, nn.Conv2d):
            return lecun_truncated(w.shape)
        if isinstance(m, nn.BatchNorm2d) and name.endswith("bn2") and p == "weight":
            return Const(0.0)  # the last BN of every basic block
        if name == "fc":
            return normal(0.01) if p == "weight" else Const(0.0)
        return norm_layer(m, p)

    return rule


def criteo1tb(variant: str) -> Rule:
    vocab = SMALL_VOCAB["criteo1tb"]
    # DLRMResNet ignores the multiplier in the reference; only DlrmSmall's embed_init variant has it.
    embed_scale = 1.0 if variant == "criteo1tb_embed_init" else 1.0 / math.sqrt(vocab)

    def rule(name: str, m: nn.Module, p: str, w: torch.Tensor) -> Dist | None:
        if p.startswith("embedding_chunk_"):
            return uniform(0.0, embed_scale)
        if isinstance(m, nn.Linear):
            fan_out, fan_in = w.shape if p == "weight" else (m.out_features, m.in_features)
            if p == "bias":
                return normal(math.sqrt(1.0 / fan_out))
            if name.startswith("bot_mlp"):
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                return uniform(-bound, bound)
            if name.startswith("top_mlp"):
                return normal(math.sqrt(2.0 / (fan_in + fan_out)))
        return norm_layer(m, p)

    return rule


def fastmri(variant: str) -> Rule:
    def rule(name: str, m: nn.Module, p: str, w: torch.Tensor) -> Dist | None:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            return lecun_truncated(w.shape) if p == "weight" else Const(0.0)
        return norm_layer(m, p)

    return rule


def imagenet_resnet(variant: str) -> Rule:
    last_bn_scale = 8.0 if variant == "imagenet_resnet_large_bn_init" else 0.0

    def rule(name: str, m: nn.Module, p: str, w: torch.Tensor) -> Dist | None:
        if isinstance(m, nn.Conv2d):
            return lecun_truncated(w.shape)
        if isinstance(m, nn.BatchNorm2d) and name.endswith("bn3") and p == "weight":
            return Const(last_bn_scale)
        if name == "fc":
            return normal(0.01) if p == "weight" else Const(0.0)
        return norm_layer(m, p)

    return rule


def imagenet_vit(variant: str) -> Rule:
    def rule(name: str, m: nn.Module, p: str, w: torch.Tensor) -> Dist | None:
        if name in ("conv_patch_extract", "pre_logits"):
            return lecun_truncated(w.shape) if p == "weight" else Const(0.0)
        if name == "head":
            return Const(0.0)
        if name == "map" and p == "probe":
            return xavier_uniform(w.shape)
        if isinstance(m, nn.Linear):
            if p == "weight":
                return xavier_uniform(w.shape)
            # Self-attention biases start at 0; MLP and MAP-attention biases at N(0, 1e-6^2).
            return Const(0.0) if ".self_attention1." in f".{name}." else normal(1e-6)
        return norm_layer(m, p)

    return rule


def librispeech_conformer(variant: str) -> Rule:
    def rule(name: str, m: nn.Module, p: str, w: torch.Tensor) -> Dist | None:
        if isinstance(m, (nn.Linear, nn.Conv1d)):
            return xavier_uniform(w.shape) if p == "weight" else Const(0.0)
        if p == "kernel":  # the subsampling convolutions, Xavier-uniform at construction
            return xavier_uniform(w.shape)
        if p in ("bias", "scale"):
            # Layer and batch norms (gain 1 + scale), the query scaler, the subsampling bias.
            return Const(0.0)
        return None

    return rule


def librispeech_deepspeech(variant: str) -> Rule:
    lstm_bound = 1.0 / math.sqrt(512 // 2)  # torch's LSTM default, hidden 256 per direction

    def rule(name: str, m: nn.Module, p: str, w: torch.Tensor) -> Dist | None:
        if isinstance(m, nn.Linear):
            return xavier_uniform(w.shape) if p == "weight" else Const(0.0)
        if isinstance(m, nn.LSTM):
            return uniform(-lstm_bound, lstm_bound)
        if p == "kernel":
            return xavier_uniform(w.shape)
        if p in ("bias", "scale", "weight"):
            # Layer norms (gain 1 + scale), batch norms (gain 1 + weight), subsampling bias.
            return Const(0.0)
        return None

    return rule


def ogbg(variant: str) -> Rule:
    def rule(name: str, m: nn.Module, p: str, w: torch.Tensor) -> Dist | None:
        if isinstance(m, nn.Linear):
            return lecun_truncated(w.shape) if p == "weight" else Const(0.0)
        return norm_layer(m, p)

    return rule


def wmt(variant: str) -> Rule:
    def rule(name: str, m: nn.Module, p: str, w: torch.Tensor) -> Dist | None:
        if isinstance(m, nn.Linear):
            return xavier_uniform(w.shape) if p == "weight" else normal(1e-6)
        if isinstance(m, nn.Embedding):
            return normal(1.0)
        return norm_layer(m, p)

    return rule


REFERENCE_INIT: dict[str, Callable[[str], Rule]] = {
    f.__name__: f
    for f in (
        mnist,
        mnist1d,
        cifar,
        criteo1tb,
        fastmri,
        imagenet_resnet,
        imagenet_vit,
        librispeech_conformer,
        librispeech_deepspeech,
        ogbg,
        wmt,
    )
}

NAMES = sorted(registry.all_workloads())


def build(name: str) -> nn.Module:
    info = registry.get(name)
    if info.base_name == "criteo1tb":
        from workloads.criteo1tb.torch_workload import build as build_dlrm

        torch.manual_seed(0)  # what init_model_fn does; the full vocabulary needs 2 GB
        return build_dlrm(info.model_options, vocab_size=SMALL_VOCAB["criteo1tb"])
    # WMT: one encoder and one decoder layer of full width stand for their six identical copies.
    options = {"vocab_size": SMALL_VOCAB["wmt"], "nlayers": 1} if info.base_name == "wmt" else {}
    workload = registry.load(name, data="synthetic", **options)
    return workload.init_model_fn(prng_key(0))[0]


def test_every_workload_has_a_reference_initialiser() -> None:
    assert len(NAMES) == 35
    assert {registry.get(n).base_name for n in NAMES} == set(REFERENCE_INIT)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_initial_parameters_are_drawn_as_the_references(name: str) -> None:
    rule = REFERENCE_INIT[registry.get(name).base_name](name)
    model = build(name)
    problems, checked = [], 0
    for module_name, module in model.named_modules():
        for pname, param in module.named_parameters(recurse=False):
            dist = rule(module_name, module, pname, param)
            full = f"{module_name}.{pname}" if module_name else pname
            if dist is None:
                problems.append(f"{full}: no reference initialiser for this parameter")
                continue
            problems += [f"{full} {tuple(param.shape)}: {p}" for p in dist.problems(param)]
            checked += 1
    assert checked > 0
    assert not problems, "\n".join(problems)
