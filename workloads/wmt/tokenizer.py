"""SentencePiece vocabulary of the WMT workload, trained as the reference trains it.

The reference trains a unigram model of 32,000 pieces with character coverage 1.0 on the first
10^7 characters of the training split, written one sentence a line (German, then English, pair by
pair). Ids are SentencePiece's defaults: 0 <unk> (which the model also treats as padding), 1 <s>,
2 </s>. Every tokenised sentence ends with </s> (the reference tokenizes with add_eos=True).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

VOCAB_SIZE = 32_000
MAX_CORPUS_CHARS = 10**7
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 0, 1, 2


def train(
    pairs: Iterable[tuple[str, str]],
    model_path: Path,
    vocab_size: int = VOCAB_SIZE,
    max_corpus_chars: int = MAX_CORPUS_CHARS,
    hard_vocab_limit: bool = True,
) -> Path:
    """Trains the unigram model on the first `max_corpus_chars` characters; returns its path.

    `hard_vocab_limit=False` lets a tiny corpus (a test fixture) end with fewer pieces.
    """
    import sentencepiece as spm

    model_path = Path(model_path)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        chars = 0
        with open(corpus, "w", encoding="utf-8") as f:
            for de, en in pairs:
                if chars >= max_corpus_chars:
                    break
                for line in (de, en):
                    f.write(line + "\n")
                    chars += len(line.encode("utf-8")) + 1
        if chars == 0:
            raise ValueError(
                "no sentences to train the SentencePiece model on (the training file is empty)"
            )
        prefix = Path(tmp) / "spm"
        spm.SentencePieceTrainer.train(
            input=str(corpus),
            model_prefix=str(prefix),
            vocab_size=vocab_size,
            character_coverage=1.0,
            model_type="unigram",
            hard_vocab_limit=hard_vocab_limit,
            minloglevel=2,
        )
        model_path.write_bytes(prefix.with_suffix(".model").read_bytes())
    return model_path


class Tokenizer:
    """Text <-> ids with a trained model; `encode` appends </s>, `decode` stops at it."""

    def __init__(self, model_path: Path) -> None:
        import sentencepiece as spm

        if not Path(model_path).exists():
            raise FileNotFoundError(
                f"{model_path} is missing: `algoperf datasets prepare wmt --data-dir DIR --source SRC` "
                "trains it from SRC/train.tsv."
            )
        self.sp: Any = spm.SentencePieceProcessor(model_file=str(model_path))

    @property
    def vocab_size(self) -> int:
        return int(self.sp.get_piece_size())

    def encode(self, text: str) -> np.ndarray:
        return np.array(self.sp.encode(text) + [EOS_ID], np.int32)

    def encode_many(self, texts: list[str]) -> list[np.ndarray]:
        return [np.array(ids + [EOS_ID], np.int32) for ids in self.sp.encode(texts, num_threads=0)]

    def decode(self, ids: Any) -> str:
        return str(self.sp.decode([int(i) for i in ids]))
