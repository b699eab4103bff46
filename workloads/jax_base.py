"""What every JAX workload shares: flax (linen) model init, forward in train/eval mode, the
standard losses, numpy -> sharded device batches, and the default classification eval.

A JAX workload subclasses its data class (from its `workload.py`) and `JaxWorkload`, and
implements `build_model()` (a `flax.linen.Module`) and, when its model does not take
`batch["inputs"]` alone, `model_inputs`. It overrides `loss_fn` or `eval_batch` only where its
model or metric differs. The same numpy input pipeline feeds both frameworks.

Parameters are the flax `params` collection as a plain dict, replicated over the mesh; other
variable collections (batch-norm statistics) are `model_state`. Batches are split along the
`batch` axis of one global mesh (DESIGN.md, Scale), or, under `--rules v0.5`
(`batch_layout="pmap"`), reshaped to `[devices, per_device_batch, ...]`, the layout pmap-era
submissions expect.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from algoperf import spec
from algoperf.backends import jax as backend
from workloads.base import BaseWorkload

LAYOUTS = ("sharded", "pmap")


def to_jax(batch: dict[str, Any], layout: str = "sharded") -> dict[str, Any]:
    """A numpy batch on the devices: split along the batch axis, or with a leading device axis."""
    arrays = {k: (v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype == np.float64 else v)
              for k, v in batch.items()}
    if layout == "pmap":
        n = jax.local_device_count()
        return jax.tree.map(lambda x: x.reshape(n, x.shape[0] // n, *x.shape[1:]), arrays)
    return backend.shard_batch(arrays)


class JaxInputQueue:
    """Device batches from a numpy stream; `state_dict()` is the stream's position."""

    def __init__(self, stream: Any, convert: Any) -> None:
        self.stream = stream
        self.convert = convert

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        return self.convert(next(self.stream))

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)


