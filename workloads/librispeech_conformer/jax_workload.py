"""The Conformer in JAX (flax linen): the same model, CTC loss and WER as the PyTorch twin
(`torch_workload.py` describes the model), 32,321,792 parameters.

Module names are the reference's JAX ones: `Subsample_0/{Conv2dSubsampling_0, _1, Dense_0}`,
`ConformerBlock_<i>/{FeedForwardModule_0, MultiHeadedSelfAttention_0/{LayerNorm_0,
MultiHeadDotProductAttention_0/{query, key, value, out, QueryScaler_0}}, ConvolutionBlock_0/{
LayerNorm_0, Dense_0, Dense_1, Conv_0, BatchNorm_0, Dense_2}, FeedForwardModule_1, LayerNorm_0}`,
then `LayerNorm_0` and `Dense_0`. Init as the reference's JAX model: Xavier-uniform kernels (each
attention projection on its own (512, 512) shape; the PyTorch twin, as the reference's PyTorch
model, draws the fused (1536, 512) projection), zero biases, norms' scales 0 (gain 1 + scale).

Where the reference's two frameworks differ, this model follows the PyTorch twin so both compute
one function: GELU exact in the convolution module (tanh-approximated in the feed-forward
modules), attention masked over padded keys only, no dropout on the attention weights.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from workloads.librispeech.jax_modules import (
    BatchNorm,
    Conv2dSubsampling,
    LayerNorm,
    LibriSpeechJaxWorkload,
    dropout,
    front,
    xavier,
)
from workloads.librispeech.tokenizer import VOCAB_SIZE
from workloads.librispeech_conformer.positions import inv_timescales

ENCODER_DIM, NUM_HEADS, NUM_LAYERS = 512, 8, 4
CONV_KERNEL, FF_EXPANSION = 5, 4


def activation(name: str, approximate_gelu: bool) -> Any:
    if name == "swish":
        return nn.swish
    if name == "gelu":
        return lambda x: nn.gelu(x, approximate=approximate_gelu)
    raise ValueError(f"activation must be 'swish' or 'gelu', got {name!r}")


def positional_embedding(length: int, dim: int, dtype: Any) -> Any:
    """Sinusoids: sin then cos of position x inverse timescale (`positions.py`), in the
    activations' dtype."""
    inv = jnp.asarray(inv_timescales(dim), dtype)
    scaled = jnp.arange(length, dtype=dtype)[None, :, None] * inv[None, None, :]
    return jnp.concatenate([jnp.sin(scaled), jnp.cos(scaled)], axis=2)


class Subsample(nn.Module):
    dim: int = ENCODER_DIM

    @nn.compact
    def __call__(self, x: Any, paddings: Any, train: bool, rate: float) -> tuple[Any, Any]:
        x, paddings = Conv2dSubsampling(self.dim)(x[..., None], paddings)
        x, paddings = Conv2dSubsampling(self.dim)(x, paddings)
        n, frames, bins, channels = x.shape
        x = nn.Dense(self.dim, kernel_init=xavier)(x.reshape(n, frames, bins * channels))
        x = x + positional_embedding(frames, self.dim, x.dtype)
        return dropout(x, rate, train, self), paddings


class FeedForwardModule(nn.Module):
    activation_name: str

    @nn.compact
    def __call__(self, x: Any, mask: Any, train: bool, rate: float) -> Any:
        dim = x.shape[-1]
        x = LayerNorm()(x)
        x = nn.Dense(dim * FF_EXPANSION, kernel_init=xavier)(x)
        x = activation(self.activation_name, approximate_gelu=True)(x) * mask
        x = nn.Dense(dim, kernel_init=xavier)(x) * mask
        return dropout(x, rate, train, self)


class QueryScaler(nn.Module):
    """A learned per-dimension query scale softplus(s) / softplus(0), s starting at 0."""

    @nn.compact
    def __call__(self, q: Any) -> Any:
        scale = self.param("scale", nn.initializers.zeros, (q.shape[-1],))
        return q * (jax.nn.softplus(scale) / math.log(2.0))


class MultiHeadDotProductAttention(nn.Module):
    """Multi-head attention over the real frames; the output is multiplied by the temperature."""

    attention_temperature: float
    num_heads: int = NUM_HEADS

    @nn.compact
    def __call__(self, x: Any, paddings: Any) -> Any:
        dim = x.shape[-1]
        heads = (self.num_heads, dim // self.num_heads)

        def proj(name: str) -> nn.Module:
            return nn.DenseGeneral(heads, kernel_init=xavier, name=name)

        q = QueryScaler()(proj("query")(x))
        k, v = proj("key")(x), proj("value")(x)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(heads[1])
        scores = jnp.where((paddings == 0)[:, None, None, :], scores, jnp.finfo(scores.dtype).min)
        out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v)
        out = out * self.attention_temperature
        return nn.DenseGeneral(dim, axis=(-2, -1), kernel_init=xavier, name="out")(out)


