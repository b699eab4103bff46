"""fastMRI in JAX (flax linen): the PyTorch twin's U-Net in the reference's flax param tree.

Names follow the reference's flax U-Net: `ConvBlock_0..P-1` down, `ConvBlock_P` at the bottom,
then `TransposeConvBlock_i` and `ConvBlock_{P+1+i}` up, and the final 1x1 convolution `Conv_0`;
inside a block `Conv_0`, `Conv_1` (and `LayerNorm_0`, `LayerNorm_1` in fastmri_layernorm),
`ConvTranspose_0`. The numbers are the twin's (`torch_workload.py`), which a parity test holds
equal: 3x3 convolutions without bias, instance norm (eps 1e-5, no affine) or a layer norm over
(H, W, C) with a per-channel scale and bias (eps 1e-6: PyTorch's GroupNorm with one group),
leaky ReLU 0.2 (or tanh), channel dropout (a whole feature map, as `dropout2d`) at the rate
given per call, 2x2 average pooling, 2x2 stride-2 transposed convolutions, reflect padding of
odd sizes, concatenation with the skip.

Initialisation is the twin's: every kernel LeCun-normal truncated at two standard deviations,
the final convolution's bias 0. For the transposed convolutions the fan-in is PyTorch's (output
channels x kernel area, as the reference's PyTorch model draws it); flax's would be the input
channels (the reference's flax model, whose draw is therefore 1.4x narrower there).

Evaluation: the SSIM of every slice is computed on the host by `workloads/fastmri/ssim.py`, the
framework-free metric both frameworks' evals call.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from algoperf import spec
from algoperf.jax_utils import Dropout
from workloads.fastmri.ssim import ssim_sum
from workloads.fastmri.workload import FastMriData
from workloads.jax_base import JaxWorkload

# PyTorch's fan-in of a ConvTranspose2d weight (in, out, kh, kw) is out x kh x kw; flax keeps the
# kernel as (kh, kw, in, out).
TRANSPOSED_LECUN_NORMAL = nn.initializers.variance_scaling(
    1.0, "fan_in", "truncated_normal", in_axis=-1, out_axis=-2)


def instance_norm(x: Any, epsilon: float = 1e-5) -> Any:
    """PyTorch's InstanceNorm2d without affine parameters, over the spatial axes of NHWC."""
    mean = jnp.mean(x, axis=(1, 2), keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=(1, 2), keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + epsilon)


def _activation(use_tanh: bool) -> Any:
    return jnp.tanh if use_tanh else (lambda x: jax.nn.leaky_relu(x, negative_slope=0.2))


class ConvBlock(nn.Module):
    """Twice: 3x3 convolution (no bias), instance (or layer) norm, activation, channel dropout."""

    out_channels: int
    use_tanh: bool = False
    use_layer_norm: bool = False

    @nn.compact
    def __call__(self, x: Any, train: bool, dropout_rate: float) -> Any:
        act = _activation(self.use_tanh)
        for i in range(2):
            x = nn.Conv(self.out_channels, (3, 3), padding=[(1, 1), (1, 1)], use_bias=False,
                        name=f"Conv_{i}")(x)
            if self.use_layer_norm:
                x = nn.LayerNorm(epsilon=1e-6, reduction_axes=(1, 2, 3), use_fast_variance=False,
                                 name=f"LayerNorm_{i}")(x)
            else:
                x = instance_norm(x)
            x = Dropout(broadcast_dims=(1, 2))(act(x), deterministic=not train, rate=dropout_rate)
        return x


class TransposeConvBlock(nn.Module):
    """2x2 stride-2 transposed convolution (no bias), instance norm, activation (every variant)."""

    out_channels: int
    use_tanh: bool = False

    @nn.compact
    def __call__(self, x: Any) -> Any:
        x = nn.ConvTranspose(self.out_channels, (2, 2), strides=(2, 2), use_bias=False,
                             kernel_init=TRANSPOSED_LECUN_NORMAL, name="ConvTranspose_0")(x)
        return _activation(self.use_tanh)(instance_norm(x))


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015) as in fastMRI (Zbontar et al. 2018): (N, H, W) -> (N, H, W)."""

    num_channels: int = 32
    num_pool_layers: int = 4
    use_tanh: bool = False
    use_layer_norm: bool = False

    @nn.compact
    def __call__(self, x: Any, train: bool, dropout_rate: float = 0.0) -> Any:
        def block(channels: int, index: int) -> ConvBlock:
            return ConvBlock(channels, self.use_tanh, self.use_layer_norm, name=f"ConvBlock_{index}")

        skips = []
        out = x[..., None]
        ch = self.num_channels
        for i in range(self.num_pool_layers):
            out = block(ch, i)(out, train, dropout_rate)
            skips.append(out)
            out = nn.avg_pool(out, (2, 2), strides=(2, 2))
            if i < self.num_pool_layers - 1:
                ch *= 2
        out = block(ch * 2, self.num_pool_layers)(out, train, dropout_rate)
        for i in range(self.num_pool_layers):
            skip = skips.pop()
            out = TransposeConvBlock(ch, self.use_tanh, name=f"TransposeConvBlock_{i}")(out)
            # Odd sizes: reflect-pad one row/column at the bottom/right to match the skip.
            pad_h, pad_w = int(out.shape[1] != skip.shape[1]), int(out.shape[2] != skip.shape[2])
            if pad_h or pad_w:
                out = jnp.pad(out, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
            out = block(ch, self.num_pool_layers + 1 + i)(
                jnp.concatenate([out, skip], axis=-1), train, dropout_rate)
            if i < self.num_pool_layers - 1:
                ch //= 2
        return nn.Conv(1, (1, 1), name="Conv_0")(out)[..., 0]


class FastMriWorkload(FastMriData, JaxWorkload):
    def build_model(self) -> nn.Module:
        return UNet(
            num_channels=int(self.options.get("num_channels", 32)),
            num_pool_layers=int(self.options.get("num_pool_layers", 4)),
            use_tanh=bool(self.options.get("use_tanh", False)),
            use_layer_norm=bool(self.options.get("use_layer_norm", False)),
        )

    def is_output_params(self, param_key: spec.ParameterKey) -> bool:
        return param_key == "Conv_0"

    @property
    def _eval_batch_jit(self) -> Any:
        # The SSIM is computed on the host (numpy); only the forward pass is jitted.
        return self.eval_batch

    def eval_batch(self, params: Any, model_state: Any, batch: dict[str, Any], rng: Any) -> dict[str, Any]:
        """Summed SSIM and summed L1 loss over the real (weight 1) examples of a device batch."""
        outputs, loss = jax.device_get(self._outputs_and_loss(params, model_state, batch, rng))
        host = {k: np.asarray(jax.device_get(batch[k]))
                for k in ("targets", "mean", "std", "volume_max", "weights")}
        return {"ssim": ssim_sum(np.asarray(outputs), **host), "loss": float(loss)}

    @functools.cached_property
    def _outputs_and_loss(self) -> Any:
        def forward(params: Any, model_state: Any, batch: dict[str, Any], rng: Any) -> Any:
            outputs, _ = self.model_fn(params, batch, model_state, spec.ForwardPassMode.EVAL, rng,
                                       update_batch_norm=False)
            return outputs, self.loss_fn(batch["targets"], outputs, batch["weights"])["summed"]

        return jax.jit(forward)
