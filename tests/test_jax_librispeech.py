"""The LibriSpeech Conformer and DeepSpeech in JAX equal their PyTorch twins: same outputs, CTC
loss, greedy decoding, AdamW step and eval on the same weights; the same SpecAugment masks from
the same random draws and the same log-mel features as the numpy front end; a step sharded over
8 CPU devices equals the single-device step.

`make test`: every variant's parameter tree and count; the base models' outputs, loss and
decoding; one float64 AdamW step through a block of each base model. `make test-heavy`: the
variants' outputs and block steps, the full models' AdamW step (~30 s each) and the eval."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax
import parity_twins
import pytest
import torch
import twins

from algoperf import jax_sharding_utils, spec
from workloads import registry
from workloads.convert import check_complete, flatten
from workloads.librispeech import frontend, jax_modules
from workloads.librispeech.metrics import ctc_greedy_decode
from workloads.librispeech.torch_modules import SpecAugment
from workloads.librispeech_conformer import jax_workload as conformer
from workloads.librispeech_deepspeech import jax_workload as deepspeech

import parity

BASES = ("librispeech_conformer", "librispeech_deepspeech")
VARIANTS = tuple(n for n in sorted(registry.all_workloads()) if registry.get(n).base_name in BASES)
HEAVY_VARIANTS = [n if n in BASES else pytest.param(n, marks=pytest.mark.heavy) for n in VARIANTS]
NO_SPECAUG = {"freq_mask_count": 0, "time_mask_count": 0}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    with twins.one_torch_thread():
        yield


@functools.cache
def _twins(name: str) -> tuple:
    """The twins, the PyTorch weights in their canonical form (see `_canonical`), SpecAugment
    off (its masks are random draws in each framework; their rule is compared below on shared
    draws): the PyTorch Conformer has no option for it, so its module's counts are set to 0, as
    the DeepSpeech option does."""
    tw, jw, model, convert = parity_twins.twins(name, **NO_SPECAUG)
    model.specaug.freq_mask_count = model.specaug.time_mask_count = 0
    _canonical(model, convert)
    return tw, jw, model, convert


def _canonical(model: torch.nn.Module, convert) -> None:
    """The PyTorch weights through flax and back: DeepSpeech's two LSTM biases as one (b_ih =
    b_ih + b_hh, b_hh = 0), the Conformer's positional constants from `positions.py`."""
    back = convert.to_torch(convert.to_flax(parity.torch_state(model)))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()})


