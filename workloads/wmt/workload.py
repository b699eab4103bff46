"""WMT17 German -> English translation with a Transformer, and its three variants (WORKLOADS.md).

Data layout in --data-dir (what `algoperf datasets prepare wmt --data-dir DIR --source SRC` makes
from SRC/train.tsv, SRC/validation.tsv, SRC/test.tsv):

    train.tsv, validation.tsv, test.tsv   one `german<TAB>english` sentence pair a line, UTF-8:
                                          WMT17 de-en train (5,906,184 pairs), WMT14 newstest2013
                                          (3,000) and newstest2014 (3,003) as the reference's
                                          TFDS splits hold them
    sentencepiece.model                   unigram, 32,000 pieces, trained as the reference does
                                          (first 10^7 characters of train.tsv; tokenizer.py)
    <split>_{inputs,targets}.npy          the tokenised sentences, flat int32 (with </s>), and
    <split>_{inputs,targets}_offsets.npy  where each sentence starts (int64, n + 1 entries)

A split whose .npy files are missing is tokenised from its .tsv when it is first used. Training
batches are packed rows of 256 tokens as the reference packs them, evaluation batches are padded
to 256 (input_pipeline.py). The loss is per-token cross-entropy over non-padding targets; the
baselines train with label smoothing 0.1 and the eval loss uses none. BLEU is sacrebleu's corpus
BLEU of the detokenised beam-search translations (beam 4, length penalty alpha 0.6, at most 256
positions), as the reference computes it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from algoperf.spec import LossType
from workloads.input_pipeline import prepared_dir
from workloads.registry import WorkloadInfo
from workloads.wmt import input_pipeline as pipeline
from workloads.wmt import tokenizer as tok

VOCAB_SIZE = tok.VOCAB_SIZE
MAX_LENGTH = 256  # packed row length, eval padding and maximum decode length of the reference
PAD_ID, EOS_ID = tok.PAD_ID, tok.EOS_ID
TOKENIZER_FILE = "sentencepiece.model"
LABEL_SMOOTHING = 0.1  # the reference loss's default, used by the baselines in training
BEAM_SIZE, LENGTH_PENALTY_ALPHA = 4, 0.6
EVAL_TRAIN_SEED = 0
SPLIT_FILES = {"train": "train", "eval_train": "train", "validation": "validation", "test": "test"}

BASE = WorkloadInfo(
    name="wmt",
    dataset="WMT17 de-en 5,906,184 / WMT14 3,000 / WMT14 3,003; SentencePiece 32k",
    model="Transformer: 6+6 layers, dim 1024, 16 heads, MLP 1024, pre-LN, ReLU, shared embeddings, "
    "max len 256; eval = BLEU over beam search (size 4)",
    target_metric_name="bleu",
    higher_is_better=True,
    validation_target=30.8491,
    test_target=30.7219,
    max_allowed_runtime_sec=43_336,
    step_hint=120_000,
    eval_period_time_sec=840,
    eval_batch_size=128,
    num_train_examples=5_906_184,
    num_eval_train_examples=3_072,  # 3,000 rounded up to a multiple of the eval batch size
    num_validation_examples=3_000,
    num_test_examples=3_003,
    loss_type=LossType.SOFTMAX_CROSS_ENTROPY,
    default_dropout=0.1,
    n_params={"pytorch": 133_521_408, "jax": 133_521_408},
    implementations={
        "pytorch": "workloads.wmt.torch_workload:WmtWorkload",
        "jax": "workloads.wmt.jax_workload:WmtWorkload",
    },
    model_options={"pre_ln": True, "attention_temp": 1.0, "activation": "relu", "glu": False},
)

WORKLOADS = [
    BASE,
    BASE.variant(
        name="wmt_post_ln",
        change="post-LN",
        validation_target=30.0779,
        test_target=29.8982,
        model_options={**BASE.model_options, "pre_ln": False},
        n_params={"pytorch": 133_517_312, "jax": 133_517_312},
    ),
    BASE.variant(
        name="wmt_attention_temp",
        change="attention temperature 4.0",
        validation_target=29.3379,
        test_target=29.4143,
        model_options={**BASE.model_options, "attention_temp": 4.0},
    ),
    BASE.variant(
        name="wmt_glu_tanh",
        change="GLU + tanh",
        validation_target=29.5779,
        test_target=29.0515,
        model_options={**BASE.model_options, "glu": True, "activation": "tanh"},
        n_params={"pytorch": 146_116_608, "jax": 146_116_608},
    ),
]


def bleu(hypotheses: list[str], references: list[str]) -> float:
    """sacrebleu's corpus BLEU (0-100; 13a tokenisation, exponential smoothing, as the reference)."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(hypotheses, [references]).score)


