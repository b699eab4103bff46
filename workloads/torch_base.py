"""What every PyTorch workload shares: model init, forward in train/eval mode, the standard
losses, numpy -> device batches, and the default classification eval.

A PyTorch workload subclasses its data class (from its `workload.py`) and `TorchWorkload`, and
implements `build_model()`; it overrides `forward`, `loss_fn` or `eval_batch` only where its
model or metric differs.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from algoperf import spec
from algoperf.backends import pytorch as backend
from algoperf.random_utils import to_seed
from workloads import input_pipeline
from workloads.base import BaseWorkload


def to_torch(batch: Any, device: torch.device) -> Any:
    """Numpy arrays (in nested dicts too) to tensors on the device; float64 becomes float32.

    On a GPU the host copy is pinned and the transfer asynchronous (`non_blocking`): called from
    the input queue's background thread, it overlaps the step that is running.
    """
    if isinstance(batch, dict):
        return {k: to_torch(v, device) for k, v in batch.items()}
    if not isinstance(batch, np.ndarray):
        return batch
    if batch.dtype == np.float64:
        batch = batch.astype(np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(batch))
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def shard(batch: dict[str, Any], layout: str = "rows") -> dict[str, Any]:
    """This process's share of a global numpy batch under data parallelism (all of it otherwise)."""
    n = backend.world_size()
    if n == 1:
        return batch
    return input_pipeline.shard(batch, torch.distributed.get_rank(), n, layout)


EVALUATED = "__evaluated_examples__"


class _OnDevice:
    """A device batch whose asynchronous copy (on a side CUDA stream) may still be running."""

    def __init__(self, batch: Any, event: Any) -> None:
        self.batch, self.event = batch, event


def _record_stream(tree: Any, stream: Any) -> None:
    if isinstance(tree, dict):
        for v in tree.values():
            _record_stream(v, stream)
    elif isinstance(tree, torch.Tensor):
        tree.record_stream(stream)


class TorchInputQueue:
    """Device batches from a numpy stream, made ahead in a background thread (`Prefetcher`).

    `convert` (this process's share of the batch, copied to the device) runs in the background
    thread; on a GPU the copy goes through a side CUDA stream, and the step's stream waits for it
    only when it takes the batch. `state_dict()` is the stream's position after the last batch
    handed to the submission.
    """

    def __init__(
        self,
        stream: Any,
        device: torch.device,
        convert: Any = None,
        buffer_size: int = input_pipeline.PREFETCH_BATCHES,
    ) -> None:
        self.stream = stream
        self.device = device
        self.convert = convert or (lambda batch: to_torch(shard(batch), device))
        self._copy_stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._queue = input_pipeline.Prefetcher(stream, self._produce, buffer_size)

    def _produce(self, batch: Any) -> Any:
        if self._copy_stream is None:
            return self.convert(batch)
        with torch.cuda.stream(self._copy_stream):
            moved = self.convert(batch)
        return _OnDevice(moved, self._copy_stream.record_event())

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        item = next(self._queue)
        if isinstance(item, _OnDevice):
            current = torch.cuda.current_stream(self.device)
            current.wait_event(item.event)
            _record_stream(item.batch, current)
            return item.batch
        return item

    def state_dict(self) -> dict[str, Any]:
        return self._queue.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._queue.load_state_dict(state)

    def close(self) -> None:
        self._queue.close()


@contextlib.contextmanager
def frozen_batch_norm(model: torch.nn.Module, frozen: bool) -> Iterator[None]:
    """Runs batch norm in train mode without updating its running statistics (momentum 0)."""
    if not frozen:
        yield
        return
    saved = []
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            saved.append((m, m.momentum))
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in saved:
            m.momentum = momentum