def _batch(tw, n: int = 2, split: str = "validation", samples: int | None = None) -> dict:
    """The first n synthetic utterances; with `samples`, cut to that many samples (at least two
    0.2 s tones each), the second row's last quarter made padding: a cheap batch for the steps,
    whose cost is the convolutional subsampling's."""
    batch = {k: v[:n].copy() for k, v in tw.split_arrays(split).items()}
    if samples is not None:
        batch["inputs"] = batch["inputs"][:, :samples].copy()
        batch["input_paddings"] = batch["input_paddings"][:, :samples].copy()
        batch["input_paddings"][1, samples * 3 // 4 :] = 1.0
        batch["inputs"][1, samples * 3 // 4 :] = 0.0
    return batch


@functools.cache
def _outputs(name: str) -> tuple:
    """Eval-mode (logits, paddings) of both frameworks on the same weights and batch."""
    tw, jw, model, convert = _twins(name)
    params, state = parity.load_into_jax(model, convert)
    batch = _batch(tw)
    (t_logits, t_paddings), _ = tw.model_fn(model, tw.device_batch(batch), None,
                                            spec.ForwardPassMode.EVAL, None, False)
    j_logits, j_paddings = parity_twins.eval_outputs(jw, params, state, jw.model_batch(batch))
    return (t_logits, t_paddings), (j_logits, j_paddings), batch


@pytest.mark.parametrize("name", VARIANTS)
def test_conversion_covers_every_parameter_and_the_reference_count(name: str) -> None:
    _, jw, model, convert = _twins(name)
    shapes = parity_twins.jax_shapes(jw)
    paths = [f"{c}/{p}" for c in ("params", "batch_stats") for p in flatten(shapes.get(c, {}))]
    constants = getattr(convert.module, "TORCH_CONSTANTS", ())
    check_complete(convert.module.covered(convert.options),
                   [k for k in model.state_dict() if k not in constants], paths)
    assert sum(x.size for x in jax.tree.leaves(shapes["params"])) == registry.get(name).n_params["jax"]


def test_one_flax_lstm_bias_computes_what_the_two_pytorch_biases_did() -> None:
    name = "librispeech_deepspeech"
    _, _, model, _ = _twins(name)  # b_ih + b_hh folded into b_ih through flax, b_hh = 0
    tw, _, original, _ = parity_twins.twins(name, **NO_SPECAUG)
    folded = [t for k, t in parity.torch_state(model).items() if "bias_hh" in k]
    assert len(folded) == 12 and not any(t.any() for t in folded)
    assert all(t.any() for k, t in parity.torch_state(original).items() if "bias_hh" in k)
    batch = tw.device_batch(_batch(tw))
    (expected, _), _ = tw.model_fn(original, batch, None, spec.ForwardPassMode.EVAL, None, False)
    (got, _), _ = tw.model_fn(model, batch, None, spec.ForwardPassMode.EVAL, None, False)
    assert parity.max_relative_difference(got, expected) <= 1e-5


@pytest.mark.parametrize("name", HEAVY_VARIANTS)
def test_same_weights_give_the_same_outputs_and_loss(name: str) -> None:
    tw, jw, *_ = _twins(name)
    (t_logits, t_paddings), (j_logits, j_paddings), batch = _outputs(name)
    assert parity.max_relative_difference(j_logits, t_logits.numpy()) <= 1e-4
    np.testing.assert_array_equal(np.asarray(j_paddings), t_paddings.numpy())
    tb, jb = tw.device_batch(batch), jw.model_batch(batch)
    for weights in (None, np.array([1.0, 0.0], np.float32)):  # training (no mask); a masked row
        t_loss = tw.loss_fn(tb["targets"], (t_logits, t_paddings),
                            None if weights is None else torch.from_numpy(weights))
        j_loss = jw.loss_fn(jb["targets"], (j_logits, j_paddings), weights)
        np.testing.assert_allclose(float(j_loss["summed"]), float(t_loss["summed"]), rtol=1e-4)
        assert float(j_loss["n_valid_examples"]) == float(t_loss["n_valid_examples"])


@pytest.mark.parametrize("name", BASES)
def test_greedy_ctc_decoding_gives_the_same_tokens(name: str) -> None:
    (t_logits, t_paddings), (j_logits, j_paddings), _ = _outputs(name)
    expected = ctc_greedy_decode(t_logits.argmax(-1).numpy(), t_paddings.numpy())
    got = ctc_greedy_decode(np.asarray(j_logits).argmax(-1), np.asarray(j_paddings))
    assert sum(len(t) for t in expected) > 0 and got == expected


@functools.cache
def _steps(name: str) -> tuple:
    """(torch state, jax state) after one float64 AdamW step from the same weights on two
    training utterances of 0.4 s."""
    tw, jw, model, convert = _twins(name)
    batch = _batch(tw, 2, "train", samples=6_400)
    expected = parity_twins.torch_float64_step(tw, model, tw.device_batch(batch))
    return expected, parity_twins.jax_float64_step(jw, model, convert, jw.model_batch(batch))


@pytest.mark.heavy
@pytest.mark.parametrize("name", VARIANTS)
def test_one_adamw_step_gives_the_same_parameters_and_batch_norm_statistics(name: str) -> None:
    expected, got = _steps(name)
    assert set(got) == set(expected), sorted(set(got) ^ set(expected))
    extra = {k for k in expected if ".bias_hh_l0" in k}  # PyTorch's second LSTM bias
    # Each difference relative to the tensor's scale, or to Adam's step LR if the tensor is
    # smaller: a weight whose true gradient is 0 moves by rounding noise only. Measured: without
    # residual connections the subsampling's linear bias feeds straight into a batch norm, which
    # removes it; from 0 it moves by 7e-12 in PyTorch and 4e-12 in JAX (a real step: ~1e-3).
    worst = {k: float(np.abs(got[k] - v).max() / max(np.abs(v).max(), parity.LR))
             for k, v in expected.items() if k not in extra}
    assert max(worst.values()) <= 1e-4, {k: v for k, v in worst.items() if v > 1e-4}


@pytest.mark.heavy
@pytest.mark.parametrize("name", [n for n in VARIANTS if "deepspeech" in n])
def test_pytorch_second_lstm_bias_takes_the_same_step_as_the_first(name: str) -> None:
    # Both PyTorch biases get the same gradient, so from b_hh = 0 AdamW moves b_hh by exactly the
    # step of b_ih without its weight decay: PyTorch trains the sum b_ih + b_hh twice as fast as
    # flax trains its one bias, the one way the two parametrisations differ.
    expected, got = _steps(name)
    start = parity.torch_state(_twins(name)[2])
    for key in (k for k in expected if ".bias_hh_l0" in k):
        first = key.replace("bias_hh", "bias_ih")
        assert not start[key].any() and not got[key].any()
        step = expected[first] - start[first].astype(np.float64) * (1 - parity.LR * parity.WD)
        np.testing.assert_allclose(expected[key], step, rtol=1e-6, atol=1e-12, err_msg=key)


# The full models' step above costs ~30 s per workload (the flax step's compile, and its float64
# 512-channel subsampling convolution, which XLA's CPU runs ~25x slower than in float32), so it is
# heavy. In `make test` the same float64 AdamW step is taken through one block of each model (its
# first Conformer block: feed-forwards, attention, convolution module with batch norm; its first
# DeepSpeech BatchRNN: batch norm and packed bidirectional LSTM), on random frames whose second
# row ends in padding, with the loss sum(block(x) * r): the blocks' gradients and batch-norm
# statistics in both frameworks, at a few seconds each.
BLOCKS = {"librispeech_conformer": ("conformers.0", "ConformerBlock_0"),
          "librispeech_deepspeech": ("lstms.0", "BatchRNN_0")}


def _flax_block(jw) -> tuple[nn.Module, Callable[..., Any]]:
    """The flax module of the block and how a train step calls it (dropout 0, batch statistics)."""
    m = jw.build_model()
    if isinstance(m, conformer.Conformer):
        block = conformer.ConformerBlock(m.activation_name, m.attention_temperature,
                                         m.use_post_layer_norm, m.num_heads)
        return block, lambda b, x, p: b(x, p, True, 0.0, False)
    return deepspeech.BatchRNN(m.layernorm_everywhere), lambda b, x, p: b(x, p, False)


@functools.cache
def _block_steps(name: str) -> tuple:
    """(torch state before, torch state after, jax state after as torch tensors) of one float64
    AdamW step through the block; only the block's entries."""
    tw, jw, model, convert = _twins(name)
    prefix, flax_name = BLOCKS[registry.get(name).base_name]
    rng = np.random.default_rng(0)
    x, r = rng.normal(size=(2, 2, 12, 512))
    paddings = np.zeros((2, 12))
    paddings[1, 9:] = 1.0
    model = copy.deepcopy(model).double()
    start = parity.torch_state(model)
    block = model.get_submodule(prefix).train()
    optimizer = torch.optim.AdamW(block.parameters(), lr=parity.LR, betas=(parity.B1, parity.B2),
                                  eps=parity.EPS, weight_decay=parity.WD)
    args = (torch.from_numpy(x), torch.from_numpy(paddings))
    out = block(*args, 0.0) if "conformer" in name else block(*args)
    (out * torch.from_numpy(r)).sum().backward()
    optimizer.step()
    expected = parity.torch_state(model)

    module, call = _flax_block(jw)
    variables = convert.to_flax(start)
    tx = optax.adamw(parity.LR, b1=parity.B1, b2=parity.B2, eps=parity.EPS, weight_decay=parity.WD)

    def step(params: Any, state: Any, x: Any, paddings: Any, r: Any) -> tuple[Any, Any]:
        def loss(p: Any) -> tuple[Any, Any]:
            out, new_state = module.apply({"params": p, **state}, x, paddings, method=call,
                                          mutable=["batch_stats"])
            return (out * r).sum(), new_state

        grads, new_state = jax.grad(loss, has_aux=True)(params)
        updates, _ = tx.update(grads, tx.init(params), params)
        return optax.apply_updates(params, updates), new_state

    with jax.enable_x64(True):
        state = {c: variables[c][flax_name] for c in variables
                 if c != "params" and flax_name in variables[c]}
        new_params, new_state = jax.device_get(jax.jit(step)(
            variables["params"][flax_name], state, x, paddings, r))
    variables["params"][flax_name] = new_params
    for c, tree in new_state.items():
        variables[c][flax_name] = tree
    got = convert.to_torch(variables)
    return tuple({k: v for k, v in d.items() if k.startswith(prefix + ".")}
                 for d in (start, expected, got))


@pytest.mark.parametrize("name", HEAVY_VARIANTS)
def test_one_adamw_step_through_a_block_gives_the_same_parameters_and_statistics(name: str) -> None:
    start, expected, got = _block_steps(name)
    extra = [k for k in expected if ".bias_hh_l0" in k]  # PyTorch's second LSTM bias, below
    worst = parity_twins.relative_differences({k: v for k, v in got.items() if k not in extra},
                                              {k: v for k, v in expected.items() if k not in extra})
    moved = [k for k in worst if not np.array_equal(expected[k], start[k])]
    assert len(moved) == len(worst)  # every parameter and statistic of the block took a step
    assert max(worst.values()) <= 1e-8, {k: v for k, v in worst.items() if v > 1e-8}
    for key in extra:  # from b_hh = 0: the step of b_ih without its weight decay (see below)
        first = key.replace("bias_hh", "bias_ih")
        step = expected[first] - start[first] * (1 - parity.LR * parity.WD)
        np.testing.assert_allclose(expected[key], step, rtol=1e-9, atol=1e-15, err_msg=key)


# The sharded step compares JAX with itself: on smaller models of the same code paths (sizes the
# JAX models take as options), whose float64 step is cheap on the CPU (JAX's float64 convolutions
# are ~25x slower than its float32 ones: 27 s for this step of the full Conformer).
SMALL = {"librispeech_conformer": {"encoder_dim": 64, "num_heads": 4, "num_layers": 1},
         "librispeech_deepspeech": {"encoder_dim": 64, "num_lstm_layers": 1, "num_ffn_layers": 1}}


def _random_variables(jw) -> tuple[Any, Any]:
    """(params, model_state) of the flax model's shapes: weights N(0, 0.05^2), batch-norm
    statistics at their start (mean 0, variance 1), without compiling the model's init (the step
    compares JAX with itself: any weights do)."""
    parity_twins._set_up_without_init(jw)
    shapes = parity_twins.jax_shapes(jw)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: rng.normal(0.0, 0.05, s.shape).astype(s.dtype), shapes["params"])
    state = {"batch_stats": jax.tree_util.tree_map_with_path(
        lambda path, s: np.full(s.shape, float(path[-1].key == "var"), s.dtype),
        shapes["batch_stats"])}
    return params, state


# DeepSpeech's (batch norm over the devices' frames, the LSTM's lengths) in `make test`, the
# Conformer's (~15 s more) in `make test-heavy`: the sharding itself is the workloads' shared code.
@pytest.mark.parametrize("name", ["librispeech_deepspeech",
                                  pytest.param("librispeech_conformer", marks=pytest.mark.heavy)])
def test_a_step_sharded_over_8_devices_equals_the_single_device_step(name: str) -> None:
    jw = registry.load(name, "jax", data="synthetic", **SMALL[name], **NO_SPECAUG)
    params, state = _random_variables(jw)
    batch = _batch(jw, 8, "train", samples=6_400)
    single = parity_twins.jax_float64_update(jw, params, state, jw.model_batch(batch))
    sharded = parity_twins.jax_float64_update(jw, params, state, jw.model_batch(batch),
                                              jax_sharding_utils.shard_along_batch_dim)
    for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(single)):  # params, statistics
        # atol: the attention key biases' true gradient is 0 (a constant added to every score of
        # a query), so their step is rounding noise (~1e-14 here) in both runs.
        assert np.abs(a - b).max() <= 1e-8 * np.abs(b).max() + 1e-12


