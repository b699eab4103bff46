"""LibriSpeech 960h with DeepSpeech trained by CTC, and its three variants (WORKLOADS.md).

Same data, tokenizer, preparation and metrics as the Conformer (workloads/librispeech/).
"""

from __future__ import annotations

from workloads.librispeech_conformer.workload import BASE as CONFORMER
from workloads.registry import WorkloadInfo

BASE = WorkloadInfo(
    name="librispeech_deepspeech",
    dataset=CONFORMER.dataset,
    model="DeepSpeech: conv subsampling, 6 bi-LSTM, 3 FFN, dim 512",
    target_metric_name="wer",
    higher_is_better=False,
    validation_target=0.119936,
    test_target=0.074143,
    max_allowed_runtime_sec=44_405,
    step_hint=38_400,
    eval_period_time_sec=1_440,
    eval_batch_size=256,
    num_train_examples=CONFORMER.num_train_examples,
    num_eval_train_examples=CONFORMER.num_eval_train_examples,
    num_validation_examples=CONFORMER.num_validation_examples,
    num_test_examples=CONFORMER.num_test_examples,
    loss_type=CONFORMER.loss_type,
    default_dropout=0.1,
    # PyTorch's LSTMs carry two bias vectors per gate, JAX's one: 6 x 2 x 4 x 256 more here.
    n_params={"pytorch": 18_393_600, "jax": 18_381_312},
    implementations={
        "pytorch": "workloads.librispeech_deepspeech.torch_workload:DeepSpeechWorkload",
        "jax": "workloads.librispeech_deepspeech.jax_workload:DeepSpeechWorkload",
    },
)

WORKLOADS = [
    BASE,
    BASE.variant(
        name="librispeech_deepspeech_tanh",
        change="tanh",
        validation_target=0.150883,
        test_target=0.098613,
        model_options={"use_tanh": True},
    ),
    BASE.variant(
        name="librispeech_deepspeech_no_resnet",
        change="no residual connections",
        validation_target=0.131564,
        test_target=0.079297,
        model_options={"enable_residual_connections": False},
    ),
    BASE.variant(
        name="librispeech_deepspeech_norm_and_spec_aug",
        change="layer norm everywhere, no decoder LN, 4 freq masks, 15 time masks, eval bs 128",
        validation_target=0.14342,
        test_target=0.090976,
        # ceil(5,348 / 128) x 128 = 5,376, the same eval-train size as with 256.
        eval_batch_size=128,
        model_options={
            "layernorm_everywhere": True,
            "enable_decoder_layer_norm": False,
            "freq_mask_count": 4,
            "time_mask_count": 15,
        },
        n_params={"pytorch": 18_392_576, "jax": 18_380_288},
    ),
]
