"""K-FAC (Martens & Grosse 2015) on flax Dense and Conv layers, Adam elsewhere, warmup + cosine, in
JAX: `jax_optimizer.kfac` with the hyperparameters and defaults of `pytorch_submission.py`.

Hyperparameters (defaults under self-tuning in brackets): learning_rate [1e-3], one_minus_beta1
(momentum = 1 - it) [0.1], damping [1e-3], factor_decay [0.95], inverse_frequency [50],
factor_frequency (steps between factor updates) [10], fisher_type ['mc'], approximation
['expand'], weight_decay [0.01], warmup_factor [0.05], label_smoothing [0],
dropout_rate [workload default], grad_clip [none], preconditioner_dtype ['float32'; or
'bfloat16'].

On a factor step (global_step % factor_frequency == 0) the step runs the model with its K-FAC
layers tapped (`jax_layers`), so one `jax.vjp` gives the parameter gradients and, through the
taps, the output gradients the Fisher needs (one more backward pass for 'mc', one per output for
'type2', none for 'empirical'); the other steps are the shared training step.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from algoperf import spec
from submissions.jax_training import (
    data_selection,
    get_batch_size,
    hparam,
    optional_hparam,
    schedule_of,
    training_step,
)
from submissions.kfac import jax_layers
from submissions.kfac.jax_optimizer import fisher_output_gradients, kfac

__all__ = ["get_batch_size", "init_optimizer_state", "update_params", "data_selection"]

# The Fisher's loss for each loss type; others (CTC, MAE) use the empirical Fisher.
FISHER_LOSS = {
    spec.LossType.SOFTMAX_CROSS_ENTROPY: "softmax_cross_entropy",
    spec.LossType.SIGMOID_CROSS_ENTROPY: "sigmoid_cross_entropy",
    spec.LossType.MEAN_SQUARED_ERROR: "mse",
}
FISHER_SEED = 0x4B464143  # folded into the step's rng for the Monte-Carlo targets ("KFAC")


class KfacRun(NamedTuple):
    """The submission's optimizer state."""

    opt_state: Any
    tx: optax.GradientTransformation
    layers: tuple[jax_layers.KfacLayer, ...]
    fisher_type: str
    approximation: str
    factor_frequency: int


def find_layers(workload: spec.Workload, params: Any, model_state: Any) -> tuple[jax_layers.KfacLayer, ...]:
    """The model's K-FAC layers, from an abstract forward pass on two examples of the real shapes."""
    if not hasattr(workload, "example_batch"):
        raise TypeError(f"K-FAC (JAX) finds its layers from workload.example_batch(); "
                        f"{type(workload).__name__} has none: subclass workloads.jax_base.JaxWorkload.")
    batch = workload.example_batch()
    return jax_layers.discover(lambda: workload.model_fn(
        params, batch, model_state, spec.ForwardPassMode.TRAIN, jax.random.PRNGKey(0),
        update_batch_norm=True, dropout_rate=0.0))


def optimizer(workload: spec.Workload, hyperparameters: Any, layers: tuple[jax_layers.KfacLayer, ...],
              ) -> optax.GradientTransformation:
    schedule = schedule_of(workload, hyperparameters, hparam(hyperparameters, "learning_rate", 1e-3))
    return kfac(
        learning_rate=schedule,
        layers=[layer.path for layer in layers],
        momentum=1.0 - hparam(hyperparameters, "one_minus_beta1", 0.1),
        weight_decay=hparam(hyperparameters, "weight_decay", 0.01),
        damping=hparam(hyperparameters, "damping", 1e-3),
        factor_decay=hparam(hyperparameters, "factor_decay", 0.95),
        inverse_frequency=int(hparam(hyperparameters, "inverse_frequency", 50)),
        preconditioner_dtype=getattr(jnp, optional_hparam(hyperparameters, "preconditioner_dtype", "float32")),
    )


def init_optimizer_state(
    workload: spec.Workload, model_params: spec.ParameterContainer,
    model_state: spec.ModelAuxiliaryState, hyperparameters: spec.Hyperparameters,
    rng: spec.RandomState,
) -> spec.OptimizerState:
    from algoperf import jax_sharding_utils

    fisher = hparam(hyperparameters, "fisher_type", "mc")
    if workload.loss_type not in FISHER_LOSS:
        fisher = "empirical"
    layers = find_layers(workload, model_params, model_state)
    tx = optimizer(workload, hyperparameters, layers)
    return KfacRun(jax_sharding_utils.replicate(tx.init(model_params)), tx, layers, fisher,
                   hparam(hyperparameters, "approximation", "expand"),
                   int(hparam(hyperparameters, "factor_frequency", 10)))


