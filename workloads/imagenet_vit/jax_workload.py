"""ViT-S/16 in JAX (flax linen): the PyTorch twin's network in the reference's flax param tree.

Names follow the reference's flax ViT (`conv_patch_extract`, `Transformer/encoderblock_<i>` with
`LayerNorm_0`, `MultiHeadDotProductAttention_1` (query/key/value/out kernels shaped
(width, heads, head_dim) and (heads, head_dim, width), as flax's attention), `LayerNorm_2`,
`MlpBlock_3`; `Transformer/encoder_layernorm`, `MAPHead_0`, `pre_logits`, `head`), so
submissions that address parameters by name work. The numbers are the twin's
(`torch_workload.py`), which a parity test holds equal:

- 16x16 patches embedded by a convolution, fixed 2-D sin-cos position embeddings, 12 blocks of
  width 384, 6 heads, MLP 1536 with tanh-GELU, global average pooling (or the MAP head), a tanh
  pre-logits layer and a zero-initialised head.
- Dropout (default 0.0) at the twin's places, at the rate given per call: after the position
  embedding, on the attention weights, inside the MLP and on both residual branches. (The
  reference's flax model never drops attention weights; its PyTorch model does, as here.)
- Post-LN blocks (`imagenet_vit_post_ln`) normalise after each residual sum and drop the final
  LayerNorm; this model initialises (the reference's flax one of this variant does not).
- Initialisation is the twin's, which is the reference's PyTorch one where its two frameworks
  differ: attention Xavier-uniform with zero bias; MLP Xavier-uniform with N(0, 1e-6^2) bias;
  patch embedding and pre-logits LeCun normal; head zeros; the MAP probe Xavier-uniform with
  PyTorch's fans of a (1, 1, width) tensor (fan_in = fan_out = width) and the MAP attention's key
  and value kernels as the two halves of one Xavier-uniform (2 width, width) projection, with
  N(0, 1e-6^2) biases (the reference's flax MAP head uses flax's fans and zero biases).

Inputs arrive NCHW from the shared numpy pipeline and are transposed to flax's NHWC here.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from algoperf.jax_utils import Dropout
from workloads.imagenet_vit.workload import VIT_S16, VitData
from workloads.jax_base import JaxWorkload

MLP_INITS = {"kernel_init": nn.initializers.xavier_uniform(),
             "bias_init": nn.initializers.normal(stddev=1e-6)}


def posemb_sincos_2d(h: int, w: int, width: int, temperature: float = 10_000.0) -> Any:
    """Fixed 2-D sin-cos position embeddings (MoCo v3): (1, h * w, width), rows in (y, x) order.

    Computed in float64 and rounded once to the model's dtype (a numpy constant of the trace)."""
    if width % 4:
        raise ValueError(f"the sin-cos position embedding needs a width divisible by 4, got {width}")
    y, x = np.mgrid[:h, :w]
    omega = 1.0 / temperature ** (np.arange(width // 4) / (width // 4 - 1))
    y = y.reshape(-1)[:, None] * omega[None, :]
    x = x.reshape(-1)[:, None] * omega[None, :]
    return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)[None]


def uniform_init(bound: float) -> Any:
    def init(key: Any, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Any:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class MlpBlock(nn.Module):
    """Linear -> tanh-GELU (-> times a second linear map of itself, GLU) -> dropout -> linear."""

    mlp_dim: int
    use_glu: bool = False

    @nn.compact
    def __call__(self, x: Any, train: bool, dropout_rate: float) -> Any:
        width = x.shape[-1]
        x = nn.gelu(nn.Dense(self.mlp_dim, **MLP_INITS)(x), approximate=True)
        if self.use_glu:
            x = x * nn.Dense(self.mlp_dim, **MLP_INITS)(x)
        x = Dropout()(x, deterministic=not train, rate=dropout_rate)
        return nn.Dense(width, **MLP_INITS)(x)


class MultiHeadDotProductAttention(nn.Module):
    """Softmax attention of queries over keys/values, flax's parameter layout, call-time dropout.

    `fused_kv_init` draws the key and value kernels as the halves of one Xavier-uniform
    (width, 2 width) matrix, the PyTorch twin's fused key-value projection of the MAP head.
    """

    num_heads: int
    bias_std: float = 0.0
    fused_kv_init: bool = False

    @nn.compact
    def __call__(self, inputs_q: Any, inputs_kv: Any, train: bool, dropout_rate: float) -> Any:
        width = inputs_q.shape[-1]
        head_dim = width // self.num_heads
        bias_init = nn.initializers.normal(self.bias_std) if self.bias_std else nn.initializers.zeros
        xavier = nn.initializers.xavier_uniform()
        kv_init = uniform_init(float(np.sqrt(6.0 / (3 * width)))) if self.fused_kv_init else xavier

        def project(name: str, x: Any, init: Any) -> Any:
            return nn.DenseGeneral((self.num_heads, head_dim), kernel_init=init,
                                   bias_init=bias_init, name=name)(x)

        q = project("query", inputs_q, xavier) / np.sqrt(head_dim).astype(np.float32)
        k = project("key", inputs_kv, kv_init)
        v = project("value", inputs_kv, kv_init)
        weights = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k), axis=-1)
        weights = Dropout()(weights, deterministic=not train, rate=dropout_rate)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
        return nn.DenseGeneral(width, axis=(-2, -1), kernel_init=xavier, bias_init=bias_init,
                               name="out")(out)


