"""ViT-S/16 in PyTorch with the reference's module tree and initialisation (22,122,472 parameters).

As AlgoPerf's `imagenet_vit/imagenet_pytorch/models.py` (a port of big_vision's ViT): 16x16 patches
embedded by a convolution, fixed 2-D sin-cos position embeddings, 12 pre-LN blocks of width 384
with 6 heads and an MLP of 1536 (tanh-GELU), a final LayerNorm, global average pooling ('gap'),
a tanh pre-logits layer of width 384 and a zero-initialised head. Variants: a GLU MLP (a second
1536 x 1536 projection multiplies the activations), post-LN blocks (no final LayerNorm), and a
multi-head attention pooling (MAP) head instead of the average.

Initialisation: attention projections Xavier-uniform with zero bias; MLP layers Xavier-uniform
with N(0, 1e-6^2) bias; the patch embedding and pre-logits LeCun-normal; the head zeros; the MAP
probe Xavier-uniform and its attention (fused key-value projection) Xavier-uniform with
N(0, 1e-6^2) bias. Dropout (default 0.0) is passed at call time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from workloads.imagenet_resnet.torch_workload import lecun_normal_
from workloads.imagenet_vit.workload import VIT_S16, VitData
from workloads.torch_base import TorchWorkload


def posemb_sincos_2d(h: int, w: int, width: int, temperature: float = 10_000.0) -> torch.Tensor:
    """Fixed 2-D sin-cos position embeddings (MoCo v3): (1, h * w, width), rows in (y, x) order."""
    if width % 4:
        raise ValueError(
            f"the sin-cos position embedding needs a width divisible by 4, got {width}"
        )
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    omega = 1.0 / temperature ** (torch.arange(width // 4) / (width // 4 - 1))
    y = y.flatten()[:, None] * omega[None, :]
    x = x.flatten()[:, None] * omega[None, :]
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1)[None]


def _xavier_(layer: nn.Linear, bias_std: float) -> None:
    nn.init.xavier_uniform_(layer.weight)
    if bias_std:
        nn.init.normal_(layer.bias, std=bias_std)
    else:
        nn.init.zeros_(layer.bias)


class MlpBlock(nn.Module):
    def __init__(self, width: int, mlp_dim: int, use_glu: bool = False) -> None:
        super().__init__()
        self.linear1 = nn.Linear(width, mlp_dim)
        self.glu_linear = nn.Linear(mlp_dim, mlp_dim) if use_glu else None
        self.linear2 = nn.Linear(mlp_dim, width)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                _xavier_(m, 1e-6)

    def forward(self, x: torch.Tensor, dropout_rate: float) -> torch.Tensor:
        x = F.gelu(self.linear1(x), approximate="tanh")
        if self.glu_linear is not None:
            x = x * self.glu_linear(x)
        return self.linear2(F.dropout(x, dropout_rate, self.training))


def _heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(N, L, d) -> (N, heads, L, d / heads)."""
    n, length, d = t.shape
    return t.reshape(n, length, heads, d // heads).transpose(1, 2)


def _merge(t: torch.Tensor) -> torch.Tensor:
    n, heads, length, hd = t.shape
    return t.transpose(1, 2).reshape(n, length, heads * hd)


class SelfAttention(nn.Module):
    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width {width} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                _xavier_(m, 0.0)

    def forward(self, x: torch.Tensor, dropout_rate: float) -> torch.Tensor:
        q, k, v = (_heads(f(x), self.num_heads) for f in (self.query, self.key, self.value))
        rate = dropout_rate if self.training else 0.0
        return self.out(_merge(F.scaled_dot_product_attention(q, k, v, dropout_p=rate)))


class Encoder1DBlock(nn.Module):
    def __init__(
        self, width: int, mlp_dim: int, num_heads: int, use_glu: bool, use_post_layer_norm: bool
    ) -> None:
        super().__init__()
        self.use_post_layer_norm = use_post_layer_norm
        self.layer_norm0 = nn.LayerNorm(width, eps=1e-6)
        self.self_attention1 = SelfAttention(width, num_heads)
        self.layer_norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp3 = MlpBlock(width, mlp_dim, use_glu)

    def forward(self, x: torch.Tensor, dropout_rate: float) -> torch.Tensor:
        def drop(t: torch.Tensor) -> torch.Tensor:
            return F.dropout(t, dropout_rate, self.training)

        if self.use_post_layer_norm:
            x = self.layer_norm0(x + drop(self.self_attention1(x, dropout_rate)))
            return self.layer_norm2(x + drop(self.mlp3(x, dropout_rate)))
        x = x + drop(self.self_attention1(self.layer_norm0(x), dropout_rate))
        return x + drop(self.mlp3(self.layer_norm2(x), dropout_rate))


class Encoder(nn.Module):
    def __init__(
        self,
        depth: int,
        width: int,
        mlp_dim: int,
        num_heads: int,
        use_glu: bool,
        use_post_layer_norm: bool,
    ) -> None:
        super().__init__()
        self.net = nn.ModuleList(
            Encoder1DBlock(width, mlp_dim, num_heads, use_glu, use_post_layer_norm)
            for _ in range(depth)
        )
        # Post-LN blocks already end in a LayerNorm: the reference drops the final one (768 fewer).
        self.encoder_norm = None if use_post_layer_norm else nn.LayerNorm(width, eps=1e-6)

    def forward(self, x: torch.Tensor, dropout_rate: float) -> torch.Tensor:
        for block in self.net:
            x = block(x, dropout_rate)
        return x if self.encoder_norm is None else self.encoder_norm(x)


class ProbeAttention(nn.Module):
    """Attention of a query sequence over a memory: q projection, fused k-v projection, output."""

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(width, width)
        self.kv_proj = nn.Linear(width, 2 * width)
        self.out_proj = nn.Linear(width, width)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                _xavier_(m, 1e-6)

    def forward(self, x: torch.Tensor, mem: torch.Tensor, dropout_rate: float) -> torch.Tensor:
        k, v = self.kv_proj(mem).chunk(2, dim=-1)
        q, k, v = (_heads(t, self.num_heads) for t in (self.q_proj(x), k, v))
        rate = dropout_rate if self.training else 0.0
        return self.out_proj(_merge(F.scaled_dot_product_attention(q, k, v, dropout_p=rate)))


class MAPHead(nn.Module):
    """Multi-head attention pooling: a learned probe attends over the tokens, then a residual MLP."""

    def __init__(self, width: int, mlp_dim: int, num_heads: int) -> None:
        super().__init__()
        self.probe = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.xavier_uniform_(self.probe)
        self.mha = ProbeAttention(width, num_heads)
        self.layer_norm = nn.LayerNorm(width, eps=1e-6)
        self.mlp = MlpBlock(width, mlp_dim)

    def forward(self, x: torch.Tensor, dropout_rate: float) -> torch.Tensor:
        y = self.mha(self.probe.expand(len(x), -1, -1), x, dropout_rate)
        return (y + self.mlp(self.layer_norm(y), dropout_rate))[:, 0]


class ViT(nn.Module):
    def __init__(
        self,
        num_classes: int = 1000,
        patch_size: int = 16,
        width: int = 384,
        depth: int = 12,
        mlp_dim: int = 1536,
        num_heads: int = 6,
        use_glu: bool = False,
        use_post_layer_norm: bool = False,
        use_map: bool = False,
    ) -> None:
        super().__init__()
        # Built in the reference's order, so that a seed draws the same initial values.
        self.pre_logits = nn.Linear(width, width)
        self.conv_patch_extract = nn.Conv2d(3, width, patch_size, stride=patch_size)
        self.encoder = Encoder(depth, width, mlp_dim, num_heads, use_glu, use_post_layer_norm)
        self.head = nn.Linear(width, num_classes)
        self.map = MAPHead(width, mlp_dim, num_heads) if use_map else None
        lecun_normal_(self.conv_patch_extract)
        lecun_normal_(self.pre_logits)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor, dropout_rate: float = 0.0) -> torch.Tensor:
        x = self.conv_patch_extract(x)
        n, c, h, w = x.shape
        x = x.reshape(n, c, h * w).transpose(1, 2) + posemb_sincos_2d(h, w, c).to(x)
        x = F.dropout(x, dropout_rate, self.training)
        x = self.encoder(x, dropout_rate)
        x = x.mean(dim=1) if self.map is None else self.map(x, dropout_rate)
        return self.head(torch.tanh(self.pre_logits(x)))


class ImagenetVitWorkload(VitData, TorchWorkload):
    def build_model(self) -> nn.Module:
        return ViT(
            **VIT_S16,
            use_glu=bool(self.options.get("use_glu", False)),
            use_post_layer_norm=bool(self.options.get("use_post_layer_norm", False)),
            use_map=bool(self.options.get("use_map", False)),
        )

    def is_output_params(self, param_key: str) -> bool:
        return param_key.removeprefix("module.") in ("head.weight", "head.bias")
