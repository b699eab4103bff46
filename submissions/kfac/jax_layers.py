"""Which flax layers K-FAC preconditions, and what they saw in a forward pass.

K-FAC needs, per layer, its inputs a and the gradients g of the loss with respect to its outputs.
The workload's model is run unchanged inside `flax.linen.intercept_methods`: the interceptor
records the input of every `nn.Dense` and `nn.Conv` call and adds a zero "tap" to its output
(s + tap). The tap changes no number of the forward pass, and the gradient with respect to a tap
is the gradient with respect to that layer's output, so one `jax.vjp` gives both the parameter
gradients and the output gradients (the trick of flax's `perturb`, without touching the model).

A layer is taken when it is a plain `nn.Dense`, or an `nn.Conv` without groups, mask or
circular/causal padding, called once per forward pass; every other parameter goes to Adam (as
in `optimizer.py`, PyTorch). A layer's factors are laid out as flax lays out its kernel: rows of
`kernel.reshape(-1, out)` (fan-in, kernel positions before input channels), a bias as one more
row on an input of ones.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.linear import canonicalize_padding

from submissions.kfac.jax_optimizer import input_factor, key_of, layer_params, output_factor

Path = tuple[str, ...]


class KfacLayer(NamedTuple):
    """A layer K-FAC preconditions: its parameter path and, for a convolution, its geometry."""

    path: Path  # the module's path, which is its parameters' path in the params tree
    conv: bool = False
    kernel_size: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    padding: Any = "VALID"  # 'SAME', 'VALID' or one (low, high) pair per spatial axis
    input_dilation: tuple[int, ...] = ()
    kernel_dilation: tuple[int, ...] = ()


def _tuple(value: Any, rank: int) -> tuple[int, ...]:
    if value is None:
        return (1,) * rank
    return (value,) * rank if isinstance(value, int) else tuple(value)


def layer_of(module: nn.Module) -> KfacLayer | None:
    """The K-FAC description of a module, or None when K-FAC does not handle it."""
    path = tuple(module.path)
    if type(module) is nn.Dense:
        return KfacLayer(path)
    if type(module) is not nn.Conv or module.feature_group_count != 1 or module.mask is not None:
        return None
    rank = len(module.kernel_size)
    if isinstance(module.padding, str) and module.padding.upper() not in ("SAME", "VALID"):
        return None
    padding = canonicalize_padding(module.padding, rank)
    return KfacLayer(path, True, tuple(module.kernel_size), _tuple(module.strides, rank),
                     padding if isinstance(padding, str) else tuple(tuple(p) for p in padding),
                     _tuple(module.input_dilation, rank), _tuple(module.kernel_dilation, rank))


def discover(forward: Callable[[], Any]) -> tuple[KfacLayer, ...]:
    """The K-FAC layers of a forward pass (traced abstractly, nothing is computed): every
    supported layer called exactly once (a layer called twice shares weights across calls in a
    way these factors do not model; it is left to Adam)."""
    calls: dict[Path, list[KfacLayer]] = {}

    def intercept(next_fun: Callable[..., Any], args: Any, kwargs: Any, context: Any) -> Any:
        if context.method_name == "__call__":
            layer = layer_of(context.module)
            if layer is not None:
                calls.setdefault(layer.path, []).append(layer)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(intercept):
        jax.eval_shape(forward)
    return tuple(found[0] for found in calls.values() if len(found) == 1)


@contextlib.contextmanager
def tapped(layers: tuple[KfacLayer, ...], taps: dict[Path, Any] | None,
           inputs: dict[Path, Any], output_shapes: dict[Path, Any] | None = None) -> Iterator[None]:
    """Within this block, each K-FAC layer's input goes to `inputs[path]`, `taps[path]` is added
    to its output (when taps are given), and its output's shape goes to `output_shapes`."""
    paths = {layer.path for layer in layers}

    def intercept(next_fun: Callable[..., Any], args: Any, kwargs: Any, context: Any) -> Any:
        path = tuple(context.module.path)
        if context.method_name != "__call__" or path not in paths:
            return next_fun(*args, **kwargs)
        inputs[path] = args[0] if args else kwargs["inputs"]
        out = next_fun(*args, **kwargs)
        if output_shapes is not None:
            output_shapes[path] = jax.ShapeDtypeStruct(out.shape, out.dtype)
        return out + taps[path] if taps is not None else out

    with nn.intercept_methods(intercept):
        yield