class MultiHeadedSelfAttention(nn.Module):
    attention_temperature: float
    num_heads: int = NUM_HEADS

    @nn.compact
    def __call__(self, x: Any, paddings: Any, train: bool, rate: float) -> Any:
        out = MultiHeadDotProductAttention(self.attention_temperature, self.num_heads)(
            LayerNorm()(x), paddings)
        return dropout(out, rate, train, self)


class ConvolutionBlock(nn.Module):
    """Layer norm, GLU of two linears, depthwise conv (kernel 5), masked batch norm, act, linear."""

    activation_name: str

    @nn.compact
    def __call__(self, x: Any, paddings: Any, train: bool, rate: float,
                 use_running_average: bool) -> Any:
        dim = x.shape[-1]
        x = LayerNorm()(x)
        gated = nn.Dense(dim, kernel_init=xavier)(x)
        gate = nn.Dense(dim, kernel_init=xavier)(x)
        x = gated * jax.nn.sigmoid(gate) * (1 - paddings[:, :, None])
        x = nn.Conv(dim, (CONV_KERNEL,), padding="SAME", feature_group_count=dim,
                    use_bias=False, kernel_init=xavier)(x)
        x = BatchNorm()(x, paddings, use_running_average)
        x = activation(self.activation_name, approximate_gelu=False)(x)
        x = nn.Dense(dim, kernel_init=xavier)(x)
        return dropout(x, rate, train, self)


class ConformerBlock(nn.Module):
    activation_name: str
    attention_temperature: float
    use_post_layer_norm: bool
    num_heads: int = NUM_HEADS

    @nn.compact
    def __call__(self, x: Any, paddings: Any, train: bool, rate: float,
                 use_running_average: bool) -> Any:
        mask = 1 - paddings[:, :, None]
        x = x + 0.5 * FeedForwardModule(self.activation_name)(x, mask, train, rate)
        x = x + MultiHeadedSelfAttention(self.attention_temperature, self.num_heads)(
            x, paddings, train, rate)
        x = x + ConvolutionBlock(self.activation_name)(x, paddings, train, rate, use_running_average)
        x = x + 0.5 * FeedForwardModule(self.activation_name)(x, mask, train, rate)
        return LayerNorm()(x) if self.use_post_layer_norm else x


class Conformer(nn.Module):
    activation_name: str = "swish"
    attention_temperature: float = 1.0
    use_post_layer_norm: bool = True
    freq_mask_count: int = 2
    time_mask_count: int = 10
    encoder_dim: int = ENCODER_DIM  # the sizes are options for tests of the same code paths
    num_heads: int = NUM_HEADS
    num_layers: int = NUM_LAYERS

    @nn.compact
    def __call__(self, inputs: Any, input_paddings: Any, train: bool, dropout_rate: float = 0.1,
                 use_running_average_bn: bool | None = None) -> tuple[Any, Any]:
        use_running_average = not train if use_running_average_bn is None else use_running_average_bn
        x, paddings = front(inputs, input_paddings, train, self.freq_mask_count, self.time_mask_count)
        x, paddings = Subsample(self.encoder_dim)(x, paddings, train, dropout_rate)
        for _ in range(self.num_layers):
            x = ConformerBlock(self.activation_name, self.attention_temperature,
                               self.use_post_layer_norm, self.num_heads)(
                x, paddings, train, dropout_rate, use_running_average)
        x = LayerNorm()(x)
        return nn.Dense(VOCAB_SIZE, kernel_init=xavier)(x), paddings


class ConformerWorkload(LibriSpeechJaxWorkload):
    def build_model(self) -> nn.Module:
        return Conformer(
            activation_name=str(self.options.get("activation", "swish")),
            attention_temperature=float(self.options.get("attention_temperature", 1.0)),
            use_post_layer_norm=bool(self.options.get("use_post_layer_norm", True)),
            freq_mask_count=int(self.options.get("freq_mask_count", 2)),
            time_mask_count=int(self.options.get("time_mask_count", 10)),
            encoder_dim=int(self.options.get("encoder_dim", ENCODER_DIM)),
            num_heads=int(self.options.get("num_heads", NUM_HEADS)),
            num_layers=int(self.options.get("num_layers", NUM_LAYERS)),
        )
