"""The LibriSpeech SentencePiece tokenizer (vocabulary 1024), as the reference trains and uses it.

The reference trains a unigram model with character coverage 1.0 on the first 10 million
characters of the train-clean-100 transcripts (upper case, as LibriSpeech writes them) with
SentencePiece's default special ids: 0 = <unk> (which doubles as the CTC blank), 1 = <s>,
2 = </s>. Targets are encoded with an end-of-sentence id appended and no start id. The model file
is called `spm_model.vocab` in the reference's data folder (it is a SentencePiece model proto
despite the suffix), and so it is here.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

VOCAB_SIZE = 1024
TOKENIZER_FILE = "spm_model.vocab"
MAX_TRAINING_CHARS = 10_000_000


def train_tokenizer(
    transcripts: Iterable[str],
    out_path: str | Path,
    vocab_size: int = VOCAB_SIZE,
    max_chars: int = MAX_TRAINING_CHARS,
    **trainer_options: Any,
) -> Path:
    """Trains the SentencePiece model on `transcripts` and writes it to `out_path`.

    `trainer_options` go to `SentencePieceTrainer` unchanged (a test trains a tiny vocabulary on a
    few sentences with `hard_vocab_limit=False`).
    """
    import sentencepiece as spm

    sentences, count = [], 0
    for line in transcripts:
        count += len(line) + 1
        if count > max_chars:
            break
        sentences.append(line)
    if not sentences:
        raise ValueError(f"no transcripts to train the tokenizer for {out_path} on")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=vocab_size,
        character_coverage=1.0,
        model_type="unigram",
        **trainer_options,
    )
    out_path.write_bytes(model.getvalue())
    return out_path


class Tokenizer:
    """Text <-> token ids with the trained model: `tokenize` appends </s>, `detokenize` drops it."""

    def __init__(self, model_path: str | Path) -> None:
        import sentencepiece as spm

        path = Path(model_path)
        if not path.exists():
            raise FileNotFoundError(
                f"The LibriSpeech tokenizer {path} is missing: `algoperf datasets prepare "
                "librispeech_conformer --data-dir DIR --source LibriSpeech/` trains it."
            )
        self.path = path
        self.processor = spm.SentencePieceProcessor(model_proto=path.read_bytes())

    @property
    def vocab_size(self) -> int:
        return int(self.processor.get_piece_size())

    def tokenize(self, text: str) -> np.ndarray:
        return np.array(self.processor.encode(text) + [self.processor.eos_id()], dtype=np.int32)

    def detokenize(self, ids: Sequence[int] | np.ndarray) -> str:
        return str(self.processor.decode([int(i) for i in ids]))