def factor_step(
    workload: spec.Workload, run: KfacRun, dropout_rate: float | None, label_smoothing: float,
    grad_clip: float | None, params: Any, model_state: Any, opt_state: Any, batch: dict[str, Any],
    rng: Any,
) -> tuple[Any, Any, Any, Any]:
    """(params, model_state, opt_state, loss) after a step that also updates the factors."""

    def apply(p: Any) -> tuple[Any, Any]:
        return workload.model_fn(p, batch, model_state, spec.ForwardPassMode.TRAIN, rng,
                                 update_batch_norm=True, dropout_rate=dropout_rate)

    logits, vjp, new_state, inputs = jax_layers.tapped_vjp(apply, params, run.layers)

    def mean_loss(out: Any) -> Any:
        loss = workload.loss_fn(batch["targets"], out, batch.get("weights"), label_smoothing)
        return loss["summed"] / loss["n_valid_examples"]

    loss, dlogits = jax.value_and_grad(mean_loss)(logits)
    grads, tap_grads = vjp(dlogits)
    if run.fisher_type == "empirical":
        # The output gradients of the mean loss; an example's own gradient is N times that.
        output_grads = jax.tree.map(lambda g: (g * logits.shape[0])[None], tap_grads)
    else:
        key = jax.random.fold_in(rng, FISHER_SEED)
        vectors = fisher_output_gradients(logits, FISHER_LOSS[workload.loss_type], run.fisher_type, key)
        output_grads = jax.vmap(lambda v: vjp(v)[1])(vectors)
    factors = jax_layers.batch_factors(run.layers, params, inputs, output_grads, run.approximation)
    if grad_clip is not None:
        norm = optax.global_norm(grads)
        grads = jax.tree.map(lambda g: g * jnp.minimum(1.0, grad_clip / (norm + 1e-6)), grads)
    updates, opt_state = run.tx.update(grads, opt_state, params, kfac_factors=factors)
    return optax.apply_updates(params, updates), new_state, opt_state, loss


@functools.cache
def _jitted_factor_step(workload: spec.Workload, run: KfacRun, dropout_rate: float | None,
                        label_smoothing: float, grad_clip: float | None) -> Any:
    from algoperf import jax_sharding_utils

    step = functools.partial(factor_step, workload, run, dropout_rate, label_smoothing, grad_clip)
    return jax.jit(step, donate_argnums=(0, 1, 2),
                   out_shardings=jax_sharding_utils.get_replicate_sharding())


def update_params(
    workload: spec.Workload, current_param_container: spec.ParameterContainer,
    current_params_types: spec.ParameterTypeTree, model_state: spec.ModelAuxiliaryState,
    hyperparameters: spec.Hyperparameters, batch: dict[str, Any], loss_type: spec.LossType,
    optimizer_state: spec.OptimizerState, eval_results: list[tuple[int, float]],
    global_step: int, rng: spec.RandomState, train_state: dict[str, Any] | None = None,
) -> spec.UpdateReturn:
    run: KfacRun = optimizer_state
    if global_step % run.factor_frequency != 0:
        params, model_state, opt_state = training_step(
            workload, run.tx, current_param_container, model_state, run.opt_state, hyperparameters,
            batch, global_step, rng)
        return run._replace(opt_state=opt_state), params, model_state
    step = _jitted_factor_step(
        workload, run._replace(opt_state=None), hparam(hyperparameters, "dropout_rate", None),
        hparam(hyperparameters, "label_smoothing", 0.0),
        optional_hparam(hyperparameters, "grad_clip", None),
    )
    params, model_state, opt_state, loss = step(current_param_container, model_state, run.opt_state,
                                                batch, rng)
    if global_step % 100 == 0 and workload.metrics_logger is not None:
        workload.metrics_logger.append_scalar_metrics({"loss": float(loss)}, global_step)
    return run._replace(opt_state=opt_state), params, model_state
