"""The contract between the harness and a submission, with AlgoPerf's names.

A submission written against AlgoPerf's `algoperf.spec` runs here unchanged: the enums, aliases,
`TrainingCompleteError` and the `Workload` interface below keep the reference's names and
signatures (RULES.md, API). Nothing here imports a framework.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterator
from typing import Any


class LossType(enum.Enum):
    SOFTMAX_CROSS_ENTROPY = 0
    SIGMOID_CROSS_ENTROPY = 1
    MEAN_SQUARED_ERROR = 2
    CTC_LOSS = 3
    MEAN_ABSOLUTE_ERROR = 4


class ForwardPassMode(enum.Enum):
    TRAIN = 0
    EVAL = 1


class ParameterType(enum.Enum):
    WEIGHT = 0
    BIAS = 1
    CONV_WEIGHT = 2
    BATCH_NORM_SCALE = 3
    BATCH_NORM_BIAS = 4
    LAYER_NORM_SCALE = 5
    LAYER_NORM_BIAS = 6
    EMBEDDING = 7
    ATTENTION_Q = 8
    ATTENTION_K = 9
    ATTENTION_V = 10
    ATTENTION_OUT = 11
    ATTENTION_QKV = 12
    ATTENTION_KV = 13
    ATTENTION_BIAS = 14


class ShapeTuple:
    """The shape of one parameter (`shape_tuple` is the reference's attribute name)."""

    def __init__(self, shape_tuple: tuple[int, ...]) -> None:
        self.shape_tuple = tuple(shape_tuple)

    def __repr__(self) -> str:
        return f"ShapeTuple({self.shape_tuple})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ShapeTuple) and other.shape_tuple == self.shape_tuple

    def __hash__(self) -> int:
        return hash(self.shape_tuple)


Shape = tuple[int, ...]
ParameterShapeTree = dict[str, Any]
ParameterTypeTree = dict[str, Any]
ParameterContainer = Any  # a torch.nn.Module in PyTorch, a pytree of arrays in JAX
ParameterKey = str
ModelAuxiliaryState = Any
OptimizerState = Any
RandomState = Any
Hyperparameters = Any  # attribute access (`hp.learning_rate`) or None under self-tuning
Batch = dict[str, Any]
Tensor = Any
LossFn = Any
Timing = int
Steps = int
UpdateReturn = tuple[OptimizerState, ParameterContainer, ModelAuxiliaryState]
InitOptimizerFn = Any
UpdateParamsFn = Any
PrepareForEvalFn = Any
DataSelectionFn = Any
Seed = int

# Index of the logits dimension over which a softmax is taken (reference name).
LOGITS_AXIS = -1


class TrainingCompleteError(Exception):
    """Raised by a submission to say it has finished training; the runner then does a final eval."""


class Workload(metaclass=abc.ABCMeta):
    """The interface a workload offers a submission (AlgoPerf's `spec.Workload`).

    Concrete workloads derive from `workloads.base.BaseWorkload`, which fills the metadata
    properties from the registry; this class only states the contract.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._param_shapes: ParameterShapeTree | None = None
        self._param_types: ParameterTypeTree | None = None
        self._eval_iters: dict[str, Iterator[Batch]] = {}
        self.metrics_logger: Any = None

    # ---- target and budget -------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def target_metric_name(self) -> str: ...

    @property
    @abc.abstractmethod
    def validation_target_value(self) -> float: ...

    @property
    @abc.abstractmethod
    def test_target_value(self) -> float: ...

    @abc.abstractmethod
    def has_reached_validation_target(self, eval_result: dict[str, float]) -> bool: ...

    @abc.abstractmethod
    def has_reached_test_target(self, eval_result: dict[str, float]) -> bool: ...

    @property
    @abc.abstractmethod
    def loss_type(self) -> LossType: ...

    @property
    @abc.abstractmethod
    def num_train_examples(self) -> int: ...

    @property
    @abc.abstractmethod
    def num_eval_train_examples(self) -> int: ...

    @property
    @abc.abstractmethod
    def num_validation_examples(self) -> int: ...

    @property
    @abc.abstractmethod
    def num_test_examples(self) -> int: ...

    @property
    @abc.abstractmethod
    def eval_batch_size(self) -> int: ...

    @property
    @abc.abstractmethod
    def train_mean(self) -> Any: ...

    @property
    @abc.abstractmethod
    def train_stddev(self) -> Any: ...

    @property
    @abc.abstractmethod
    def max_allowed_runtime_sec(self) -> float: ...

    @property
    @abc.abstractmethod
    def eval_period_time_sec(self) -> float: ...

    @property
    @abc.abstractmethod
    def step_hint(self) -> int: ...

    # ---- model -------------------------------------------------------------------------------
    @property
    def param_shapes(self) -> ParameterShapeTree:
        if self._param_shapes is None:
            raise ValueError("param_shapes is known only after init_model_fn() has run.")
        return self._param_shapes

    @property
    def model_params_types(self) -> ParameterTypeTree:
        if self._param_types is None:
            raise ValueError("model_params_types is known only after init_model_fn() has run.")
        return self._param_types

    @abc.abstractmethod
    def is_output_params(self, param_key: ParameterKey) -> bool: ...

    @abc.abstractmethod
    def build_input_queue(
        self,
        data_rng: RandomState,
        split: str,
        data_dir: str,
        global_batch_size: int,
        cache: bool | None = None,
        repeat_final_dataset: bool | None = None,
        num_batches: int | None = None,
    ) -> Iterator[Batch]: ...

    @abc.abstractmethod
    def init_model_fn(
        self, rng: RandomState, dropout_rate: float | None = None, aux_dropout_rate: float | None = None
    ) -> tuple[ParameterContainer, ModelAuxiliaryState]: ...

    @abc.abstractmethod
    def model_fn(
        self,
        params: ParameterContainer,
        augmented_and_preprocessed_input_batch: dict[str, Tensor],
        model_state: ModelAuxiliaryState,
        mode: ForwardPassMode,
        rng: RandomState,
        update_batch_norm: bool,
        dropout_rate: float | None = None,
    ) -> tuple[Tensor, ModelAuxiliaryState]: ...

    @abc.abstractmethod
    def loss_fn(
        self,
        label_batch: Tensor,
        logits_batch: Tensor,
        mask_batch: Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, Tensor]:
        """Returns {'summed': scalar, 'n_valid_examples': scalar, 'per_example': 1-d}."""

    @abc.abstractmethod
    def eval_model(
        self,
        global_batch_size: int,
        params: ParameterContainer,
        model_state: ModelAuxiliaryState,
        rng: RandomState,
        data_dir: str,
        imagenet_v2_data_dir: str | None,
        global_step: int,
    ) -> dict[str, float]: ...



# The parameter names each submission function must accept (RULES.md, API). The runner checks
# a submission against these before anything is built, so a typo fails in a second, not after init.
SUBMISSION_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "get_batch_size": ("workload_name",),
    "init_optimizer_state": ("workload", "model_params", "model_state", "hyperparameters", "rng"),
    "update_params": (
        "workload",
        "current_param_container",
        "current_params_types",
        "model_state",
        "hyperparameters",
        "batch",
        "loss_type",
        "optimizer_state",
        "eval_results",
        "global_step",
        "rng",
    ),
    "data_selection": (
        "workload",
        "input_queue",
        "optimizer_state",
        "current_param_container",
        "model_state",
        "hyperparameters",
        "global_step",
        "rng",
    ),
}
OPTIONAL_SUBMISSION_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "prepare_for_eval": (
        "workload",
        "current_param_container",
        "current_params_types",
        "model_state",
        "hyperparameters",
        "loss_type",
        "optimizer_state",
        "eval_results",
        "global_step",
        "rng",
    ),
}
