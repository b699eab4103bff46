"""What every baseline shares whatever its framework: batch sizes and how hyperparameters are read.

Framework-free, so a JAX baseline never imports torch (and the reverse).
"""

from __future__ import annotations

from typing import Any

# Reference batch sizes of the AlgoPerf baselines; the development workloads' ours.
BATCH_SIZES = {
    "criteo1tb": 262_144,
    "fastmri": 32,
    "imagenet_resnet": 1024,
    "imagenet_vit": 1024,
    "librispeech_conformer": 256,
    "librispeech_deepspeech": 256,
    "ogbg": 512,
    "wmt": 128,
    "mnist": 16,
    "mnist1d": 128,
    "cifar": 128,
}


def get_batch_size(workload_name: str) -> int:
    if workload_name not in BATCH_SIZES:
        raise ValueError(f"no batch size for workload {workload_name!r}")
    return BATCH_SIZES[workload_name]


def hparam(hyperparameters: Any, name: str, default: Any) -> Any:
    """A hyperparameter the submission needs: `default` under self-tuning (hyperparameters is None).

    Under external tuning the value comes from the search space and nowhere else: a name the
    space does not define raises (`algoperf.tuning.MissingHyperparameterError`, naming the
    search-space file), so a typo in a search space stops the trial instead of tuning nothing.
    """
    return default if hyperparameters is None else getattr(hyperparameters, name)


def optional_hparam(hyperparameters: Any, name: str, default: Any) -> Any:
    """A knob whose absence means "off" (`grad_clip`, as the reference baselines read it with
    `hasattr`): the search space's value if it defines one, else `default`."""
    return default if hyperparameters is None else getattr(hyperparameters, name, default)
