"""The reference's Conformer (init2winit's, as AlgoPerf ports it to PyTorch): 32,321,792 parameters.

Log-mel front end -> SpecAugment (training only) -> two 3x3 stride-2 convolutions (80 bins ->
20, 512 channels) -> linear to 512 + sinusoidal positions -> 4 Conformer blocks -> layer norm ->
linear to the 1024 tokens. A block: x + 1/2 FF, x + MHSA, x + conv module, x + 1/2 FF, then the
post layer norm (absent in the `layernorm` variant). Every sub-module starts with its own layer
norm. Dropout (rate given at call time) follows the input embedding and every residual branch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from workloads.librispeech.frontend import NUM_BINS
from workloads.librispeech.tokenizer import VOCAB_SIZE
from workloads.librispeech.torch_modules import (
    Conv2dSubsampling,
    LayerNorm,
    LibriSpeechTorchWorkload,
    LogMelFrontend,
    MaskedBatchNorm,
    SpecAugment,
    xavier_init,
)

ENCODER_DIM, NUM_HEADS, NUM_LAYERS = 512, 8, 4
CONV_KERNEL, FF_EXPANSION = 5, 4


def activation(name: str, approximate_gelu: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """Swish, or GELU: tanh-approximated in the feed-forward modules, exact in the conv module
    (the reference's choice)."""
    if name == "swish":
        return F.silu
    if name == "gelu":
        return lambda x: F.gelu(x, approximate="tanh" if approximate_gelu else "none")
    raise ValueError(f"activation must be 'swish' or 'gelu', got {name!r}")


class PositionalEmbedding(nn.Module):
    """Sinusoids: sin then cos of position / 10000^(i / (dim/2 - 1)), i < dim/2."""

    inv_timescales: torch.Tensor

    def __init__(self, dim: int = ENCODER_DIM, max_timescale: float = 10_000.0) -> None:
        super().__init__()
        half = dim // 2
        inv = torch.exp(
            torch.arange(half, dtype=torch.float32) * -(math.log(max_timescale) / (half - 1))
        )
        self.register_buffer("inv_timescales", inv[None, None, :])

    def forward(self, length: int) -> torch.Tensor:
        t = torch.arange(length, dtype=torch.float32, device=self.inv_timescales.device)[
            None, :, None
        ]
        scaled = t * self.inv_timescales
        return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=2)


