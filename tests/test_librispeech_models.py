"""LibriSpeech models in PyTorch: reference parameter counts, front end, SpecAugment, CTC loss,
a training step and an eval on synthetic speech."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from algoperf import spec
from algoperf.random_utils import prng_key
from workloads import registry
from workloads.librispeech import frontend as fe
from workloads.librispeech.torch_modules import LogMelFrontend, MaskedBatchNorm, SpecAugment

NAMES = sorted(n for n in registry.all_workloads() if n.startswith("librispeech_"))
TABLE = {  # WORKLOADS.md, PyTorch column
    "librispeech_conformer": 32_321_792,
    "librispeech_conformer_attention_temperature": 32_321_792,
    "librispeech_conformer_gelu": 32_321_792,
    "librispeech_conformer_layernorm": 32_317_696,
    "librispeech_deepspeech": 18_393_600,
    "librispeech_deepspeech_no_resnet": 18_393_600,
    "librispeech_deepspeech_norm_and_spec_aug": 18_392_576,
    "librispeech_deepspeech_tanh": 18_393_600,
}


def test_every_variant_is_registered_with_its_facts():
    assert NAMES == sorted(TABLE)
    for name in NAMES:
        info = registry.get(name)
        assert info.n_params["pytorch"] == TABLE[name]
        assert info.target_metric_name == "wer" and not info.higher_is_better
        assert info.loss_type == spec.LossType.CTC_LOSS and info.default_dropout == 0.1
        assert info.num_eval_train_examples == 5_376  # 5,348 rounded up to whole eval batches
    assert registry.get("librispeech_deepspeech_norm_and_spec_aug").eval_batch_size == 128
    assert registry.get("librispeech_conformer_gelu").eval_batch_size == 256


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_equals_the_reference(name):
    with torch.device("meta"):
        model = registry.load(name, data="synthetic").build_model()
    assert sum(p.numel() for p in model.parameters()) == TABLE[name]


def test_front_end_equals_the_numpy_reference():
    rng = np.random.default_rng(0)
    audio = rng.integers(-8000, 8000, (2, 4_000)).astype(np.float32)
    paddings = np.zeros((2, 4_000), np.float32)
    paddings[1, 2_500:] = 1
    expected, expected_paddings = fe.log_mel(audio, paddings)
    got, got_paddings = LogMelFrontend()(torch.from_numpy(audio), torch.from_numpy(paddings))
    assert got.shape == (2, fe.num_frames(4_000), 80) == expected.shape
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-3)
    np.testing.assert_array_equal(got_paddings.numpy(), expected_paddings)
    # A frame is padding only once all 401 of its samples are.
    assert expected_paddings[1].tolist() == [
        float(k * 160 >= 2_500) for k in range(expected.shape[1])
    ]


def test_mel_filterbank_is_htk_triangles_between_125_hz_and_7600_hz():
    w = fe.mel_weight_matrix()
    assert w.shape == (257, 80) and np.all(w[0] == 0) and np.all(w >= 0) and w.max() <= 1
    hz = np.linspace(0, 8_000, 257)
    assert np.all(w[hz <= 125] == 0) and np.all(w[hz >= 7_600] == 0)
    # Neighbouring triangles are linear in mel on 82 evenly spaced edges, so between the first
    # and the last centre the weights of every bin add up to 1.
    edges = np.linspace(fe.hertz_to_mel(125.0), fe.hertz_to_mel(7_600.0), 82)
    mel = fe.hertz_to_mel(hz)
    inside = (mel >= edges[1]) & (mel <= edges[80])
    np.testing.assert_allclose(w[inside].sum(1), 1.0, atol=1e-5)
    # Bin 100 (3,125 Hz) by the triangle formula.
    k = np.arange(80)
    up = (mel[100] - edges[k]) / (edges[k + 1] - edges[k])
    down = (edges[k + 2] - mel[100]) / (edges[k + 2] - edges[k + 1])
    np.testing.assert_allclose(w[100], np.maximum(0, np.minimum(up, down)), atol=1e-6)


def test_spec_augment_masks_whole_bins_and_frames_within_the_limits():
    torch.manual_seed(0)
    x = torch.ones(3, 200, 80)
    paddings = torch.zeros(3, 200)
    paddings[2, 100:] = 1
    out = SpecAugment(
        freq_mask_count=2, freq_mask_max_bins=27, time_mask_count=10, time_mask_max_ratio=0.05
    )(x, paddings)
    masked_bins = (out == 0).all(dim=1)  # (N, 80): bins masked at every frame
    masked_frames = (out == 0).all(dim=2)  # (N, 200)
    assert torch.equal(out == 0, masked_bins[:, None, :] | masked_frames[:, :, None])
    assert int(masked_bins.sum(1).max()) <= 2 * 27
    # At most 10 masks of at most 5% of the real length (200 -> 10 frames, 100 -> 5 frames).
    assert int(masked_frames[0].sum()) <= 100 and int(masked_frames[2].sum()) <= 50
    assert not masked_frames[2, 100:].any()


def ctc_by_enumeration(logprobs: np.ndarray, target: list[int]) -> float:
    """-log of the summed probability of every frame path that collapses to `target` (blank 0)."""
    t, v = logprobs.shape
    total = 0.0
    for path in itertools.product(range(v), repeat=t):
        collapsed = [k for i, k in enumerate(path) if k != 0 and (i == 0 or path[i - 1] != k)]
        if collapsed == target:
            total += np.exp(sum(logprobs[i, k] for i, k in enumerate(path)))
    return -np.log(total)


def test_ctc_loss_equals_the_sum_over_alignments_with_blank_zero_and_paddings():
    workload = registry.load("librispeech_conformer", data="synthetic")
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 4, dtype=torch.float64)
    logit_paddings = torch.tensor([[0, 0, 0, 0, 0], [0, 0, 0, 0, 1]], dtype=torch.float64)
    targets = torch.tensor([[1, 2, 0], [3, 3, 2]])
    target_paddings = torch.tensor([[0, 0, 1], [0, 0, 1]], dtype=torch.float64)
    out = workload.loss_fn((targets, target_paddings), (logits, logit_paddings))
    logprobs = torch.log_softmax(logits, -1).numpy()
    expected = [
        ctc_by_enumeration(logprobs[0], [1, 2]),
        ctc_by_enumeration(logprobs[1, :4], [3, 3]),
    ]
    np.testing.assert_allclose(out["per_example"].numpy(), expected, rtol=1e-9)
    assert float(out["summed"]) == pytest.approx(sum(expected))
    assert float(out["n_valid_examples"]) == 4  # no mask: target tokens (the reference's count)
    masked = workload.loss_fn(
        (targets, target_paddings), (logits, logit_paddings), torch.tensor([1.0, 0.0])
    )
    assert (
        float(masked["summed"]) == pytest.approx(expected[0])
        and float(masked["n_valid_examples"]) == 1
    )


def test_frozen_batch_norm_keeps_its_running_statistics():
    bn = MaskedBatchNorm(4)
    workload = registry.load("librispeech_deepspeech", data="synthetic")
    from workloads.librispeech.torch_modules import frozen_batch_norm_statistics

    x, paddings = torch.randn(2, 6, 4) + 3, torch.zeros(2, 6)
    with frozen_batch_norm_statistics(bn, True):
        bn(x, paddings)
    assert torch.equal(bn.running_mean, torch.zeros(4))
    bn(x, paddings)
    expected = 0.001 * x.mean(dim=(0, 1))
    torch.testing.assert_close(bn.running_mean, expected)
    assert workload.is_output_params("lin.weight") and not workload.is_output_params(
        "subsample.lin.weight"
    )


@pytest.fixture(scope="module", params=["librispeech_conformer", "librispeech_deepspeech"])
def trained_once(request):
    workload = registry.load(request.param, data="synthetic")
    model, state = workload.init_model_fn(prng_key(0))
    return workload, model, state


@pytest.mark.slow
def test_train_step_and_eval_on_synthetic_speech(trained_once):
    workload, model, state = trained_once
    batch = next(workload.build_input_queue(prng_key(1), "train", "", 2))
    audio, paddings = batch["inputs"]
    assert audio.shape == (2, 16_000) and paddings.shape == (2, 16_000)
    (logits, out_paddings), _ = workload.model_fn(
        model,
        batch,
        state,
        spec.ForwardPassMode.TRAIN,
        prng_key(2),
        update_batch_norm=True,
        dropout_rate=0.1,
    )
    # 16,000 samples -> 98 frames -> 49 -> 25 after the two stride-2 convolutions.
    assert logits.shape == (2, 25, 1024) and out_paddings.shape == (2, 25)
    loss = workload.loss_fn(label_batch=batch["targets"], logits_batch=(logits, out_paddings))
    (loss["summed"] / loss["n_valid_examples"]).backward()
    assert torch.isfinite(loss["summed"])
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.lin.weight.grad.abs().sum() > 0
    metrics = workload.eval_model(256, model, state, prng_key(3), "", None, 0)
    assert set(metrics) >= {"train/wer", "validation/wer", "test/wer", "validation/ctc_loss"}
    assert metrics["validation/num_examples"] == 2 and metrics["validation/wer"] >= 0


def test_eval_is_deterministic_and_ignores_dropout(trained_once):
    workload, model, state = trained_once
    batch = next(workload.build_input_queue(prng_key(1), "train", "", 2))
    outs = [
        workload.model_fn(model, batch, state, spec.ForwardPassMode.EVAL, None, False, rate)[0][0]
        for rate in (0.0, 0.5)
    ]
    torch.testing.assert_close(outs[0], outs[1])
