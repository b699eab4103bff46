"""A PyTorch workload and its JAX twin on the same weights: the pieces the parity tests share.

`Twins(name, options, inputs)` builds both workloads of a registered workload or variant
(optionally with extra model options, e.g. Criteo's small vocabulary), initialises the flax
model on a small example (the real `init_model_fn`, traced on `inputs`), and loads the PyTorch
weights into flax through the workload's conversion table. Built once per test module.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np
import torch
from scipy import stats

from algoperf import jax_sharding_utils, spec
from algoperf.random_utils import prng_key
from workloads import registry
from workloads.convert import Converter, Rule, check_complete, converter, flatten
from workloads.convert import flax_to_torch as table_to_torch
from workloads.convert import torch_to_flax as table_to_flax

import parity

# Counters PyTorch keeps beside batch-norm statistics and flax does not: PyTorch reads them only
# when a batch norm's momentum is None (a cumulative average), which no model here uses.
TORCH_ONLY_SUFFIXES = ("num_batches_tracked",)


def mapped_torch_names(model: torch.nn.Module) -> list[str]:
    return [k for k in model.state_dict() if not k.endswith(TORCH_ONLY_SUFFIXES)]


def perturb_constants(model: torch.nn.Module, seed: int = 0) -> None:
    """Every constant parameter or float buffer c becomes c * U(0.5, 1.5) (c != 0) or U(-0.1, 0.1)
    (c = 0); running variances stay positive."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if not t.is_floating_point() or t.numel() < 2 or not bool((t == t.flatten()[0]).all()):
                continue
            c = float(t.flatten()[0])
            u = torch.rand(t.shape, generator=g, dtype=t.dtype)
            t.copy_(c * (0.5 + u) if c else 0.2 * u - 0.1)


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """PyTorch on one thread while a parity check runs: on this 2-core machine under load, two
    threads cost 4x the CPU time of one (spinning), for a 1.2x shorter wall time when idle."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def rngs() -> dict[str, Any]:
    return {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}


def param_count(tree: Any) -> int:
    return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


@dataclass
class Twins:
    """Both frameworks' workload objects and models of one workload, ready for the same weights.

    The PyTorch model's constant tensors (zero heads, batch-norm scales of 0 or 1, running
    statistics) are perturbed after its initial draw (kept in `initial_state`): a zero head or a
    zero last batch-norm scale would make whole parts of the network invisible to the output and
    gradient checks. The flax model is bound to its workload without drawing weights (`jax.eval_shape` gives its
    variable tree): a jitted flax init costs ~0.15 s of XLA compile per parameter array on this
    CPU, more than all other checks of a model together; `init_draw()` draws when a test needs it.
    """

    name: str
    options: dict[str, Any]
    inputs: dict[str, np.ndarray]  # a small batch: what the model is traced and fed with
    torch_workload: Any = field(init=False)
    jax_workload: Any = field(init=False)
    torch_model: torch.nn.Module = field(init=False)
    initial_state: dict[str, np.ndarray] = field(init=False)  # torch's draw, before perturbing
    variable_shapes: dict[str, Any] = field(init=False)  # flax's variable tree (ShapeDtypeStructs)
    convert: Converter = field(init=False)

    def __post_init__(self) -> None:
        with one_torch_thread():
            self._build()

    def _build(self) -> None:
        torch.manual_seed(0)
        self.torch_workload = registry.load(self.name, "pytorch", data="synthetic", **self.options)
        self.jax_workload = registry.load(self.name, "jax", data="synthetic", **self.options)
        self.torch_model, _ = self.torch_workload.init_model_fn(prng_key(0))
        self.initial_state = parity.torch_state(self.torch_model)
        perturb_constants(self.torch_model)
        jw = self.jax_workload
        example = {k: v[:2] for k, v in self.inputs.items()}
        jw.init_inputs = lambda: jw.model_inputs(example)
        # What init_model_fn sets up, without the draw (JaxWorkload keeps these private).
        jw._model = jw.build_model()
        jw._takes_dropout = "dropout_rate" in inspect.signature(jw._model.__call__).parameters
        init = functools.partial(jw._model.init, train=False)
        self.variable_shapes = dict(jax.eval_shape(init, rngs(), *jw.init_inputs()))
        self.convert = converter(self.torch_workload)

    def init_draw(self) -> tuple[Any, Any]:
        """(params, model_state) as the JAX workload's own init_model_fn draws them."""
        return self.jax_workload.init_model_fn(prng_key(0))

    def flax_paths(self) -> list[str]:
        return list(flatten(self.variable_shapes))

    def loaded(self) -> tuple[Any, Any]:
        """(params, model_state) of the flax model holding the PyTorch model's current weights."""
        return parity.load_into_jax(self.torch_model, self.convert)

    def torch_outputs(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        tb = parity.to_torch_batch(batch)
        with one_torch_thread():
            out, _ = self.torch_workload.model_fn(self.torch_model, tb, None, spec.ForwardPassMode.EVAL,
                                                  None, False)
        return out.detach().numpy()

    def jax_outputs(self, params: Any, state: Any, batch: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self._eval_forward(params, state, batch))

    @functools.cached_property
    def _eval_forward(self) -> Any:
        jw = self.jax_workload
        return jax.jit(lambda p, s, b: jw.model_fn(p, b, s, spec.ForwardPassMode.EVAL, None, False)[0])


# ---- the checks every parity test module runs ---------------------------------------------------
def full_size_param_count(name: str, example: dict[str, np.ndarray]) -> int:
    """The JAX model's parameter count at the registered size, by tracing its init on `example`
    (no memory; none of these models' parameter shapes depends on the input's spatial size)."""
    jw = registry.load(name, "jax", data="synthetic")
    model = jw.build_model()
    init = functools.partial(model.init, train=False)
    shapes = jax.eval_shape(init, rngs(), *jw.model_inputs({k: v[:2] for k, v in example.items()}))
    return param_count(shapes["params"])


def check_conversion_table(twins: Twins) -> None:
    check_complete(twins.convert.rules(), mapped_torch_names(twins.torch_model), twins.flax_paths())


def distribution_mismatches(twins: Twins, params: Any, model_state: Any,
                            sample: int = 1 << 16) -> list[str]:
    """Parameters whose flax initial draw and PyTorch initial draw differ in distribution.

    A constant (zeros, ones, a batch-norm scale) must be the same constant; otherwise a two-sample
    Kolmogorov-Smirnov test (on evenly spaced samples of large tensors) must not reject equality
    at p = 1e-6: a spread off by 10% or a uniform instead of a normal fails it.
    """
    jax_weights = twins.convert.to_torch({"params": jax.device_get(params),
                                          **jax.device_get(model_state or {})})
    torch_weights = twins.initial_state
    bad = []
    for key, theirs in torch_weights.items():
        if key not in jax_weights:
            continue
        ours = np.asarray(jax_weights[key], np.float64).ravel()
        theirs = np.asarray(theirs, np.float64).ravel()
        if theirs.size > 1 and (np.all(theirs == theirs[0]) or np.all(ours == ours[0])):
            if not np.array_equal(ours, theirs):
                bad.append(f"{key}: constant {theirs[0]} in torch, values {ours[:3]}... in flax")
            continue
        pick = np.linspace(0, ours.size - 1, min(sample, ours.size)).astype(np.int64)
        p_value = stats.ks_2samp(ours[pick], theirs[pick]).pvalue
        if p_value < 1e-6:
            bad.append(f"{key}: KS p = {p_value:.2g} (flax std {ours.std():.4g}, "
                       f"torch std {theirs.std():.4g})")
    return bad


def output_and_loss_differences(twins: Twins, batch: dict[str, np.ndarray]) -> tuple[float, float]:
    """(max relative output difference, relative summed-loss difference), float32, eval mode."""
    params, state = twins.loaded()
    ours = twins.jax_outputs(params, state, batch)
    theirs = twins.torch_outputs(batch)
    tb = parity.to_torch_batch(batch)
    t_loss = twins.torch_workload.loss_fn(tb["targets"], torch.from_numpy(theirs), tb["weights"])
    j_loss = twins.jax_workload.loss_fn(batch["targets"], ours, batch["weights"])
    assert float(j_loss["n_valid_examples"]) == float(t_loss["n_valid_examples"])
    t_sum = float(t_loss["summed"])
    return (parity.max_relative_difference(ours, theirs),
            abs(float(j_loss["summed"]) - t_sum) / max(abs(t_sum), 1e-12))


# ---- one AdamW step in float64 ------------------------------------------------------------------
# The step checks run in float64: in float32, rounding alone moves one AdamW step of these deep
# networks by more than the 1e-4 tolerance (measured, PyTorch float32 against PyTorch float64 on
# the same batch: 4.4e-4 relative for CIFAR's ResNet-18, 19% for imagenet_resnet_large_bn_init,
# whose residual stream grows 8x per block), so a float32 comparison could not tell a wrong
# gradient from rounding. In float64 the same networks agree to ~1e-12.
def as_float64(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in batch.items()}


def torch_float64_step(twins: Twins, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The PyTorch model's state after one AdamW step in float64 (on a copy of the model)."""
    model = copy.deepcopy(twins.torch_model).double()
    with one_torch_thread():
        return parity.torch_adamw_step(twins.torch_workload, model, as_float64(batch))


def jax_float64_step(twins: Twins, batch: dict[str, np.ndarray], sharded: bool = False) -> dict[str, np.ndarray]:
    """The flax model's state (as a PyTorch state_dict) after one AdamW step in float64, on one
    device or with the batch split over all devices and the parameters replicated."""
    with jax.enable_x64(True):
        model = copy.deepcopy(twins.torch_model).double()
        params, state = parity.load_into_jax(model, twins.convert)
        batch = as_float64(batch)
        if sharded:  # where the workload puts them (replicated, unless it says otherwise)
            jw = twins.jax_workload
            place = getattr(jw, "param_shardings", None)
            params = jax.device_put(params, place(params)) if place else jax_sharding_utils.replicate(params)
            state = jax_sharding_utils.replicate(state)
            batch = jax_sharding_utils.shard_along_batch_dim(batch)
        else:
            params, state, batch = parity.on_one_device((params, state, batch))
        new_params, new_state = parity.jax_adamw_step(twins.jax_workload, params, state, batch)
        devices = {d for leaf in jax.tree.leaves(new_params) for d in leaf.sharding.device_set}
        assert len(devices) == (jax.device_count() if sharded else 1)
        return parity.jax_params_as_torch(new_params, new_state, twins.convert)


def step_differences(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> dict[str, float]:
    """Per tensor of `ours`, max |ours - theirs| / max |theirs|."""
    return {k: parity.max_relative_difference(v, theirs[k]) for k, v in ours.items()}


# ---- one module (a variant's changed block) in both frameworks ---------------------------------
def sub_table(rules: list[Rule], torch_prefix: str, flax_prefix: str) -> list[Rule]:
    """The rules of one sub-module, re-rooted: `layer2.0.conv1.weight` -> `conv1.weight`, and
    `params/BottleneckResNetBlock_4/Conv_0/kernel` -> `params/Conv_0/kernel`."""
    out = []
    for r in rules:
        collection, _, rest = r.flax_path.partition("/")
        if r.torch_name.startswith(torch_prefix + ".") and rest.startswith(flax_prefix + "/"):
            out.append(Rule(r.torch_name[len(torch_prefix) + 1:], f"{collection}/{rest[len(flax_prefix) + 1:]}",
                            r.layout))
    return out


def module_differences(torch_module: torch.nn.Module, torch_forward: Any, flax_module: Any,
                       flax_forward: Any, rules: list[Rule], x: np.ndarray,
                       to_flax: Any = table_to_flax, to_torch: Any = table_to_torch) -> dict[str, float]:
    """Output and parameter-gradient differences of one module in train mode, in float64.

    The same weights (the PyTorch module's, perturbed as `perturb_constants` does) go into both,
    through `rules` (and the workload's own table functions where a plain table cannot say it);
    the loss is the output's inner product with a fixed random tensor. `torch_forward(module, x)`
    and `flax_forward(module, variables, x)` return the output in PyTorch's layout."""
    torch_module = copy.deepcopy(torch_module).double().train()
    perturb_constants(torch_module)
    with one_torch_thread():
        out = torch_forward(torch_module, torch.from_numpy(x))
        probe = np.random.default_rng(1).standard_normal(tuple(out.shape))
        (out * torch.from_numpy(probe)).sum().backward()
    torch_grads = {k: v.grad.numpy() for k, v in torch_module.named_parameters()}
    state = parity.torch_state(torch_module)
    with jax.enable_x64(True):
        variables = jax.tree.map(jax.numpy.asarray, to_flax(state, rules))
        params = variables.pop("params")

        def loss(p: Any) -> Any:
            y = flax_forward(flax_module, {"params": p, **variables}, x)
            return (y * probe).sum(), y

        grads, ours = jax.grad(loss, has_aux=True)(params)
        ours_grads = to_torch({"params": jax.device_get(grads)},
                              [r for r in rules if r.flax_path.startswith("params/")])
    assert set(ours_grads) == set(torch_grads), (sorted(ours_grads), sorted(torch_grads))
    diffs = {"output": parity.max_relative_difference(np.asarray(ours), out.detach().numpy())}
    # A gradient that is zero in exact arithmetic (an attention key bias: softmax ignores a shift
    # shared by all keys) is rounding noise in both: relative to the largest gradient there.
    floor = 1e-6 * max(float(np.abs(g).max()) for g in torch_grads.values())
    for k, v in ours_grads.items():
        scale = max(float(np.abs(torch_grads[k]).max()), floor)
        diffs[f"grad {k}"] = float(np.abs(v - torch_grads[k]).max()) / scale
    return diffs


# ---- a step sharded over the devices against the single-device step ----------------------------
def random_variables(shapes: Any, seed: int = 0) -> Any:
    """Plausible float64 values for a flax variable tree: kernels N(0, 1 / fan_in), scales and
    variances near 1, biases and means small. Any weights serve a sharded-vs-single comparison,
    and numpy draws them without compiling flax's initialisers."""
    rng = np.random.default_rng(seed)

    def draw(path: tuple[Any, ...], leaf: Any) -> np.ndarray:
        name = str(getattr(path[-1], "key", path[-1]))
        shape = tuple(leaf.shape)
        noise = rng.standard_normal(shape)
        if name in ("scale", "var"):
            return 1.0 + 0.1 * np.abs(noise)
        if len(shape) < 2 or name in ("bias", "mean"):
            return 0.1 * noise
        return noise / np.sqrt(np.prod(shape[:-1]))

    return jax.tree_util.tree_map_with_path(draw, shapes)


def sharded_and_single_steps(name: str, options: dict[str, Any], module: Any,
                             batch: dict[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, Any]]:
    """One AdamW step (float64) of `module` as workload `name`'s model, on `batch` split over all
    devices with the parameters where the workload puts them, and on one device: each as
    {flat variable path: value}. `module` is the workload's own model, or a shallower clone of
    it (same layers, fewer repeats: a cheaper compile and 8 replicas that fit in memory)."""
    jw = registry.load(name, "jax", data="synthetic", **options)
    jw._model = module  # what init_model_fn sets up (JaxWorkload keeps these private)
    jw._takes_dropout = "dropout_rate" in inspect.signature(module.__call__).parameters
    example = jw.model_inputs({k: v[:2] for k, v in batch.items()})
    shapes = jax.eval_shape(functools.partial(module.init, train=False), rngs(), *example)
    results = []
    with jax.enable_x64(True):
        variables = random_variables(dict(shapes))
        params = variables.pop("params")
        state = variables or None
        for sharded in (True, False):
            if sharded:
                place = getattr(jw, "param_shardings", None)
                p = jax.device_put(params, place(params)) if place else jax_sharding_utils.replicate(params)
                s = jax_sharding_utils.replicate(state)
                b = jax_sharding_utils.shard_along_batch_dim(as_float64(batch))
            else:
                p, s, b = parity.on_one_device((params, state, as_float64(batch)))
            new_params, new_state = parity.jax_adamw_step(jw, p, s, b)
            devices = {d for leaf in jax.tree.leaves(new_params) for d in leaf.sharding.device_set}
            assert len(devices) == (jax.device_count() if sharded else 1)
            results.append(flatten(jax.device_get({"params": new_params, **(new_state or {})})))
    return results[0], results[1]


def tree_differences(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, float]:
    assert ours.keys() == theirs.keys()
    return {k: parity.max_relative_difference(v, theirs[k]) for k, v in ours.items()}
