"""`loss_fn`'s `summed` and `n_valid_examples` as the reference's, on hand-made logits and labels.

A submission divides `summed` by `n_valid_examples`, so that count sets the scale of every
gradient. The reference (mlcommons/algorithmic-efficiency, PyTorch workloads) counts:

- LibriSpeech without a mask (every training step: its training batches carry no `weights`): the
  target tokens; with a mask: the utterances of non-zero weight and non-empty target; at least 1.
- WMT without a mask: every target position, padding included; with a per-token mask: its sum.

Every expected number here is computed in numpy from the definitions: CTC as minus the log of the
summed probability of every frame path that collapses to the target, cross-entropy with label
smoothing as minus the smoothed target distribution dotted with the log-softmax.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from workloads import registry

SPEECH = ("librispeech_conformer", "librispeech_deepspeech")


def log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def ctc_by_enumeration(logprobs: np.ndarray, target: list[int]) -> float:
    """-log of the summed probability of the frame paths collapsing to `target` (blank 0)."""
    frames, vocab = logprobs.shape
    total = 0.0
    for path in itertools.product(range(vocab), repeat=frames):
        collapsed = [k for i, k in enumerate(path) if k != 0 and (i == 0 or path[i - 1] != k)]
        if collapsed == target:
            total += np.exp(sum(logprobs[i, k] for i, k in enumerate(path)))
    return float(-np.log(total))


@pytest.fixture(scope="module")
def speech_batch() -> dict[str, np.ndarray]:
    """Three utterances of 5, 5 and 4 real frames; targets of 2, 3 and 0 tokens (vocab 4)."""
    rng = np.random.default_rng(18)
    return {
        "logits": rng.normal(size=(3, 5, 4)),
        "logit_paddings": np.array([[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1]], float),
        "targets": np.array([[1, 2, 0], [3, 3, 2], [0, 0, 0]]),
        "target_paddings": np.array([[0, 0, 1], [0, 0, 0], [1, 1, 1]], float),
    }


@pytest.fixture(scope="module")
def speech_losses(speech_batch: dict[str, np.ndarray]) -> np.ndarray:
    """The three utterances' CTC losses, by enumeration over the real frames."""
    logp = log_softmax(speech_batch["logits"])
    lengths = (1 - speech_batch["logit_paddings"]).sum(1).astype(int)
    out = []
    for b in range(3):
        target = [
            int(t)
            for t, pad in zip(speech_batch["targets"][b], speech_batch["target_paddings"][b])
            if pad == 0
        ]
        out.append(ctc_by_enumeration(logp[b, : lengths[b]], target))
    return np.array(out)


def speech_loss(name: str, batch: dict[str, np.ndarray], mask: np.ndarray | None) -> dict:
    workload = registry.load(name, data="synthetic")
    t = {k: torch.from_numpy(v) for k, v in batch.items()}
    return workload.loss_fn(
        (t["targets"], t["target_paddings"]),
        (t["logits"], t["logit_paddings"]),
        None if mask is None else torch.from_numpy(mask),
    )


@pytest.mark.parametrize("name", SPEECH)
def test_ctc_without_mask_sums_utterances_and_counts_target_tokens(
    name: str, speech_batch: dict[str, np.ndarray], speech_losses: np.ndarray
) -> None:
    out = speech_loss(name, speech_batch, None)
    assert float(out["summed"]) == pytest.approx(speech_losses.sum(), rel=1e-9)
    tokens = (1 - speech_batch["target_paddings"]).sum()
    assert tokens == 5
    assert float(out["n_valid_examples"]) == tokens


@pytest.mark.parametrize("name", SPEECH)
def test_ctc_with_mask_counts_weighted_utterances_with_a_target(
    name: str, speech_batch: dict[str, np.ndarray], speech_losses: np.ndarray
) -> None:
    # The third utterance has weight 1 but an empty target: its loss is summed, it is not counted.
    mask = np.array([1.0, 0.0, 1.0])
    out = speech_loss(name, speech_batch, mask)
    assert float(out["summed"]) == pytest.approx(speech_losses[0] + speech_losses[2], rel=1e-9)
    assert float(out["n_valid_examples"]) == 1
    np.testing.assert_allclose(out["per_example"].numpy(), speech_losses * mask, rtol=1e-9)


@pytest.mark.parametrize("name", SPEECH)
def test_ctc_count_is_at_least_one(name: str, speech_batch: dict[str, np.ndarray]) -> None:
    out = speech_loss(name, speech_batch, np.zeros(3))
    assert float(out["summed"]) == 0.0
    assert float(out["n_valid_examples"]) == 1


@pytest.mark.parametrize("name", SPEECH)
def test_speech_training_batches_carry_no_mask(name: str) -> None:
    """So every training step takes the no-mask branch: a per-token loss, as the reference's."""
    workload = registry.load(name, data="synthetic")
    batch = workload.device_batch(next(iter(workload.train_batches(4, seed=0))))
    assert "weights" not in batch


@pytest.fixture(scope="module")
def translation_batch() -> dict[str, np.ndarray]:
    """Two target rows of 4 positions (2 of them padding), vocabulary 6."""
    rng = np.random.default_rng(81)
    return {
        "logits": rng.normal(size=(2, 4, 6)),
        "targets": np.array([[3, 5, 2, 0], [4, 2, 0, 0]]),
    }


def smoothed_cross_entropy(logits: np.ndarray, targets: np.ndarray, smoothing: float) -> np.ndarray:
    """Per position: -sum_k q_k log p_k, q = (1 - s) one_hot + s / vocab."""
    vocab = logits.shape[-1]
    q = np.full(logits.shape, smoothing / vocab)
    np.put_along_axis(q, targets[..., None], 1.0 - smoothing + smoothing / vocab, axis=-1)
    return -(q * log_softmax(logits)).sum(-1)


def translation_loss(batch: dict[str, np.ndarray], mask: np.ndarray | None, smoothing: float) -> dict:
    workload = registry.load("wmt", data="synthetic")
    return workload.loss_fn(
        torch.from_numpy(batch["targets"]),
        torch.from_numpy(batch["logits"]),
        None if mask is None else torch.from_numpy(mask),
        label_smoothing=smoothing,
    )


def test_wmt_without_mask_counts_every_position_padding_included(
    translation_batch: dict[str, np.ndarray],
) -> None:
    out = translation_loss(translation_batch, None, 0.1)
    per_position = smoothed_cross_entropy(translation_batch["logits"], translation_batch["targets"], 0.1)
    assert float(out["summed"]) == pytest.approx(per_position.sum(), rel=1e-9)
    assert float(out["n_valid_examples"]) == 8


def test_wmt_with_mask_sums_and_counts_the_weighted_positions(
    translation_batch: dict[str, np.ndarray],
) -> None:
    mask = (translation_batch["targets"] > 0).astype(np.float64)
    mask[0, 1] = 0.0  # one real token masked out too
    out = translation_loss(translation_batch, mask, 0.1)
    per_position = smoothed_cross_entropy(translation_batch["logits"], translation_batch["targets"], 0.1)
    assert float(out["summed"]) == pytest.approx((per_position * mask).sum(), rel=1e-9)
    assert float(out["n_valid_examples"]) == 4
    np.testing.assert_allclose(out["per_example"].numpy(), per_position * mask, rtol=1e-9)