class Subsample(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = Conv2dSubsampling(1, ENCODER_DIM)
        self.conv2 = Conv2dSubsampling(ENCODER_DIM, ENCODER_DIM)
        self.linear = nn.Linear(ENCODER_DIM * NUM_BINS // 4, ENCODER_DIM)
        self.pos_encode = PositionalEmbedding()

    def forward(
        self, x: torch.Tensor, paddings: torch.Tensor, rate: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, paddings = self.conv1(x[:, None], paddings)
        x, paddings = self.conv2(x, paddings)
        n, channels, frames, bins = x.shape
        x = self.linear(x.permute(0, 2, 3, 1).reshape(n, frames, bins * channels))
        x = x + self.pos_encode(frames)
        return F.dropout(x, rate, self.training), paddings


class FeedForwardModule(nn.Module):
    def __init__(self, activation_name: str) -> None:
        super().__init__()
        self.ln = LayerNorm(ENCODER_DIM)
        self.linear1 = nn.Linear(ENCODER_DIM, ENCODER_DIM * FF_EXPANSION)
        self.linear2 = nn.Linear(ENCODER_DIM * FF_EXPANSION, ENCODER_DIM)
        self.act = activation(activation_name, approximate_gelu=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, rate: float) -> torch.Tensor:
        x = self.act(self.linear1(self.ln(x))) * mask
        return F.dropout(self.linear2(x) * mask, rate, self.training)


class QueryScaler(nn.Module):
    """A learned per-dimension query scale softplus(s) / softplus(0), s starting at 0."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(dim))

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return q * (F.softplus(self.scale) / math.log(2.0))


class SelfAttention(nn.Module):
    """Multi-head attention over the real frames; the output is multiplied by the temperature."""

    def __init__(self, attention_temperature: float) -> None:
        super().__init__()
        self.in_proj = nn.Linear(ENCODER_DIM, 3 * ENCODER_DIM)
        self.out_proj = nn.Linear(ENCODER_DIM, ENCODER_DIM)
        self.qs = QueryScaler(ENCODER_DIM // NUM_HEADS)
        self.attention_temperature = attention_temperature

    def forward(self, x: torch.Tensor, paddings: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.in_proj(x).split(d, dim=2)
        q = self.qs(q.view(n, t, NUM_HEADS, -1)).transpose(1, 2)
        k = k.view(n, t, NUM_HEADS, -1).transpose(1, 2)
        v = v.view(n, t, NUM_HEADS, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=(paddings == 0)[:, None, None, :])
        out = out.transpose(1, 2).reshape(n, t, d) * self.attention_temperature
        return self.out_proj(out)


class MultiHeadedSelfAttention(nn.Module):
    def __init__(self, attention_temperature: float) -> None:
        super().__init__()
        self.ln = LayerNorm(ENCODER_DIM)
        self.self_attention = SelfAttention(attention_temperature)

    def forward(self, x: torch.Tensor, paddings: torch.Tensor, rate: float) -> torch.Tensor:
        return F.dropout(self.self_attention(self.ln(x), paddings), rate, self.training)


class ConvolutionBlock(nn.Module):
    """Layer norm, GLU of two linears, depthwise conv (kernel 5), masked batch norm, act, linear."""

    def __init__(self, activation_name: str) -> None:
        super().__init__()
        self.ln = LayerNorm(ENCODER_DIM)
        self.lin1 = nn.Linear(ENCODER_DIM, ENCODER_DIM)
        self.lin2 = nn.Linear(ENCODER_DIM, ENCODER_DIM)
        self.conv1 = nn.Conv1d(
            ENCODER_DIM, ENCODER_DIM, CONV_KERNEL, padding="same", bias=False, groups=ENCODER_DIM
        )
        self.bn = MaskedBatchNorm(ENCODER_DIM)
        self.lin3 = nn.Linear(ENCODER_DIM, ENCODER_DIM)
        self.act = activation(activation_name, approximate_gelu=False)

    def forward(self, x: torch.Tensor, paddings: torch.Tensor, rate: float) -> torch.Tensor:
        x = self.ln(x)
        x = F.glu(torch.cat([self.lin1(x), self.lin2(x)], dim=2)) * (1 - paddings[:, :, None])
        x = self.conv1(x.transpose(1, 2)).transpose(1, 2)
        x = self.lin3(self.act(self.bn(x, paddings)))
        return F.dropout(x, rate, self.training)


class ConformerBlock(nn.Module):
    def __init__(
        self, activation_name: str, attention_temperature: float, use_post_layer_norm: bool
    ) -> None:
        super().__init__()
        self.ff1 = FeedForwardModule(activation_name)
        self.mhsa = MultiHeadedSelfAttention(attention_temperature)
        self.conv = ConvolutionBlock(activation_name)
        self.ff2 = FeedForwardModule(activation_name)
        self.ln = LayerNorm(ENCODER_DIM) if use_post_layer_norm else None

    def forward(self, x: torch.Tensor, paddings: torch.Tensor, rate: float) -> torch.Tensor:
        mask = 1 - paddings[:, :, None]
        x = x + 0.5 * self.ff1(x, mask, rate)
        x = x + self.mhsa(x, paddings, rate)
        x = x + self.conv(x, paddings, rate)
        x = x + 0.5 * self.ff2(x, mask, rate)
        return self.ln(x) if self.ln is not None else x


class Conformer(nn.Module):
    def __init__(
        self,
        activation_name: str = "swish",
        attention_temperature: float = 1.0,
        use_post_layer_norm: bool = True,
    ) -> None:
        super().__init__()
        self.preprocessor = LogMelFrontend()
        self.specaug = SpecAugment(
            freq_mask_count=2, freq_mask_max_bins=27, time_mask_count=10, time_mask_max_ratio=0.05
        )
        self.subsample = Subsample()
        self.conformers = nn.ModuleList(
            ConformerBlock(activation_name, attention_temperature, use_post_layer_norm)
            for _ in range(NUM_LAYERS)
        )
        self.ln = LayerNorm(ENCODER_DIM)
        self.lin = nn.Linear(ENCODER_DIM, VOCAB_SIZE)
        xavier_init(self)

    def forward(
        self, inputs: torch.Tensor, input_paddings: torch.Tensor, dropout_rate: float = 0.1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, paddings = self.preprocessor(inputs, input_paddings)
        if self.training:
            x = self.specaug(x, paddings)
        x, paddings = self.subsample(x, paddings, dropout_rate)
        for block in self.conformers:
            x = block(x, paddings, dropout_rate)
        return self.lin(self.ln(x)), paddings


class ConformerWorkload(LibriSpeechTorchWorkload):
    def build_model(self) -> nn.Module:
        return Conformer(
            activation_name=str(self.options.get("activation", "swish")),
            attention_temperature=float(self.options.get("attention_temperature", 1.0)),
            use_post_layer_norm=bool(self.options.get("use_post_layer_norm", True)),
        )
