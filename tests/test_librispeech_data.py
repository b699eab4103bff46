"""The LibriSpeech input pipeline on a fixture in the reference's preprocessed format, and the
preparation step from FLAC files and transcripts."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile

from workloads import registry
from workloads.librispeech import input_pipeline as pipeline
from workloads.librispeech.preparation import prepare
from workloads.librispeech.tokenizer import Tokenizer

LENGTHS = {"train-clean-100": [4_000, 5_000, 6_000, 7_000, 8_000], "dev-clean": [3_000, 4_500, 3_500]}


def write_subset(root, subset, lengths, rng):
    """The reference's files: pandas-style listing (`,id`), int64 audio, int32 targets."""
    (root / subset).mkdir()
    ids = []
    for i, n in enumerate(lengths):
        uid = f"19-198-{i:04d}"
        np.save(root / subset / f"{uid}_audio.npy", rng.integers(-3000, 3000, n).astype(np.int64))
        np.save(
            root / subset / f"{uid}_targets.npy",
            np.append(rng.integers(3, 50, 4 + i), 2).astype(np.int32),
        )
        ids.append(uid)
    with open(root / f"{subset}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", "id"])
        w.writerows([k, u] for k, u in enumerate(ids))


@pytest.fixture
def data_dir(tmp_path):
    rng = np.random.default_rng(0)
    for subset, lengths in LENGTHS.items():
        write_subset(tmp_path, subset, lengths, rng)
    return tmp_path


def test_listing_is_read_by_its_id_column(data_dir):
    assert pipeline.read_listing(data_dir / "dev-clean.csv") == ["19-198-0000", "19-198-0001", "19-198-0002"]


def test_eval_batches_pad_to_the_reference_lengths_with_weights(data_dir):
    workload = registry.load("librispeech_conformer", data="real", data_dir=str(data_dir))
    batches = list(workload.eval_split_batches("validation", 10, 2))
    assert [b["inputs"].shape for b in batches] == [(2, 320_000)] * 2
    assert [b["targets"].shape for b in batches] == [(2, 256)] * 2
    batch = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    audio = np.load(data_dir / "dev-clean" / "19-198-0000_audio.npy")
    np.testing.assert_array_equal(batch["inputs"][0, :3_000], audio)
    assert (
        batch["input_paddings"][0, :3_000].max() == 0
        and batch["input_paddings"][0, 3_000:].min() == 1
    )
    assert batch["inputs"][0, 3_000:].max() == 0
    targets = np.load(data_dir / "dev-clean" / "19-198-0001_targets.npy")
    np.testing.assert_array_equal(batch["targets"][1, : len(targets)], targets)
    assert (batch["target_paddings"][1] == 0).sum() == len(targets)
    # Three real utterances, then a filler row that is all padding and weighs nothing.
    assert batch["weights"].tolist() == [1, 1, 1, 0]
    assert batch["input_paddings"][3:].min() == 1


def test_eval_train_is_a_fixed_subset_of_the_training_utterances(data_dir):
    first = pipeline.eval_files(data_dir, "eval_train", 3)
    assert first == pipeline.eval_files(data_dir, "eval_train", 3)
    assert len(set(first)) == 3 and set(first) <= set(pipeline.utterance_files(data_dir, "train"))


def test_training_stream_is_deterministic_under_a_seed(data_dir):
    workload = registry.load("librispeech_deepspeech", data="real", data_dir=str(data_dir))
    a, b = workload.train_batches(2, seed=7), workload.train_batches(2, seed=7)
    for _ in range(4):  # past the end of the first epoch (5 utterances, 2 per batch)
        x, y = next(a), next(b)
        for key in ("inputs", "input_paddings", "targets", "target_paddings"):
            np.testing.assert_array_equal(x[key], y[key])


def test_restored_training_stream_gives_the_same_next_batches(data_dir):
    workload = registry.load("librispeech_deepspeech", data="real", data_dir=str(data_dir))
    stream = workload.train_batches(2, seed=3)
    next(stream)
    state = stream.state_dict()
    expected = [next(stream) for _ in range(3)]
    restored = workload.train_batches(2, seed=3)
    restored.load_state_dict(state)
    for e in expected:
        got = next(restored)
        np.testing.assert_array_equal(got["inputs"], e["inputs"])
        np.testing.assert_array_equal(got["targets"], e["targets"])


def test_an_epoch_visits_every_utterance_once_and_drops_the_remainder(data_dir):
    stream = pipeline.UtteranceStream(pipeline.utterance_files(data_dir, "train"), 2, seed=0)
    lengths = [
        int((b["input_paddings"] == 0).sum(1)[i])
        for b in (next(stream), next(stream))
        for i in range(2)
    ]
    assert len(set(lengths)) == 4 and set(lengths) <= set(LENGTHS["train-clean-100"])


def test_missing_listings_name_the_files_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"test-clean.csv.*datasets prepare"):
        pipeline.utterance_files(tmp_path, "test")


def test_preparation_from_flac_and_transcripts(tmp_path):
    chapter = tmp_path / "LibriSpeech" / "train-clean-100" / "19" / "198"
    chapter.mkdir(parents=True)
    texts = [
        "ALPHA BETA GAMMA",
        "BETA GAMMA DELTA",
        "GAMMA DELTA ALPHA",
        "DELTA ALPHA BETA",
        "X" * 257,
    ]
    waves = []
    for i in range(len(texts)):
        wave = (np.sin(np.arange(3_200 + 100 * i) * (i + 1) / 10) * 5_000).astype(np.int16)
        soundfile.write(chapter / f"19-198-{i:04d}.flac", wave, 16_000, subtype="PCM_16")
        waves.append(wave)
    (chapter / "19-198.trans.txt").write_text(
        "".join(f"19-198-{i:04d} {t}\n" for i, t in enumerate(texts))
    )
    out = tmp_path / "prepared"
    kept = prepare(tmp_path / "LibriSpeech", out, vocab_size=30, hard_vocab_limit=False)
    # The 257-character transcript is over the reference's 256 and is skipped.
    assert kept == {"train-clean-100": 4}
    ids = pipeline.read_listing(out / "train-clean-100.csv")
    assert ids == [f"19-198-{i:04d}" for i in range(4)]
    audio = np.load(out / "train-clean-100" / "19-198-0002_audio.npy")
    assert audio.dtype == np.int16  # the 16-bit samples, exactly
    np.testing.assert_array_equal(audio, waves[2])  # FLAC is lossless
    tokens = np.load(out / "train-clean-100" / "19-198-0002_targets.npy")
    assert tokens[-1] == 2 and Tokenizer(out / "spm_model.vocab").detokenize(tokens) == texts[2]


def test_synthetic_transcripts_are_a_function_of_the_audio():
    a = pipeline.synthetic_examples(6, seed=1)
    b = pipeline.synthetic_examples(6, seed=1)
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
    n_tokens = (a["target_paddings"] == 0).sum(1) - 1  # without </s>
    n_samples = (a["input_paddings"] == 0).sum(1)
    np.testing.assert_array_equal(n_samples, n_tokens * pipeline.SYNTHETIC_SEGMENT)
    # The same pitch gives the same token: the dominant frequency of each segment decides it.
    seg = pipeline.SYNTHETIC_SEGMENT
    mapping = {}
    for x, t, n in zip(a["inputs"], a["targets"], n_tokens):
        for k in range(n):
            peak = int(np.abs(np.fft.rfft(x[k * seg : (k + 1) * seg])).argmax())
            assert mapping.setdefault(peak, int(t[k])) == int(t[k])