class Encoder1DBlock(nn.Module):
    """Self-attention and MLP, each a residual branch; LayerNorm before (pre-LN) or after each sum."""

    mlp_dim: int
    num_heads: int
    use_glu: bool = False
    use_post_layer_norm: bool = False

    @nn.compact
    def __call__(self, x: Any, train: bool, dropout_rate: float) -> Any:
        def drop(y: Any) -> Any:
            return Dropout()(y, deterministic=not train, rate=dropout_rate)

        norm0 = nn.LayerNorm(epsilon=1e-6, name="LayerNorm_0")
        attention = MultiHeadDotProductAttention(self.num_heads,
                                                 name="MultiHeadDotProductAttention_1")
        norm2 = nn.LayerNorm(epsilon=1e-6, name="LayerNorm_2")
        mlp = MlpBlock(self.mlp_dim, self.use_glu, name="MlpBlock_3")
        if self.use_post_layer_norm:
            x = norm0(x + drop(attention(x, x, train, dropout_rate)))
            return norm2(x + drop(mlp(x, train, dropout_rate)))
        y = norm0(x)
        x = x + drop(attention(y, y, train, dropout_rate))
        return x + drop(mlp(norm2(x), train, dropout_rate))


class Encoder(nn.Module):
    depth: int
    mlp_dim: int
    num_heads: int
    use_glu: bool = False
    use_post_layer_norm: bool = False

    @nn.compact
    def __call__(self, x: Any, train: bool, dropout_rate: float) -> Any:
        for i in range(self.depth):
            x = Encoder1DBlock(self.mlp_dim, self.num_heads, self.use_glu,
                               self.use_post_layer_norm, name=f"encoderblock_{i}")(
                x, train, dropout_rate)
        if self.use_post_layer_norm:  # post-LN blocks already end in a LayerNorm
            return x
        return nn.LayerNorm(epsilon=1e-6, name="encoder_layernorm")(x)


class MAPHead(nn.Module):
    """Multi-head attention pooling: a learned probe attends over the tokens, then a residual MLP."""

    mlp_dim: int
    num_heads: int

    @nn.compact
    def __call__(self, x: Any, train: bool, dropout_rate: float) -> Any:
        n, _, width = x.shape
        # PyTorch's Xavier fans of a (1, 1, width) tensor: fan_in = fan_out = width.
        probe = self.param("probe", uniform_init(float(np.sqrt(6.0 / (2 * width)))),
                           (1, 1, width), jnp.float32)
        y = MultiHeadDotProductAttention(self.num_heads, bias_std=1e-6, fused_kv_init=True,
                                         name="MultiHeadDotProductAttention_0")(
            jnp.tile(probe, (n, 1, 1)), x, train, dropout_rate)
        z = nn.LayerNorm(epsilon=1e-6, name="LayerNorm_0")(y)
        return (y + MlpBlock(self.mlp_dim, name="MlpBlock_0")(z, train, dropout_rate))[:, 0]


class ViT(nn.Module):
    num_classes: int = 1000
    patch_size: int = 16
    width: int = 384
    depth: int = 12
    mlp_dim: int = 1536
    num_heads: int = 6
    use_glu: bool = False
    use_post_layer_norm: bool = False
    use_map: bool = False

    @nn.compact
    def __call__(self, x: Any, train: bool, dropout_rate: float = 0.0) -> Any:
        x = jnp.transpose(x, (0, 2, 3, 1))  # the pipeline's NCHW -> NHWC
        p = self.patch_size
        x = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID",
                    name="conv_patch_extract")(x)
        n, h, w, c = x.shape
        x = x.reshape(n, h * w, c) + posemb_sincos_2d(h, w, c).astype(x.dtype)
        x = Dropout()(x, deterministic=not train, rate=dropout_rate)
        x = Encoder(self.depth, self.mlp_dim, self.num_heads, self.use_glu,
                    self.use_post_layer_norm, name="Transformer")(x, train, dropout_rate)
        if self.use_map:
            x = MAPHead(self.mlp_dim, self.num_heads, name="MAPHead_0")(x, train, dropout_rate)
        else:
            x = jnp.mean(x, axis=1)
        x = jnp.tanh(nn.Dense(self.width, name="pre_logits")(x))
        return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name="head")(x)


class ImagenetVitWorkload(VitData, JaxWorkload):
    def build_model(self) -> nn.Module:
        return ViT(
            **VIT_S16,
            use_glu=bool(self.options.get("use_glu", False)),
            use_post_layer_norm=bool(self.options.get("use_post_layer_norm", False)),
            use_map=bool(self.options.get("use_map", False)),
        )

    def is_output_params(self, param_key: str) -> bool:
        return param_key == "head"
