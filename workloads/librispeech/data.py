"""The data side of both LibriSpeech workloads (framework-free): splits, batches, transcripts."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from workloads.input_pipeline import ArrayBatchStream, prepared_dir
from workloads.input_pipeline import eval_batches as array_eval_batches
from workloads.librispeech import input_pipeline as pipeline
from workloads.librispeech.tokenizer import TOKENIZER_FILE, Tokenizer

SYNTHETIC_SEEDS = {"train": 1300, "eval_train": 1300, "validation": 1301, "test": 1302}


class LibriSpeechData:
    """Mixed into the framework workload class: real .npy files or synthetic tone speech."""

    data: str
    data_dir: str | None
    # Tiny: a step and an eval of these 32M- and 18M-parameter models on 1 s utterances are cheap.
    synthetic_sizes: dict[str, int] = {"train": 16, "eval_train": 2, "validation": 2, "test": 2}
    _tokenizer: Tokenizer | None = None

    def _data_dir(self) -> Path:
        if not self.data_dir:
            raise FileNotFoundError(
                "LibriSpeech is read from --data-dir (the preprocessed .npy files of `algoperf "
                "datasets prepare librispeech`); or use --data synthetic."
            )
        return prepared_dir(self.data_dir, "librispeech")

    def synthetic_split(self, split: str) -> dict[str, np.ndarray]:
        return pipeline.synthetic_examples(self.synthetic_sizes[split], SYNTHETIC_SEEDS[split])

    def train_batches(self, global_batch_size: int, seed: int) -> Any:
        if self.data == "synthetic":
            return ArrayBatchStream(self.split_arrays("train"), global_batch_size, seed)  # type: ignore[attr-defined]
        files = pipeline.utterance_files(self._data_dir(), "train")
        return pipeline.UtteranceStream(files, global_batch_size, seed)

    def eval_split_batches(
        self, split: str, num_examples: int, batch_size: int
    ) -> Iterator[dict[str, np.ndarray]]:
        if self.data == "synthetic":
            return array_eval_batches(self.split_arrays(split), num_examples, batch_size)  # type: ignore[attr-defined]
        files = pipeline.eval_files(self._data_dir(), split, num_examples)
        # A split smaller than the eval batch (a fixture) is one batch of its own size.
        return pipeline.eval_batches(files, min(batch_size, max(len(files), 1)))

    def detokenize(self, ids: Sequence[int] | np.ndarray) -> str:
        """A transcript from token ids (the CTC blank, id 0, is never among them)."""
        if self.data == "synthetic":
            return pipeline.synthetic_detokenize([int(i) for i in ids])
        if self._tokenizer is None:
            self._tokenizer = Tokenizer(self._data_dir() / TOKENIZER_FILE)
        return self._tokenizer.detokenize(ids)