def truncate_at_eos(ids: Any) -> np.ndarray:
    """The tokens up to and including the first </s>, as the reference cuts them before detokenising.

    Like the reference (`ids[:argmax(ids == EOS) + 1]`), a sequence without </s> keeps only its
    first token: a translation that never ends scores as a one-token sentence.
    """
    ids = np.asarray(ids)
    return ids[: int(np.argmax(ids == EOS_ID)) + 1]


def read_pairs(path: Path) -> Iterator[tuple[str, str]]:
    """The `german<TAB>english` pairs of a file, in order (blank lines skipped)."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 2:
                raise ValueError(
                    f"{path}:{n}: expected one 'german<TAB>english' pair, found {len(parts)} "
                    "tab-separated fields; remove stray tabs from the sentences."
                )
            yield parts[0], parts[1]


def tokenize_file(
    path: Path, tokenizer: tok.Tokenizer, chunk: int = 100_000
) -> pipeline.TokenizedPairs:
    """Every pair of a TSV file tokenised (</s> appended), flattened chunk by chunk."""
    parts: list[pipeline.TokenizedPairs] = []
    buffer: list[tuple[str, str]] = []

    def flush() -> None:
        src = tokenizer.encode_many([p[0] for p in buffer])
        tgt = tokenizer.encode_many([p[1] for p in buffer])
        parts.append(pipeline.TokenizedPairs.from_lists(list(zip(src, tgt))))
        buffer.clear()

    for pair in read_pairs(path):
        buffer.append(pair)
        if len(buffer) >= chunk:
            flush()
    flush()
    return pipeline.TokenizedPairs.concatenate(parts)


def save_tokenized(pairs: pipeline.TokenizedPairs, data_dir: Path, name: str) -> None:
    for side, data, offsets in (
        ("inputs", pairs.src, pairs.src_offsets),
        ("targets", pairs.tgt, pairs.tgt_offsets),
    ):
        np.save(data_dir / f"{name}_{side}.npy", data)
        np.save(data_dir / f"{name}_{side}_offsets.npy", offsets)


def load_tokenized(data_dir: Path, name: str) -> pipeline.TokenizedPairs | None:
    files = [
        data_dir / f"{name}_{s}{o}.npy" for s in ("inputs", "targets") for o in ("", "_offsets")
    ]
    if not all(f.exists() for f in files):
        return None
    return pipeline.TokenizedPairs(*(np.load(f, mmap_mode="r") for f in files))


def prepare(
    data_dir: Path,
    source: Path | None = None,
    vocab_size: int = VOCAB_SIZE,
    hard_vocab_limit: bool = True,
) -> Path:
    """Copies the pair files from `source`, trains the SentencePiece model, tokenises every split."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    if source is not None:
        for split in ("train", "validation", "test"):
            found = Path(source) / f"{split}.tsv"
            if found.exists() and found.resolve() != (data_dir / found.name).resolve():
                shutil.copy(found, data_dir / found.name)
    train_file = data_dir / "train.tsv"
    if not train_file.exists():
        raise FileNotFoundError(
            f"{train_file} is missing: pass --source with a folder holding train.tsv, validation.tsv "
            "and test.tsv (one 'german<TAB>english' pair a line)."
        )
    tok.train(
        read_pairs(train_file),
        data_dir / TOKENIZER_FILE,
        vocab_size,
        hard_vocab_limit=hard_vocab_limit,
    )
    tokenizer = tok.Tokenizer(data_dir / TOKENIZER_FILE)
    for split in ("train", "validation", "test"):
        if (data_dir / f"{split}.tsv").exists():
            save_tokenized(tokenize_file(data_dir / f"{split}.tsv", tokenizer), data_dir, split)
    return data_dir