class JaxWorkload(BaseWorkload):
    """A workload whose model is a flax linen module and whose parameters are a pytree."""

    def __init__(self, *args: Any, batch_layout: str = "sharded", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if batch_layout not in LAYOUTS:
            raise ValueError(f"batch_layout must be one of {LAYOUTS}, got {batch_layout!r}")
        self.batch_layout = batch_layout
        self._model: nn.Module | None = None
        self._param_shapes: Any = None
        self._param_types: Any = None
        self._init_dropout: float | None = None
        self._init_aux_dropout: float | None = None
        self._takes_dropout = False

    # ---- model -------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        """The flax module of this workload (or variant: options are in `self.options`)."""
        raise NotImplementedError

    def init_inputs(self) -> tuple[Any, ...]:
        """Positional inputs for `module.init`: one small example of the model's inputs."""
        example = {k: v[:2] for k, v in self.split_arrays("validation").items()} \
            if self.data == "synthetic" else self.example_batch()
        return self.model_inputs(example)

    def example_batch(self) -> dict[str, np.ndarray]:
        """Two synthetic examples of the real shapes (what `init` traces the model with)."""
        saved = self.data
        self.data = "synthetic"
        try:
            arrays = self.synthetic_split("validation")
        finally:
            self.data = saved
        return {k: v[:2] for k, v in arrays.items()}

    def model_inputs(self, batch: dict[str, Any]) -> tuple[Any, ...]:
        """The model's positional inputs taken from a batch; multi-input models override this."""
        return (batch["inputs"],)

    def init_model_fn(
        self, rng: spec.RandomState, dropout_rate: float | None = None,
        aux_dropout_rate: float | None = None,
    ) -> tuple[spec.ParameterContainer, spec.ModelAuxiliaryState]:
        """(params, model_state), replicated over the mesh.

        A dropout rate given here (as v0.5/v0.6-era submissions do) is the rate `model_fn` uses
        when its caller passes none (the current reference passes it to `model_fn`)."""
        self._init_dropout, self._init_aux_dropout = dropout_rate, aux_dropout_rate
        self._model = self.build_model()
        self._takes_dropout = "dropout_rate" in inspect.signature(self._model.__call__).parameters
        key = jnp.asarray(rng, dtype=jnp.uint32) if not isinstance(rng, jax.Array) else rng
        params_key, dropout_key = jax.random.split(key)
        init = jax.jit(functools.partial(self._model.init, train=False))
        variables = init({"params": params_key, "dropout": dropout_key}, *self.init_inputs())
        variables = jax.tree.map(np.asarray, dict(variables))  # plain dicts, then placed below
        params = _plain(variables.pop("params"))
        model_state = _plain(variables) or None
        self._param_shapes = backend.param_shapes(params)
        self._param_types = backend.param_types(params)
        if self.batch_layout == "pmap":
            # v0.5: parameters carry a leading device axis (flax.jax_utils.replicate), as
            # pmap-era submissions expect.
            from flax import jax_utils as flax_jax_utils

            return flax_jax_utils.replicate(params), (
                flax_jax_utils.replicate(model_state) if model_state else None)
        return backend.replicate(params), (backend.replicate(model_state) if model_state else None)

    @property
    def param_shapes(self) -> Any:
        if self._param_shapes is None:
            raise ValueError("param_shapes is known after init_model_fn has run.")
        return self._param_shapes

    @property
    def model_params_types(self) -> Any:
        if self._param_types is None:
            raise ValueError("model_params_types is known after init_model_fn has run.")
        return self._param_types

    def is_output_params(self, param_key: spec.ParameterKey) -> bool:
        names = list(self._param_shapes) if self._param_shapes else []
        return bool(names) and param_key == names[-1]

    def dropout_rate(self, dropout_rate: float | None) -> float:
        if dropout_rate is not None:
            return dropout_rate
        if self._init_dropout is not None:
            return self._init_dropout
        return self.info.default_dropout or 0.0

    def model_fn(
        self,
        params: spec.ParameterContainer,
        augmented_and_preprocessed_input_batch: dict[str, Any],
        model_state: spec.ModelAuxiliaryState,
        mode: spec.ForwardPassMode,
        rng: spec.RandomState,
        update_batch_norm: bool,
        use_running_average_bn: bool | None = None,
        dropout_rate: float | None = None,
    ) -> tuple[Any, spec.ModelAuxiliaryState]:
        """(logits, model_state); batch-norm statistics change only in train mode when asked."""
        assert self._model is not None, "init_model_fn must run before model_fn"
        train = mode == spec.ForwardPassMode.TRAIN
        variables = {"params": params, **(model_state or {})}
        kwargs: dict[str, Any] = {"train": train}
        if self._takes_dropout:
            kwargs["dropout_rate"] = self.dropout_rate(dropout_rate)
        if use_running_average_bn is not None and "use_running_average_bn" in inspect.signature(
                self._model.__call__).parameters:
            kwargs["use_running_average_bn"] = use_running_average_bn
        rngs = {"dropout": rng} if train and rng is not None else None
        inputs = self.model_inputs(augmented_and_preprocessed_input_batch)
        mutable = list(model_state) if (train and update_batch_norm and model_state) else False
        if mutable:
            logits, new_state = self._model.apply(variables, *inputs, rngs=rngs, mutable=mutable,
                                                  **kwargs)
            return logits, _plain(dict(new_state))
        return self._model.apply(variables, *inputs, rngs=rngs, **kwargs), model_state

    # ---- loss --------------------------------------------------------------------------------
    def loss_fn(
        self,
        label_batch: Any,
        logits_batch: Any,
        mask_batch: Any = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, Any]:
        """{'summed', 'n_valid_examples', 'per_example'}; the same numbers as the torch side."""
        kind = self.loss_type
        if kind == spec.LossType.SOFTMAX_CROSS_ENTROPY:
            if jnp.issubdtype(label_batch.dtype, jnp.floating) and label_batch.shape == logits_batch.shape:
                targets = label_batch
            else:
                targets = jax.nn.one_hot(label_batch, logits_batch.shape[-1])
            targets = optax.smooth_labels(targets, label_smoothing) if label_smoothing else targets
            per_example = -jnp.sum(targets * jax.nn.log_softmax(logits_batch), axis=-1)
        elif kind == spec.LossType.SIGMOID_CROSS_ENTROPY:
            labels = label_batch.astype(logits_batch.dtype) * (1.0 - label_smoothing) + 0.5 * label_smoothing
            per_example = optax.sigmoid_binary_cross_entropy(logits_batch, labels)
            if per_example.ndim > 1:
                per_example = per_example.reshape(per_example.shape[0], -1).mean(1)
        elif kind == spec.LossType.MEAN_SQUARED_ERROR:
            per_example = ((logits_batch - label_batch) ** 2).reshape(logits_batch.shape[0], -1).mean(1)
        elif kind == spec.LossType.MEAN_ABSOLUTE_ERROR:
            per_example = jnp.abs(logits_batch - label_batch).reshape(logits_batch.shape[0], -1).mean(1)
        else:
            raise NotImplementedError(f"{type(self).__name__} must implement loss_fn for {kind}")
        if mask_batch is not None:
            mask = mask_batch.reshape(per_example.shape[0], -1)[:, 0].astype(per_example.dtype)
            per_example = per_example * mask
            n_valid = mask.sum()
        else:
            n_valid = jnp.asarray(per_example.shape[0], dtype=per_example.dtype)
        return {"summed": per_example.sum(), "n_valid_examples": n_valid, "per_example": per_example}

    # ---- data --------------------------------------------------------------------------------
    def build_input_queue(
        self,
        data_rng: spec.RandomState,
        split: str,
        data_dir: str,
        global_batch_size: int,
        cache: bool | None = None,
        repeat_final_dataset: bool | None = None,
        num_batches: int | None = None,
    ) -> JaxInputQueue:
        if split != "train":
            raise ValueError("build_input_queue serves the train split; evals use eval_model")
        from algoperf.random_utils import to_seed

        stream = self.train_batches(global_batch_size, to_seed(np.asarray(data_rng, np.uint32)))
        return JaxInputQueue(stream, self.device_batch)

    def device_batch(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        """A numpy batch as the model and the submission get it, on the devices."""
        return to_jax(batch, self.batch_layout)

    # ---- eval --------------------------------------------------------------------------------
    def _eval_model_on_split(
        self,
        split: str,
        num_examples: int,
        global_batch_size: int,
        params: spec.ParameterContainer,
        model_state: spec.ModelAuxiliaryState,
        rng: spec.RandomState,
        data_dir: str,
        global_step: int = 0,
    ) -> dict[str, float]:
        """Sums per-batch totals (computed on the devices) on the host in float64."""
        if self.batch_layout == "pmap":  # the copy of device 0 (all copies are equal)
            params, model_state = jax.tree.map(lambda x: x[0], (params, model_state))
        totals: dict[str, float] = {}
        evaluated = 0.0
        devices = jax.device_count()
        for batch in self.eval_split_batches(split, num_examples, global_batch_size):
            weights = np.asarray(batch["weights"]).reshape(len(batch["weights"]), -1)[:, 0]
            evaluated += float(weights.sum())
            batch = _pad_rows(batch, devices)
            sums = self._eval_batch_jit(params, model_state, to_jax(batch), rng)
            for name, value in jax.device_get(sums).items():
                totals[name] = totals.get(name, 0.0) + float(np.asarray(value, np.float64))
        if not totals:
            return {}
        count = int(round(evaluated))
        return {**self.finalize_eval_metrics(totals, count), "num_examples": count}

    @functools.cached_property
    def _eval_batch_jit(self) -> Any:
        from algoperf import jax_sharding_utils

        # Sums replicated: every process (several nodes) reads them from its own copy.
        return jax.jit(self.eval_batch, out_shardings=jax_sharding_utils.get_replicate_sharding())

    def eval_batch(self, params: Any, model_state: Any, batch: dict[str, Any], rng: Any) -> dict[str, Any]:
        """Classification: summed accuracy and loss over the real examples of a device batch."""
        logits, _ = self.model_fn(
            params, batch, model_state, spec.ForwardPassMode.EVAL, rng, update_batch_norm=False
        )
        weights = batch["weights"].astype(jnp.float32)
        loss = self.loss_fn(batch["targets"], logits, batch["weights"])["summed"]
        correct = (jnp.argmax(logits, -1) == batch["targets"]).astype(jnp.float32)
        return {"accuracy": (correct * weights).sum(), "loss": loss}


def _plain(tree: Any) -> Any:
    """Nested plain dicts (flax may hand back FrozenDicts)."""
    if hasattr(tree, "items"):
        return {k: _plain(v) for k, v in tree.items()}
    return tree


def _pad_rows(batch: dict[str, np.ndarray], multiple: int) -> dict[str, np.ndarray]:
    """Zero-weight rows appended so the batch splits evenly over the devices."""
    n = len(batch["weights"])
    extra = -n % multiple
    if not extra:
        return batch
    return {k: np.concatenate([v, np.zeros((extra, *v.shape[1:]), v.dtype)]) if isinstance(v, np.ndarray)
            else v for k, v in batch.items()}
