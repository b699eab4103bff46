"""fastMRI in PyTorch: the reference's U-Net (fastMRI's, as AlgoPerf adapts it).

The module tree mirrors the reference's (`down_sample_layers`, `conv`, `up_conv`,
`up_transpose_conv`, each block's `conv_layers` / `layers` sequence), so parameter names, their
order and a reference state dict carry over unchanged; modules are built and initialised in the
reference's order, so the same torch seed should draw the same initial weights (not checked
against the reference's code here, which needs torchvision). The network maps (N, 1, H, W) to (N, 1, H, W); the workload adds and removes the
channel axis as the reference's `model_fn` does.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from algoperf import spec
from workloads.fastmri.ssim import ssim_sum
from workloads.fastmri.workload import FastMriData
from workloads.torch_base import TorchWorkload


class Dropout2d(nn.Module):
    """Channel dropout whose rate is given at call time (AlgoPerf passes `dropout_rate` per call)."""

    takes_dropout_rate = True

    def forward(self, x: torch.Tensor, rate: float) -> torch.Tensor:
        return F.dropout2d(x, rate, training=self.training)


class DropoutSequential(nn.Sequential):
    """A sequence that hands the dropout rate to the members that take one."""

    takes_dropout_rate = True

    def forward(self, x: torch.Tensor, rate: float) -> torch.Tensor:  # type: ignore[override]
        for module in self:
            x = module(x, rate) if getattr(module, "takes_dropout_rate", False) else module(x)
        return x


def _activation(use_tanh: bool) -> nn.Module:
    return nn.Tanh() if use_tanh else nn.LeakyReLU(negative_slope=0.2, inplace=True)


class ConvBlock(nn.Module):
    """Twice: 3x3 convolution (no bias), instance norm (or layer norm), activation, 2-D dropout.

    The layer-norm variant normalises over (C, H, W) with a learnt per-channel scale and shift:
    GroupNorm with one group and eps 1e-6, as the reference.
    """

    takes_dropout_rate = True

    def __init__(self, in_chans: int, out_chans: int, use_tanh: bool, use_layer_norm: bool) -> None:
        super().__init__()

        def norm() -> nn.Module:
            return (
                nn.GroupNorm(1, out_chans, eps=1e-6)
                if use_layer_norm
                else nn.InstanceNorm2d(out_chans)
            )

        act = _activation(use_tanh)
        self.conv_layers = DropoutSequential(
            nn.Conv2d(in_chans, out_chans, kernel_size=3, padding=1, bias=False),
            norm(),
            act,
            Dropout2d(),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            norm(),
            act,
            Dropout2d(),
        )

    def forward(self, x: torch.Tensor, rate: float) -> torch.Tensor:
        return self.conv_layers(x, rate)


class TransposeConvBlock(nn.Module):
    """2x2 stride-2 transposed convolution (no bias), instance norm, activation.

    Instance norm here in every variant: the reference's layer-norm variant changes ConvBlock only.
    """

    def __init__(self, in_chans: int, out_chans: int, use_tanh: bool) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.ConvTranspose2d(in_chans, out_chans, kernel_size=2, stride=2, bias=False),
            nn.InstanceNorm2d(out_chans),
            _activation(use_tanh),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def lecun_normal_(module: nn.Conv2d | nn.ConvTranspose2d) -> None:
    """The reference's conv init: truncated normal (at +-2 std), variance 1/fan_in, zero bias.

    The std is divided by 0.8796..., the std of a unit normal truncated at +-2, so that the
    truncated draw has variance exactly 1/fan_in (JAX's lecun_normal). Torch's fan_in of a
    transposed convolution is its weight's dim 1 times the kernel area, as the reference uses it.
    """
    fan_in = nn.init._calculate_fan_in_and_fan_out(module.weight)[0]
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
    nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015) as in fastMRI (Zbontar et al. 2018) and AlgoPerf.

    Down path: `num_pool_layers` ConvBlocks doubling the channels from `num_channels`, each
    followed by 2x2 average pooling; a bottleneck ConvBlock; up path: transposed convolution,
    concatenation with the skip, ConvBlock halving the channels; a final 1x1 convolution (with
    bias) to one channel.
    """

    def __init__(
        self,
        in_chans: int = 1,
        out_chans: int = 1,
        num_channels: int = 32,
        num_pool_layers: int = 4,
        use_tanh: bool = False,
        use_layer_norm: bool = False,
    ) -> None:
        super().__init__()
        # Built and registered in the reference's order (it decides the initial weights).
        self.down_sample_layers = nn.ModuleList(
            [ConvBlock(in_chans, num_channels, use_tanh, use_layer_norm)]
        )
        ch = num_channels
        for _ in range(num_pool_layers - 1):
            self.down_sample_layers.append(ConvBlock(ch, ch * 2, use_tanh, use_layer_norm))
            ch *= 2
        self.conv = ConvBlock(ch, ch * 2, use_tanh, use_layer_norm)
        self.up_conv = nn.ModuleList()
        self.up_transpose_conv = nn.ModuleList()
        for i in range(num_pool_layers):
            self.up_transpose_conv.append(TransposeConvBlock(ch * 2, ch, use_tanh))
            block = ConvBlock(ch * 2, ch, use_tanh, use_layer_norm)
            if i == num_pool_layers - 1:
                self.up_conv.append(
                    DropoutSequential(block, nn.Conv2d(ch, out_chans, kernel_size=1))
                )
            else:
                self.up_conv.append(block)
                ch //= 2
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                lecun_normal_(m)

    def forward(self, x: torch.Tensor, dropout_rate: float | None = 0.0) -> torch.Tensor:
        rate = 0.0 if dropout_rate is None else float(dropout_rate)
        skips = []
        out = x
        for block in self.down_sample_layers:
            out = block(out, rate)
            skips.append(out)
            out = F.avg_pool2d(out, kernel_size=2, stride=2)
        out = self.conv(out, rate)
        for transpose_conv, conv in zip(self.up_transpose_conv, self.up_conv):
            skip = skips.pop()
            out = transpose_conv(out)
            # Odd sizes: reflect-pad one row/column at the bottom/right to match the skip.
            pad_w = int(out.shape[-1] != skip.shape[-1])
            pad_h = int(out.shape[-2] != skip.shape[-2])
            if pad_w or pad_h:
                out = F.pad(out, [0, pad_w, 0, pad_h], mode="reflect")
            out = conv(torch.cat([out, skip], dim=1), rate)
        return out


class FastMriWorkload(FastMriData, TorchWorkload):
    def build_model(self) -> nn.Module:
        return UNet(
            num_channels=int(self.options.get("num_channels", 32)),
            num_pool_layers=int(self.options.get("num_pool_layers", 4)),
            use_tanh=bool(self.options.get("use_tanh", False)),
            use_layer_norm=bool(self.options.get("use_layer_norm", False)),
        )

    def forward(
        self, model: nn.Module, batch: dict[str, Any], dropout_rate: float | None
    ) -> torch.Tensor:
        rate = self.dropout_rate(dropout_rate)
        return model(batch["inputs"].unsqueeze(1), dropout_rate=rate).squeeze(1)

    def is_output_params(self, param_key: spec.ParameterKey) -> bool:
        # The final 1x1 convolution: up_conv.<last>.1.{weight,bias}. (The reference names
        # 'up_conv.3.1.*', which misses it in the 3-pool-layer variant.)
        last = int(self.options.get("num_pool_layers", 4)) - 1
        return str(param_key).removeprefix("module.") in (
            f"up_conv.{last}.1.weight",
            f"up_conv.{last}.1.bias",
        )

    def eval_batch(
        self, params: spec.ParameterContainer, model_state: Any, batch: dict[str, Any], rng: Any
    ) -> dict[str, Any]:
        """Summed SSIM and summed L1 loss over the real (weight 1) examples of a device batch."""
        outputs, _ = self.model_fn(
            params, batch, model_state, spec.ForwardPassMode.EVAL, rng, update_batch_norm=False
        )
        loss = self.loss_fn(batch["targets"], outputs, batch["weights"])["summed"]
        host = {k: batch[k].cpu().numpy() for k in ("targets", "mean", "std", "volume_max", "weights")}
        total = ssim_sum(outputs.cpu().numpy(), **host)  # the framework-free metric (ssim.py)
        return {"ssim": torch.tensor(total, dtype=torch.float64, device=outputs.device),
                "loss": loss.to(torch.float64)}
