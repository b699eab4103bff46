"""Checkpoints round-trip any pytree: dicts, lists, tuples, namedtuples, dataclasses, flax
FrozenDicts, optax states, with numpy, torch and jax leaves (a property test over random trees)."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from flax.core import FrozenDict
from hypothesis import given, settings
from hypothesis import strategies as st

from algoperf import checkpoint as ckpt
from algoperf.backends import jax as jax_backend
from algoperf.backends import pytorch as torch_backend


class Pair(NamedTuple):
    first: Any
    second: Any


@dataclasses.dataclass
class Box:
    content: Any
    label: str = "box"


@dataclasses.dataclass(frozen=True)
class FrozenBox:
    content: Any


arrays = st.builds(
    lambda shape, seed, dtype: np.random.default_rng(seed).standard_normal(shape).astype(dtype),
    st.lists(st.integers(0, 3), max_size=3).map(tuple), st.integers(0, 2**31), st.sampled_from(["float32", "float64", "int32"]),
)
leaves = st.one_of(arrays, st.integers(), st.floats(allow_nan=False), st.text(max_size=5), st.none())
keys = st.text(min_size=1, max_size=4)
trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.dictionaries(keys, children, max_size=3),
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.builds(Pair, children, children),
        st.builds(Box, children),
        st.builds(FrozenBox, children),
        st.dictionaries(keys, children, max_size=3).map(FrozenDict),
    ),
    max_leaves=12,
)


def assert_same(a: Any, b: Any) -> None:
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    elif isinstance(a, (dict, FrozenDict)):
        assert set(a) == set(b)  # a FrozenDict iterates in its own order
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name))
    else:
        assert a == b


@settings(max_examples=60, deadline=None)
@given(tree=trees)
def test_any_pytree_survives_a_checkpoint_file(tmp_path_factory, tree):
    path = tmp_path_factory.mktemp("ckpt") / "c.ckpt"
    ckpt.write(ckpt.capture(tree), str(path))
    restored = ckpt.restore(tree, ckpt.read(str(path)))
    assert_same(restored, tree)


def test_an_optax_state_with_jax_arrays_round_trips(tmp_path):
    params = {"w": jnp.arange(6.0).reshape(2, 3), "b": {"x": jnp.ones(3)}}
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
    state = tx.init(params)
    for _ in range(3):
        updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    ckpt.write(ckpt.capture((state, tx), jax_backend.to_numpy), str(tmp_path / "c"))
    fresh = (tx.init(params), tx)
    restored, restored_tx = ckpt.restore(fresh, ckpt.read(str(tmp_path / "c")), jax_backend.from_numpy)
    assert restored_tx.update is tx.update  # functions are not saved: set-up's own are kept
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        assert isinstance(a, jax.Array) and np.array_equal(np.asarray(a), np.asarray(b))


def test_torch_models_optimizers_and_bfloat16_round_trip(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    extra = {"half": torch.randn(3, dtype=torch.bfloat16), "step": torch.tensor(7)}
    saved = ckpt.capture({"model": model, "opt": optimizer, "extra": extra}, torch_backend.to_numpy)
    ckpt.write(saved, str(tmp_path / "c"))
    fresh_model = torch.nn.Linear(4, 3)
    fresh_opt = torch.optim.AdamW(fresh_model.parameters(), lr=0.1)
    fresh_extra = {"half": torch.zeros(3, dtype=torch.bfloat16), "step": torch.tensor(0)}
    out = ckpt.restore({"model": fresh_model, "opt": fresh_opt, "extra": fresh_extra},
                       ckpt.read(str(tmp_path / "c")), torch_backend.from_numpy)
    assert torch.equal(out["model"].weight, model.weight)
    state, fresh_state = optimizer.state_dict()["state"][0], out["opt"].state_dict()["state"][0]
    assert torch.equal(state["exp_avg"], fresh_state["exp_avg"])
    assert out["extra"]["half"].dtype == torch.bfloat16 and torch.equal(out["extra"]["half"], extra["half"])
    assert int(out["extra"]["step"]) == 7
