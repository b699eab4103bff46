"""DeepSpeech in JAX (flax linen): the same model, CTC loss and WER as the PyTorch twin
(`torch_workload.py` describes the model), 18,381,312 parameters.

Each bidirectional LSTM is flax's `OptimizedLSTMCell` run by `nn.RNN` over each utterance's real
frames (the backward direction starts at the last real frame; outputs past the end are 0), as
PyTorch's packed sequences run it. A flax LSTM gate has one bias where PyTorch's has two (b_ih +
b_hh), 12,288 parameters fewer over the 6 layers (the reference's JAX count); the converter adds
PyTorch's two biases into one and writes it back as b_ih with b_hh = 0. Init as PyTorch's LSTM:
weights U(-k, k), k = 1 / sqrt(256), and the one bias distributed as PyTorch's sum of two such
draws; Xavier-uniform dense and convolution kernels, zero biases, norms' scales 0.

Module names follow the reference's JAX model: `Subsample_0/{Conv2dSubsampling_0, _1, Dense_0}`,
`BatchRNN_<i>/{BatchNorm_0 or LayerNorm_0, LSTM_0/{forward_rnn, backward_rnn}/cell/{ii, if, ig,
io, hi, hf, hg, ho}}`, `FeedForwardModule_<i>/{BatchNorm_0 or LayerNorm_0, Dense_0}`, then the
decoder's `LayerNorm_0` (absent in `norm_and_spec_aug`) and `Dense_0`.
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

ENCODER_DIM, NUM_LSTM_LAYERS, NUM_FFN_LAYERS = 512, 6, 3


def torch_lstm_uniform(key: Any, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Any:
    """PyTorch's LSTM init, U(-1/sqrt(hidden), 1/sqrt(hidden)) (hidden: the last axis)."""
    bound = 1.0 / math.sqrt(shape[-1])
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def torch_lstm_bias(key: Any, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Any:
    """The sum of PyTorch's two gate biases (b_ih + b_hh), each U(-k, k): one flax bias."""
    k1, k2 = jax.random.split(key)
    return torch_lstm_uniform(k1, shape, dtype) + torch_lstm_uniform(k2, shape, dtype)


class Subsample(nn.Module):
    use_tanh: bool
    dim: int = ENCODER_DIM

    @nn.compact
    def __call__(self, x: Any, paddings: Any, train: bool, rate: float) -> tuple[Any, Any]:
        x, paddings = Conv2dSubsampling(self.dim, self.use_tanh)(x[..., None], paddings)
        x, paddings = Conv2dSubsampling(self.dim, self.use_tanh)(x, paddings)
        n, frames, bins, channels = x.shape
        x = nn.Dense(self.dim, kernel_init=xavier)(x.reshape(n, frames, bins * channels))
        return dropout(x, rate, train, self), paddings


class BatchRNN(nn.Module):
    """A norm, then a bidirectional LSTM over each utterance's real frames (zeros after them)."""

    layernorm: bool

    @nn.compact
    def __call__(self, x: Any, paddings: Any, use_running_average: bool) -> Any:
        if self.layernorm:
            x = LayerNorm()(x)
        else:
            x = BatchNorm()(x, paddings, use_running_average)
        # An all-padding row (never in real data) runs one frame, as the PyTorch twin packs it.
        lengths = jnp.maximum((1 - paddings).sum(1), 1).astype(jnp.int32)

        def direction() -> nn.RNN:  # unbound (parent=None): named by the module that holds it
            # param_dtype also sets the dtype of the zero initial state (float64 in x64 tests).
            cell = nn.OptimizedLSTMCell(x.shape[-1] // 2, kernel_init=torch_lstm_uniform,
                                        recurrent_kernel_init=torch_lstm_uniform,
                                        bias_init=torch_lstm_bias, param_dtype=x.dtype,
                                        parent=None)
            return nn.RNN(cell, parent=None)

        out = nn.Bidirectional(direction(), direction(), name="LSTM_0")(x, seq_lengths=lengths)
        real = jnp.arange(x.shape[1])[None, :] < lengths[:, None]
        return out * real[:, :, None]


class FeedForwardModule(nn.Module):
    layernorm: bool
    use_tanh: bool

    @nn.compact
    def __call__(self, x: Any, paddings: Any, train: bool, rate: float,
                 use_running_average: bool) -> Any:
        if self.layernorm:
            x = LayerNorm()(x)
        else:
            x = BatchNorm()(x, paddings, use_running_average)
        x = nn.Dense(x.shape[-1], kernel_init=xavier)(x)
        x = (jnp.tanh(x) if self.use_tanh else nn.relu(x)) * (1 - paddings)[:, :, None]
        return dropout(x, rate, train, self)


class DeepSpeech(nn.Module):
    use_tanh: bool = False
    enable_residual_connections: bool = True
    layernorm_everywhere: bool = False
    enable_decoder_layer_norm: bool = True
    freq_mask_count: int = 2
    time_mask_count: int = 10
    encoder_dim: int = ENCODER_DIM  # the sizes are options for tests of the same code paths
    num_lstm_layers: int = NUM_LSTM_LAYERS
    num_ffn_layers: int = NUM_FFN_LAYERS

    @nn.compact
    def __call__(self, inputs: Any, input_paddings: Any, train: bool, dropout_rate: float = 0.1,
                 use_running_average_bn: bool | None = None) -> tuple[Any, Any]:
        use_running_average = not train if use_running_average_bn is None else use_running_average_bn
        x, paddings = front(inputs, input_paddings, train, self.freq_mask_count, self.time_mask_count)
        x, paddings = Subsample(self.use_tanh, self.encoder_dim)(x, paddings, train, dropout_rate)
        for _ in range(self.num_lstm_layers):
            out = BatchRNN(self.layernorm_everywhere)(x, paddings, use_running_average)
            x = x + out if self.enable_residual_connections else out
        for _ in range(self.num_ffn_layers):
            out = FeedForwardModule(self.layernorm_everywhere, self.use_tanh)(
                x, paddings, train, dropout_rate, use_running_average)
            x = x + out if self.enable_residual_connections else out
        if self.enable_decoder_layer_norm:
            x = LayerNorm()(x)
        return nn.Dense(VOCAB_SIZE, kernel_init=xavier)(x), paddings


class DeepSpeechWorkload(LibriSpeechJaxWorkload):
    def build_model(self) -> nn.Module:
        o = self.options
        return DeepSpeech(
            use_tanh=bool(o.get("use_tanh", False)),
            enable_residual_connections=bool(o.get("enable_residual_connections", True)),
            layernorm_everywhere=bool(o.get("layernorm_everywhere", False)),
            enable_decoder_layer_norm=bool(o.get("enable_decoder_layer_norm", True)),
            freq_mask_count=int(o.get("freq_mask_count", 2)),
            time_mask_count=int(o.get("time_mask_count", 10)),
            encoder_dim=int(o.get("encoder_dim", ENCODER_DIM)),
            num_lstm_layers=int(o.get("num_lstm_layers", NUM_LSTM_LAYERS)),
            num_ffn_layers=int(o.get("num_ffn_layers", NUM_FFN_LAYERS)),
        )