def tapped_vjp(apply: Callable[[Any], tuple[Any, Any]], params: Any, layers: tuple[KfacLayer, ...],
               ) -> tuple[Any, Callable[[Any], tuple[Any, Any]], Any, dict[Path, Any]]:
    """(outputs, vjp, aux, inputs) of `apply(params) -> (outputs, aux)` run with the layers tapped:
    `vjp(cotangent)` gives (parameter gradients, output gradients by layer path)."""
    shapes: dict[Path, Any] = {}

    def forward(p: Any, taps: dict[Path, Any] | None) -> tuple[Any, Any]:
        inputs: dict[Path, Any] = {}
        with tapped(layers, taps, inputs, shapes if taps is None else None):
            outputs, aux = apply(p)
        return outputs, (aux, inputs)

    jax.eval_shape(lambda p: forward(p, None), params)
    taps = {path: jnp.zeros(s.shape, s.dtype) for path, s in shapes.items()}
    outputs, vjp, (aux, inputs) = jax.vjp(forward, params, taps, has_aux=True)
    return outputs, vjp, aux, inputs


def conv_patches(x: jax.Array, layer: KfacLayer) -> jax.Array:
    """(N, R, prod(kernel) * C): the input patch of each of the R output positions, its features
    in the order of the rows of `kernel.reshape(-1, out)` (kernel positions, then channels)."""
    rank = len(layer.kernel_size)
    letters = "DHW"[-rank:] if rank <= 3 else "".join(chr(ord("a") + i) for i in range(rank))
    dims = (f"N{letters}C", f"{letters}IO", f"N{letters}C")
    patches = jax.lax.conv_general_dilated_patches(
        x, layer.kernel_size, layer.strides, layer.padding, lhs_dilation=layer.input_dilation,
        rhs_dilation=layer.kernel_dilation, dimension_numbers=dims,
    )
    # conv_general_dilated_patches orders a patch's features channel-major: (C, *kernel).
    n, c, k = x.shape[0], x.shape[-1], math.prod(layer.kernel_size)
    return jnp.swapaxes(patches.reshape(n, -1, c, k), -1, -2).reshape(n, -1, k * c)


def layer_inputs(layer: KfacLayer, a: jax.Array, has_bias: bool) -> jax.Array:
    """(N, R, fan_in [+ 1]): the inputs of each example and weight-sharing position (sequence
    positions, convolution patches) of one layer, with a column of ones for the bias."""
    a3 = conv_patches(a, layer) if layer.conv else a.reshape(a.shape[0], -1, a.shape[-1])
    if has_bias:
        a3 = jnp.concatenate([a3, jnp.ones_like(a3[..., :1])], axis=-1)
    return a3


def layer_output_grads(g: jax.Array) -> jax.Array:
    """(N, R, out): the output gradients of each example and position of one layer."""
    return g.reshape(g.shape[0], -1, g.shape[-1])


def batch_factors(layers: tuple[KfacLayer, ...], params: Any, inputs: dict[Path, Any],
                  output_grads: dict[Path, Any], approximation: str) -> dict[str, tuple[Any, Any]]:
    """{layer key: (A, B)} of one batch; `output_grads[path]` stacks P output-gradient vectors
    (one for the Monte-Carlo and the empirical Fisher), whose terms B sums."""
    factors = {}
    for layer in layers:
        has_bias = "bias" in layer_params(params, layer.path)
        a3 = layer_inputs(layer, inputs[layer.path], has_bias)
        g3s = jax.vmap(layer_output_grads)(output_grads[layer.path])
        b = jax.vmap(lambda g3: output_factor(g3, approximation))(g3s).sum(axis=0)
        factors[key_of(layer.path)] = (input_factor(a3, approximation), b)
    return factors
