"""ImageNet with ViT-S/16, and its three variants (WORKLOADS.md).

Data, splits and evaluation are imagenet_resnet's (workloads/imagenet_resnet/workload.py), except
the eval batch of 2,048 (so eval-train has 51,200 images: the reference rounds the validation size
up to whole eval batches). Training adds, as the reference does for ViT: RandAugment (2 ops,
randaugment.py) after the flip, and mixup of every batch with the batch rolled by one, the weight
drawn from Beta(0.2, 0.2), on one-hot labels (the targets are then (N, 1000) float32). Synthetic
training batches are mixed up too, so that a submission sees the same kinds of targets.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from algoperf.spec import LossType
from workloads.imagenet_resnet.workload import BASE as RESNET
from workloads.imagenet_resnet.workload import NUM_CLASSES, ImagenetData, rounded_up
from workloads.imagenet_vit.randaugment import randaugment
from workloads.registry import WorkloadInfo

MIXUP_ALPHA = 0.2
# ViT-S/16 (Table 2 of arXiv:2106.04560), as the reference's decode_variant('S/16').
VIT_S16 = {"width": 384, "depth": 12, "mlp_dim": 1536, "num_heads": 6, "patch_size": 16}

BASE = WorkloadInfo(
    name="imagenet_vit",
    dataset=RESNET.dataset + "; mixup + RandAugment on train",
    model="ViT-S/16: width 384, depth 12, 6 heads, MLP 1536, sin-cos posemb, GAP, tanh pre-logits",
    target_metric_name="accuracy",
    higher_is_better=True,
    validation_target=0.77309,
    test_target=0.6519,
    max_allowed_runtime_sec=69_768,
    step_hint=167_999,
    eval_period_time_sec=420,
    eval_batch_size=2048,
    num_train_examples=RESNET.num_train_examples,
    num_eval_train_examples=rounded_up(50_000, 2048),
    num_validation_examples=50_000,
    num_test_examples=10_000,
    loss_type=LossType.SOFTMAX_CROSS_ENTROPY,
    default_dropout=0.0,
    n_params={"pytorch": 22_122_472, "jax": 22_122_472},
    implementations={
        "pytorch": "workloads.imagenet_vit.torch_workload:ImagenetVitWorkload",
        "jax": "workloads.imagenet_vit.jax_workload:ImagenetVitWorkload",
    },
    model_options={"use_glu": False, "use_post_layer_norm": False, "use_map": False},
)

WORKLOADS = [
    BASE,
    BASE.variant(
        name="imagenet_vit_glu",
        change="GLU MLP",
        validation_target=0.75738,
        test_target=0.6359,
        model_options={"use_glu": True, "use_post_layer_norm": False, "use_map": False},
        n_params={"pytorch": 50_452_456, "jax": 50_452_456},
    ),
    BASE.variant(
        name="imagenet_vit_post_ln",
        change="post-LN",
        validation_target=0.75312,
        test_target=0.6286,
        model_options={"use_glu": False, "use_post_layer_norm": True, "use_map": False},
        # The reference's JAX model of this variant fails to initialise; the JAX count is that of
        # the same network (the PyTorch one's: no final LayerNorm), which this harness's builds.
        n_params={"pytorch": 22_121_704, "jax": 22_121_704},
    ),
    BASE.variant(
        name="imagenet_vit_map",
        change="MAP (attention) pooling head",
        validation_target=0.77113,
        test_target=0.6523,
        model_options={"use_glu": False, "use_post_layer_norm": False, "use_map": True},
        n_params={"pytorch": 23_896_552, "jax": 23_896_552},
    ),
]


def mixup(
    batch: dict[str, np.ndarray], rng: np.random.Generator, alpha: float = MIXUP_ALPHA
) -> dict[str, np.ndarray]:
    """Mixup (Zhang et al. 2018) with the batch rolled by one: w x + (1 - w) roll(x), w ~ Beta(a, a)."""
    weight = np.float32(rng.beta(alpha, alpha))
    one_hot = np.eye(NUM_CLASSES, dtype=np.float32)[batch["targets"]]
    out = dict(batch)
    out["inputs"] = weight * batch["inputs"] + (1 - weight) * np.roll(batch["inputs"], 1, axis=0)
    out["targets"] = weight * one_hot + (1 - weight) * np.roll(one_hot, 1, axis=0)
    return out


class VitData(ImagenetData):
    @staticmethod
    def image_augment(img: Any, rng: np.random.Generator) -> Any:
        return randaugment(img, rng)

    @staticmethod
    def batch_augment(
        batch: dict[str, np.ndarray], rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        return mixup(batch, rng)