class TorchWorkload(BaseWorkload):
    """A workload whose model is a `torch.nn.Module` (the parameter container itself)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.device = backend.setup()[2]
        self._model_takes_dropout = False

    # ---- model -------------------------------------------------------------------------------
    def build_model(self) -> torch.nn.Module:
        """The model of this workload (or variant: options are in `self.options`)."""
        raise NotImplementedError

    def init_model_fn(
        self, rng: spec.RandomState, dropout_rate: float | None = None, aux_dropout_rate: float | None = None
    ) -> tuple[torch.nn.Module, spec.ModelAuxiliaryState]:
        # v0.5/v0.6-era submissions choose dropout here; the rate given at init is the one
        # model_fn uses when its caller passes none (the current reference passes it there).
        self._init_dropout, self._init_aux_dropout = dropout_rate, aux_dropout_rate
        torch.manual_seed(to_seed(rng))
        model = self.build_model().to(self.device)
        self._model_takes_dropout = "dropout_rate" in inspect.signature(model.forward).parameters
        self._param_shapes = backend.param_shapes(model)
        self._param_types = backend.param_types(model)
        if backend.world_size() > 1:
            model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device] if self.device.type == "cuda" else None
            )
            self._param_shapes = backend.param_shapes(model)
            self._param_types = backend.param_types(model)
        return model, None

    def is_output_params(self, param_key: spec.ParameterKey) -> bool:
        names = [n for n, _ in self._param_shapes.items()] if self._param_shapes else []
        return bool(names) and param_key in names[-2:]

    def dropout_rate(self, dropout_rate: float | None) -> float | None:
        """The rate a forward pass uses: the caller's, else the one given at init, else the
        workload's default."""
        if dropout_rate is not None:
            return dropout_rate
        if getattr(self, "_init_dropout", None) is not None:
            return self._init_dropout
        return self.info.default_dropout

    def forward(self, model: torch.nn.Module, batch: dict[str, Any], dropout_rate: float | None) -> Any:
        """The model's output on a device batch; workloads with several inputs override this."""
        if self._model_takes_dropout:
            rate = self.dropout_rate(dropout_rate)
            return model(batch["inputs"], dropout_rate=rate)
        return model(batch["inputs"])

    def model_fn(
        self,
        params: spec.ParameterContainer,
        augmented_and_preprocessed_input_batch: dict[str, Any],
        model_state: spec.ModelAuxiliaryState,
        mode: spec.ForwardPassMode,
        rng: spec.RandomState,
        update_batch_norm: bool,
        dropout_rate: float | None = None,
    ) -> tuple[Any, spec.ModelAuxiliaryState]:
        model = params
        train = mode == spec.ForwardPassMode.TRAIN
        model.train(train)
        grad = contextlib.nullcontext() if train else torch.no_grad()
        with grad, frozen_batch_norm(model, train and not update_batch_norm):
            logits = self.forward(model, augmented_and_preprocessed_input_batch, dropout_rate)
        return logits, model_state

    # ---- loss --------------------------------------------------------------------------------
    def loss_fn(
        self,
        label_batch: torch.Tensor,
        logits_batch: torch.Tensor,
        mask_batch: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, torch.Tensor]:
        kind = self.loss_type
        if kind == spec.LossType.SOFTMAX_CROSS_ENTROPY:
            if label_batch.dtype.is_floating_point and label_batch.shape == logits_batch.shape:
                per_example = F.cross_entropy(
                    logits_batch, label_batch, reduction="none", label_smoothing=label_smoothing
                )
            else:
                per_example = F.cross_entropy(
                    logits_batch, label_batch.long(), reduction="none", label_smoothing=label_smoothing
                )
        elif kind == spec.LossType.SIGMOID_CROSS_ENTROPY:
            labels = label_batch.float() * (1.0 - label_smoothing) + 0.5 * label_smoothing
            per_example = F.binary_cross_entropy_with_logits(logits_batch, labels, reduction="none")
            if per_example.ndim > 1:
                per_example = per_example.reshape(len(per_example), -1).mean(1)
        elif kind == spec.LossType.MEAN_SQUARED_ERROR:
            per_example = (logits_batch - label_batch).pow(2).reshape(len(logits_batch), -1).mean(1)
        elif kind == spec.LossType.MEAN_ABSOLUTE_ERROR:
            per_example = (logits_batch - label_batch).abs().reshape(len(logits_batch), -1).mean(1)
        else:
            raise NotImplementedError(f"{type(self).__name__} must implement loss_fn for {kind}")
        if mask_batch is not None:
            mask = mask_batch.reshape(len(per_example), -1)[:, 0].to(per_example.dtype)
            per_example = per_example * mask
            n_valid = mask.sum()
        else:
            n_valid = torch.tensor(len(per_example), dtype=per_example.dtype, device=per_example.device)
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
    ) -> TorchInputQueue:
        if split != "train":
            raise ValueError("build_input_queue serves the train split; evals use eval_model")
        return TorchInputQueue(self.train_batches(global_batch_size, to_seed(data_rng)), self.device, self.device_batch)

    # How a global batch divides among processes (`input_pipeline.shard`): by rows, or (OGBG) one
    # packed batch per device stacked on a leading axis.
    batch_layout = "rows"

    def device_batch(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        """A numpy batch as the model and the submission get it: this process's share, on the device."""
        return to_torch(shard(batch, self.batch_layout), self.device)

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
        totals: dict[str, Any] = {}
        for batch in self.eval_split_batches(split, num_examples, global_batch_size):
            device_batch = self.device_batch(batch)
            for name, value in self.eval_batch(params, model_state, device_batch, rng).items():
                totals[name] = totals.get(name, 0.0) + value
            # Count what was evaluated: a split smaller than num_examples (a fixture) is averaged
            # over its real size, and padding never counts.
            totals[EVALUATED] = totals.get(EVALUATED, 0.0) + device_batch["weights"].reshape(
                len(device_batch["weights"]), -1)[:, 0].to(torch.float64).sum()
        if not totals:
            return {}
        names = sorted(totals)
        stacked = torch.stack([torch.as_tensor(totals[n], dtype=torch.float64) for n in names])
        if backend.world_size() > 1:
            torch.distributed.all_reduce(stacked)
        summed = dict(zip(names, stacked.tolist()))
        evaluated = int(round(summed.pop(EVALUATED)))
        return {**self.finalize_eval_metrics(summed, evaluated), "num_examples": evaluated}

    def eval_batch(
        self, params: spec.ParameterContainer, model_state: Any, batch: dict[str, Any], rng: Any
    ) -> dict[str, Any]:
        """Classification: summed accuracy and loss over the real examples of a device batch."""
        logits, _ = self.model_fn(
            params, batch, model_state, spec.ForwardPassMode.EVAL, rng, update_batch_norm=False
        )
        weights = batch["weights"].to(torch.float64)
        loss = self.loss_fn(batch["targets"], logits, batch["weights"])["summed"]
        correct = (logits.argmax(-1) == batch["targets"]).to(torch.float64)
        return {"accuracy": (correct * weights).sum(), "loss": loss.to(torch.float64)}