def synthetic_pairs(n: int, seed: int) -> pipeline.TokenizedPairs:
    """Short random sentences whose translation is the source reversed (a learnable function)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        src = rng.integers(3, 40, int(rng.integers(3, 7)))
        pairs.append((np.append(src, EOS_ID), np.append(src[::-1], EOS_ID)))
    return pipeline.TokenizedPairs.from_lists(pairs)


class WmtData:
    """The framework-free data half of the WMT workload (mixed into the torch class)."""

    data: str
    data_dir: str | None
    synthetic_sizes: dict[str, int] = {"train": 64, "eval_train": 2, "validation": 2, "test": 2}
    _tokenizer: tok.Tokenizer | None = None
    _pairs_cache: dict[str, pipeline.TokenizedPairs]

    # Real data: the reference's 256; synthetic sentences have at most 7 tokens (</s> included).
    @property
    def max_length(self) -> int:
        return MAX_LENGTH if self.data == "real" else 16

    @property
    def max_predict_length(self) -> int:
        return MAX_LENGTH if self.data == "real" else 8

    def _dir(self) -> Path:
        if not self.data_dir:
            raise FileNotFoundError(
                "wmt reads its data from --data-dir (train.tsv, validation.tsv, test.tsv and "
                "sentencepiece.model; see workloads/wmt/workload.py), or use --data synthetic."
            )
        return prepared_dir(self.data_dir, "wmt")

    def tokenizer(self) -> tok.Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = tok.Tokenizer(self._dir() / TOKENIZER_FILE)
        return self._tokenizer

    def translation_metrics(
        self, loss: float, correct: float, tokens: float, predicted: list[Any], targets: list[Any]
    ) -> dict[str, float]:
        """The eval of a split from both frameworks' sums and token ids: loss and accuracy per
        real target token, and BLEU of the detokenised translations (`predicted`, without the
        start token) against the detokenised targets, one per real example."""
        hypotheses = [self.detokenize(p) for p in predicted]
        references = [self.detokenize(t) for t in targets]
        return {
            "loss": loss / max(tokens, 1.0),
            "accuracy": correct / max(tokens, 1.0),
            "bleu": bleu(hypotheses, references) if references else 0.0,
            "num_examples": len(references),
        }

    def detokenize(self, ids: Any) -> str:
        ids = truncate_at_eos(ids)
        if self.data == "synthetic":
            return " ".join(str(int(t)) for t in ids if int(t) not in (PAD_ID, EOS_ID))
        return self.tokenizer().decode(ids)

    def pairs(self, split: str) -> pipeline.TokenizedPairs:
        name = SPLIT_FILES[split]
        cache = self.__dict__.setdefault("_pairs_cache", {})
        if name not in cache:
            if self.data == "synthetic":
                cache[name] = synthetic_pairs(
                    self.synthetic_sizes[split], {"train": 0, "validation": 1, "test": 2}[name]
                )
            else:
                found = load_tokenized(self._dir(), name)
                if found is None:
                    path = self._dir() / f"{name}.tsv"
                    if not path.exists():
                        raise FileNotFoundError(
                            f"{path} is missing (one 'german<TAB>english' pair a line); "
                            "`algoperf datasets prepare wmt --data-dir DIR --source SRC` sets it up."
                        )
                    found = tokenize_file(path, self.tokenizer())
                cache[name] = found
        return cache[name]

    def train_batches(self, global_batch_size: int, seed: int) -> pipeline.PackedTrainStream:
        return pipeline.PackedTrainStream(
            self.pairs("train"), global_batch_size, seed, self.max_length
        )

    def eval_order(self, split: str, num_examples: int) -> np.ndarray:
        """Which pairs an eval of `split` uses: file order, or a fixed shuffled draw for eval-train."""
        pairs = self.pairs(split)
        kept = pairs.kept(self.max_length)
        if split != "eval_train":
            return kept[:num_examples]
        stream = pipeline.ShuffleBuffer(
            kept, pipeline.SHUFFLE_BUFFER, EVAL_TRAIN_SEED, repeat=False
        )
        order = []
        for i in stream:
            order.append(i)
            if len(order) == num_examples:
                break
        return np.array(order, np.int64)

    def eval_split_batches(
        self, split: str, num_examples: int, batch_size: int
    ) -> Iterator[dict[str, np.ndarray]]:
        order = self.eval_order(split, num_examples)
        # A split smaller than the eval batch (a fixture) is one batch of its own size.
        return pipeline.eval_batches(
            self.pairs(split), order, len(order), min(batch_size, max(len(order), 1)), self.max_length
        )
