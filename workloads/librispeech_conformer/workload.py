"""LibriSpeech 960h with a Conformer trained by CTC, and its three variants (WORKLOADS.md).

Data, tokenizer, preparation and metrics: workloads/librispeech/. Model: torch_workload.py.
"""

from __future__ import annotations

from algoperf.spec import LossType
from workloads.registry import WorkloadInfo

VALIDATION_EXAMPLES = 5_348
EVAL_BATCH_SIZE = 256

BASE = WorkloadInfo(
    name="librispeech_conformer",
    dataset=(
        "LibriSpeech 960h (263,840 after filtering) / dev-clean+dev-other 5,348 / test-clean 2,472; "
        "SentencePiece vocab 1024"
    ),
    model="Conformer: dim 512, 4 layers, 8 heads, post-LN, swish, SpecAugment",
    target_metric_name="wer",
    higher_is_better=False,
    validation_target=0.085884,
    test_target=0.052981,
    max_allowed_runtime_sec=58_015,
    step_hint=76_000,
    eval_period_time_sec=1_440,
    eval_batch_size=EVAL_BATCH_SIZE,
    num_train_examples=263_840,
    # The reference rounds the validation size up to a whole number of eval batches: 21 x 256.
    num_eval_train_examples=-(-VALIDATION_EXAMPLES // EVAL_BATCH_SIZE) * EVAL_BATCH_SIZE,
    num_validation_examples=VALIDATION_EXAMPLES,
    num_test_examples=2_472,
    loss_type=LossType.CTC_LOSS,
    default_dropout=0.1,
    n_params={"pytorch": 32_321_792, "jax": 32_321_792},
    implementations={
        "pytorch": "workloads.librispeech_conformer.torch_workload:ConformerWorkload",
        "jax": "workloads.librispeech_conformer.jax_workload:ConformerWorkload",
    },
)

WORKLOADS = [
    BASE,
    BASE.variant(
        name="librispeech_conformer_attention_temperature",
        change="attention temperature 1.6",
        validation_target=0.109977,
        test_target=0.068065,
        model_options={"attention_temperature": 1.6},
    ),
    BASE.variant(
        name="librispeech_conformer_layernorm",
        change="pre-LN (no post layer norm)",
        validation_target=0.09731,
        test_target=0.05996,
        model_options={"use_post_layer_norm": False},
        n_params={"pytorch": 32_317_696, "jax": 32_317_696},
    ),
    BASE.variant(
        name="librispeech_conformer_gelu",
        change="GELU",
        validation_target=0.094114,
        test_target=0.056629,
        model_options={"activation": "gelu"},
    ),
]
