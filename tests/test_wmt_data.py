"""WMT data: packing as the reference packs, SentencePiece preparation, the train and eval pipelines."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from workloads import registry
from workloads.wmt import input_pipeline as pipeline
from workloads.wmt import workload as wmt
from workloads.wmt.tokenizer import Tokenizer

A = np.array


def test_packing_the_references_docstring_example():
    packed = pipeline.pack([(A([8, 7, 1]), A([4, 1])), (A([2, 3, 4, 1]), A([5, 6, 1]))], length=10)
    assert packed["inputs"].tolist() == [[8, 7, 1, 2, 3, 4, 1, 0, 0, 0]]
    assert packed["inputs_segmentation"].tolist() == [[1, 1, 1, 2, 2, 2, 2, 0, 0, 0]]
    assert packed["inputs_position"].tolist() == [[0, 1, 2, 0, 1, 2, 3, 0, 0, 0]]
    assert packed["targets"].tolist() == [[4, 1, 5, 6, 1, 0, 0, 0, 0, 0]]
    assert packed["targets_segmentation"].tolist() == [[1, 1, 2, 2, 2, 0, 0, 0, 0, 0]]
    assert packed["targets_position"].tolist() == [[0, 1, 0, 1, 2, 0, 0, 0, 0, 0]]


def test_an_example_that_does_not_fit_on_either_side_starts_a_new_row():
    a = (A([5, 6, 2]), A([7, 2]))
    b = (A([8, 2]), A([9, 9, 9, 2]))  # its inputs would fit after a, its targets would not
    c = (A([5, 2]), A([3]))  # fits after b on both sides (2 + 2 <= 5, 4 + 1 <= 5)
    packed = pipeline.pack([a, b, c], length=5)
    assert packed["inputs"].tolist() == [[5, 6, 2, 0, 0], [8, 2, 5, 2, 0]]
    assert packed["targets"].tolist() == [[7, 2, 0, 0, 0], [9, 9, 9, 2, 3]]
    assert packed["targets_segmentation"].tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 2]]


def test_sides_are_cut_to_their_number_of_nonzero_tokens_as_the_reference_does():
    packed = pipeline.pack([(A([5, 0, 7, 2]), A([4, 2]))], length=6)
    assert packed["inputs"].tolist() == [[5, 0, 7, 0, 0, 0]]  # 3 non-zero tokens: the first 3 kept
    assert packed["inputs_segmentation"].tolist() == [[1, 0, 1, 0, 0, 0]]


def fixture_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    de = ["haus", "katze", "hund", "baum", "auto", "wasser", "feuer", "erde"]
    en = ["house", "cat", "dog", "tree", "car", "water", "fire", "earth"]
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        idx = rng.integers(0, 8, int(rng.integers(1, 6)))
        pairs.append((" ".join(de[i] for i in idx), " ".join(en[i] for i in idx)))
    return pairs


def write_tsv(path, pairs) -> None:
    path.write_text("".join(f"{d}\t{e}\n" for d, e in pairs), encoding="utf-8")


@pytest.fixture(scope="module")
def wmt_dir(tmp_path_factory):
    src = tmp_path_factory.mktemp("raw")
    write_tsv(src / "train.tsv", fixture_pairs(80, 0))
    long_line = ("haus " * 300).strip(), ("house " * 300).strip()
    write_tsv(
        src / "validation.tsv", fixture_pairs(3, 1)[:2] + [long_line] + fixture_pairs(3, 1)[2:]
    )
    write_tsv(src / "test.tsv", fixture_pairs(4, 2))
    data = tmp_path_factory.mktemp("data")
    wmt.prepare(data, src, vocab_size=40, hard_vocab_limit=False)
    return data


def test_prepare_trains_the_vocabulary_and_tokenises_every_split(wmt_dir):
    tokenizer = Tokenizer(wmt_dir / wmt.TOKENIZER_FILE)
    ids = tokenizer.encode("hund katze")
    assert ids[-1] == wmt.EOS_ID and wmt.EOS_ID not in ids[:-1].tolist()
    assert tokenizer.decode(ids) == "hund katze"
    stored = wmt.load_tokenized(wmt_dir, "train")
    first = next(wmt.read_pairs(wmt_dir / "train.tsv"))
    assert len(stored) == 80
    assert stored.source(0).tolist() == tokenizer.encode(first[0]).tolist()
    assert stored.target(0).tolist() == tokenizer.encode(first[1]).tolist()


def test_a_malformed_line_is_reported_with_its_file_and_line(tmp_path):
    (tmp_path / "train.tsv").write_text("a\tb\nno tab here\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"train.tsv:2"):
        list(wmt.read_pairs(tmp_path / "train.tsv"))


def test_train_batches_are_packed_pairs_of_the_split(wmt_dir):
    workload = registry.load("wmt", data="real", data_dir=str(wmt_dir))
    pairs = workload.pairs("train")
    known = {(tuple(pairs.source(i)), tuple(pairs.target(i))) for i in range(len(pairs))}
    batch = next(workload.train_batches(3, seed=5))
    assert batch["inputs"].shape == (3, 256) and batch["inputs_segmentation"].max() > 1
    np.testing.assert_array_equal(batch["weights"], batch["targets"] > 0)
    for r in range(3):
        for s in range(1, batch["inputs_segmentation"][r].max() + 1):
            src = batch["inputs"][r][batch["inputs_segmentation"][r] == s]
            tgt = batch["targets"][r][batch["targets_segmentation"][r] == s]
            assert (tuple(src), tuple(tgt)) in known
            assert batch["inputs_position"][r][
                batch["inputs_segmentation"][r] == s
            ].tolist() == list(range(len(src)))


def test_train_stream_is_deterministic_under_its_seed(wmt_dir):
    workload = registry.load("wmt", data="real", data_dir=str(wmt_dir))
    a, b, c = (workload.train_batches(2, seed=s) for s in (3, 3, 4))
    for _ in range(4):
        x, y, z = next(a), next(b), next(c)
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    assert not np.array_equal(x["inputs"], z["inputs"])


def test_train_stream_restores_from_a_saved_position(wmt_dir):
    workload = registry.load("wmt", data="real", data_dir=str(wmt_dir))
    stream = workload.train_batches(2, seed=7)
    for _ in range(5):  # 80 pairs, ~40 per row: several epochs and chunks go by
        next(stream)
    state = pickle.loads(pickle.dumps(stream.state_dict()))
    expected = [next(stream) for _ in range(6)]
    restored = workload.train_batches(2, seed=7)
    restored.load_state_dict(state)
    for batch in expected:
        got = next(restored)
        for key in batch:
            np.testing.assert_array_equal(got[key], batch[key])


def test_shuffle_buffer_visits_every_index_once_per_epoch():
    stream = pipeline.ShuffleBuffer(np.arange(10, 30), buffer_size=4, seed=0)
    epoch = [next(stream) for _ in range(20)]
    assert sorted(epoch) == list(range(10, 30)) and epoch != list(range(10, 30))
    assert sorted(next(stream) for _ in range(20)) == list(range(10, 30))


def test_eval_batches_are_padded_in_file_order_without_overlong_pairs(wmt_dir):
    workload = registry.load("wmt", data="real", data_dir=str(wmt_dir))
    tokenizer = workload.tokenizer()
    lines = list(wmt.read_pairs(wmt_dir / "validation.tsv"))
    short = [p for p in lines if len(p[0].split()) < 100]
    batches = list(workload.eval_split_batches("validation", 3_000, 2))
    assert len(batches) == 2 and all(b["inputs"].shape == (2, 256) for b in batches)
    batch = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    for i, (de, en) in enumerate(short):
        ids = tokenizer.encode(de)
        assert (
            batch["inputs"][i, : len(ids)].tolist() == ids.tolist()
            and not batch["inputs"][i, len(ids) :].any()
        )
        assert workload.detokenize(batch["targets"][i]) == en
    assert not batch["weights"][3].any()  # the padding example
    np.testing.assert_array_equal(batch["weights"][:3], batch["targets"][:3] > 0)


def test_eval_train_is_a_fixed_draw_of_training_pairs(wmt_dir):
    workload = registry.load("wmt", data="real", data_dir=str(wmt_dir))
    order = workload.eval_order("eval_train", 30)
    assert len(set(order.tolist())) == 30 and order.max() < 80
    np.testing.assert_array_equal(
        order, registry.load("wmt", data="real", data_dir=str(wmt_dir)).eval_order("eval_train", 30)
    )
    assert order.tolist() != list(range(30))


def test_synthetic_targets_are_the_reversed_sources():
    workload = registry.load("wmt", data="synthetic")
    pairs = workload.pairs("train")
    for i in range(len(pairs)):
        src, tgt = pairs.source(i), pairs.target(i)
        assert src[-1] == tgt[-1] == wmt.EOS_ID and tgt[:-1].tolist() == src[:-1][::-1].tolist()
    assert len(pairs) == workload.num_train_examples
    batch = next(workload.train_batches(2, seed=0))
    assert batch["inputs"].shape == (2, workload.max_length)


def test_tokenising_in_chunks_gives_the_same_pairs(wmt_dir):
    tokenizer = Tokenizer(wmt_dir / wmt.TOKENIZER_FILE)
    whole = wmt.tokenize_file(wmt_dir / "train.tsv", tokenizer)
    chunked = wmt.tokenize_file(wmt_dir / "train.tsv", tokenizer, chunk=7)
    assert len(chunked) == len(whole) == 80
    for i in (0, 6, 7, 50, 79):
        assert chunked.source(i).tolist() == whole.source(i).tolist()
        assert chunked.target(i).tolist() == whole.target(i).tolist()