@pytest.mark.heavy
def test_eval_of_jax_and_torch_agree_on_the_same_weights() -> None:
    tw, jw, model, convert = _twins("librispeech_conformer")
    parity.assert_evals_agree(tw, jw, model, convert, 2)


# One compile per mask shape instead of one per operation.
_keep_mask = jax.jit(jax_modules.keep_mask, static_argnums=(1, 3, 4))


def test_spec_augment_masks_are_the_same_from_the_same_draws() -> None:
    lengths = torch.tensor([98, 61, 5])
    for count, ratio, size, max_length in ((10, 0.05, 98, lengths * 0.05),
                                           (2, 1.0, 80, torch.full((3,), 27.0))):
        choose = lengths if size == 98 else torch.full((3,), 80)
        torch.manual_seed(7)
        expected = SpecAugment.keep_mask(choose, size, max_length, count, ratio)
        torch.manual_seed(7)  # the draws keep_mask makes, in its order: lengths, then starts
        u_length, u_start = torch.rand(3, count), torch.rand(3, count)
        got = _keep_mask(choose.numpy(), size, max_length.numpy(), count, ratio,
                         u_length.numpy(), u_start.numpy())
        np.testing.assert_array_equal(np.asarray(got), expected.numpy())
        assert 0 < expected.sum() < expected.numel()


def test_log_mel_features_equal_the_numpy_front_end() -> None:
    tw, *_ = _twins("librispeech_conformer")
    batch = _batch(tw)
    expected, expected_paddings = frontend.log_mel(batch["inputs"], batch["input_paddings"])
    got, paddings = jax.jit(jax_modules.log_mel)(batch["inputs"], batch["input_paddings"])
    real = expected_paddings == 0
    assert parity.max_relative_difference(np.asarray(got)[real], expected[real]) <= 1e-4
    np.testing.assert_array_equal(np.asarray(paddings), expected_paddings)
