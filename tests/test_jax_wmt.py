"""WMT in JAX equals its PyTorch twin: same outputs, loss, AdamW step and beam-search translations
on the same weights, for the base model and every variant (at the twin's small test dimensions,
the same code paths; full-size parameter counts from shapes); a step sharded over 8 CPU devices
equals the single-device step."""

from __future__ import annotations

import functools

import jax
import numpy as np
import parity_twins
import pytest
import torch

from algoperf import spec
from workloads import registry
from workloads.convert import check_complete, flatten
from workloads.wmt import convert as wmt_convert
from workloads.wmt.workload import EOS_ID

import parity

VARIANTS = ("wmt", "wmt_post_ln", "wmt_attention_temp", "wmt_glu_tanh")
SMALL = wmt_convert.PARITY_OPTIONS
HEAVY_VARIANTS = ["wmt", *(pytest.param(n, marks=pytest.mark.heavy) for n in VARIANTS[1:])]


def _fresh_twins(name: str) -> tuple:
    tw, jw, model, convert = parity_twins.twins(name, **SMALL)
    # EOS scored low: the random model's translations then run for several tokens (a search
    # that stops at the first token would compare nothing).
    with torch.no_grad():
        model.shared_embedding.weight[EOS_ID] *= 0.1
    return tw, jw, model, convert


_twins = functools.cache(_fresh_twins)


def _batch(tw) -> dict:
    """Two packed training rows (several sentence pairs each, positions and segmentations)."""
    return next(tw.train_batches(2, seed=0))


@pytest.mark.parametrize("name", VARIANTS)
def test_full_size_jax_model_has_the_reference_parameter_count(name: str) -> None:
    jw = registry.load(name, "jax", data="synthetic")
    params = parity_twins.jax_shapes(jw)["params"]
    assert sum(x.size for x in jax.tree.leaves(params)) == registry.get(name).n_params["jax"]


@pytest.mark.parametrize("name", VARIANTS)
def test_conversion_covers_every_parameter_and_round_trips(name: str) -> None:
    _, jw, model, convert = _twins(name)
    paths = ["params/" + p for p in flatten(parity_twins.jax_shapes(jw)["params"])]
    torch_names = [k for k in model.state_dict() if k not in wmt_convert.TORCH_CONSTANTS]
    check_complete(wmt_convert.covered(convert.options), torch_names, paths)
    state = parity.torch_state(model)
    back = convert.to_torch(convert.to_flax(state))
    assert back.keys() == state.keys()
    for key, value in state.items():
        if key in wmt_convert.TORCH_CONSTANTS:  # the table in float64 (the reference JAX's),
            np.testing.assert_allclose(back[key], value, atol=1e-5, err_msg=key)  # torch: float32
        else:
            np.testing.assert_array_equal(back[key], value, err_msg=key)


# The attention temperature is a number in the base code path: its outputs are compared in
# `make test-heavy`; every variant's parameter tree and count above in `make test`.
@pytest.mark.parametrize("name", [n if n != "wmt_attention_temp" else
                                  pytest.param(n, marks=pytest.mark.heavy) for n in VARIANTS])
def test_same_weights_give_the_same_outputs_and_loss(name: str) -> None:
    tw, jw, model, convert = _twins(name)
    params, state = parity.load_into_jax(model, convert)
    batch = _batch(tw)
    tb = tw.device_batch(batch)
    t_logits, _ = tw.model_fn(model, tb, None, spec.ForwardPassMode.EVAL, None, False)
    j_logits = parity_twins.eval_outputs(jw, params, state, batch)
    assert parity.max_relative_difference(j_logits, t_logits.numpy()) <= 1e-4
    for weights in (tb["weights"], None):  # per-token mask; none: every position counts
        t_loss = tw.loss_fn(tb["targets"], t_logits, weights, label_smoothing=0.1)
        j_loss = jw.loss_fn(batch["targets"], j_logits,
                            None if weights is None else batch["weights"], label_smoothing=0.1)
        np.testing.assert_allclose(float(j_loss["summed"]), float(t_loss["summed"]), rtol=1e-4)
        assert float(j_loss["n_valid_examples"]) == float(t_loss["n_valid_examples"])


@pytest.mark.parametrize("name", HEAVY_VARIANTS)
def test_one_adamw_step_gives_the_same_parameters(name: str) -> None:
    tw, jw, model, convert = _twins(name)
    batch = _batch(tw)
    expected = parity_twins.torch_float64_step(tw, model, tw.device_batch(batch))
    got = parity_twins.jax_float64_step(jw, model, convert, batch)
    worst = parity_twins.relative_differences(got, expected)
    assert max(worst.values()) <= 1e-4, {k: v for k, v in worst.items() if v > 1e-4}


SOURCES = np.array([[5, 7, 9, 2, 0, 0, 0, 0], [3, 4, 2, 0, 0, 0, 0, 0],
                    [6, 6, 8, 10, 12, 2, 0, 0], [11, 2, 0, 0, 0, 0, 0, 0]], np.int32)


@pytest.mark.parametrize("name", HEAVY_VARIANTS)
def test_beam_search_translates_the_same_in_both_frameworks(name: str) -> None:
    _, jw, model, convert = _twins(name)
    params, _ = parity.load_into_jax(model, convert)
    with torch.no_grad():
        expected = model.translate(torch.from_numpy(SOURCES).long(), 8).numpy()
    got = jw.translate(params, SOURCES, 8)
    assert (expected != EOS_ID).sum() >= 8  # the search had work to do
    np.testing.assert_array_equal(got, expected)


@pytest.mark.heavy
def test_cached_decoding_equals_teacher_forcing() -> None:
    from workloads.wmt.jax_workload import Transformer

    _, jw, model, convert = _twins("wmt")
    params, _ = parity.load_into_jax(model, convert)
    src, tgt = SOURCES[:1], np.array([[4, 11, 6, 3, 2]], np.int32)
    forced = jw._model.apply({"params": params}, src, tgt, train=False)[0]
    cross, cache = jw._model.apply({"params": params}, src, 1, 8, method=Transformer.init_decoding)
    token = np.zeros(1, np.int32)
    for t in range(tgt.shape[1]):
        logits, cache = jw._model.apply({"params": params}, token, t, cache, cross,
                                        method=Transformer.decode_step)
        np.testing.assert_allclose(logits[0], forced[t], rtol=1e-4, atol=1e-5)
        token = tgt[:, t]


def test_a_step_sharded_over_8_devices_equals_the_single_device_step() -> None:
    tw, jw, model, convert = _twins("wmt")
    batch = next(tw.train_batches(8, seed=0))
    single = parity_twins.jax_float64_step(jw, model, convert, batch)
    sharded = parity_twins.jax_float64_step(jw, model, convert, batch, placed_batch=jw.device_batch)
    worst = parity_twins.relative_differences(sharded, single)
    assert max(worst.values()) <= 1e-8, {k: v for k, v in worst.items() if v > 1e-8}


@pytest.mark.heavy
def test_eval_of_jax_and_torch_agree_on_the_same_weights() -> None:
    # Fresh workloads: with synthetic data, the eval-train split depends on whether the training
    # split was read first (both share the "train" pairs cache, of different synthetic sizes).
    tw, jw, model, convert = _fresh_twins("wmt")
    parity.assert_evals_agree(tw, jw, model, convert, 2)
