"""LibriSpeech 960 h: the OpenSLR tarballs -> the SentencePiece model and per-utterance arrays.

Units: the tokenizer (trained on the train-clean-100 transcripts, as the reference trains it; only
the `.trans.txt` files are extracted for it), then one unit per subset: the subset's tarball is
extracted to scratch space, every utterance written as `<subset>/<id>_audio.npy` (int16 samples)
and `<subset>/<id>_targets.npy` (token ids) with the listing `<subset>.csv`, and the scratch
copy deleted before the next subset (`workloads/librispeech/preparation.py`). The subsets are the
reference's: the three training subsets, dev-clean and dev-other (validation), test-clean (test).
"""

from __future__ import annotations

import shutil

from algoperf.datasets.archives import extract
from algoperf.datasets.base import DatasetUnavailableError, Recipe, load_manifest
from algoperf.datasets.prepare import Job

SUBSETS = ("train-clean-100", "train-clean-360", "train-other-500", "dev-clean", "dev-other", "test-clean")


def convert(job: Job, vocab_size: int | None = None) -> None:
    from workloads.librispeech import preparation
    from workloads.librispeech.tokenizer import TOKENIZER_FILE, VOCAB_SIZE, Tokenizer

    tree = job.scratch / "LibriSpeech"
    if job.needs("tokenizer"):
        extract(job.source("train-clean-100.tar.gz"), job.scratch, keep=lambda n: n.endswith(".trans.txt"))
        if not (tree / "train-clean-100").is_dir():
            raise DatasetUnavailableError("train-clean-100.tar.gz holds no LibriSpeech/train-clean-100/ tree")
        # The real vocabulary is reached with room to spare; a fixture's few words cannot fill
        # 1,024 pieces, so the limit is soft there (SentencePiece's hard_vocab_limit).
        transcripts = sum(1 for _ in preparation.transcripts(tree / "train-clean-100"))
        options = {} if transcripts >= 10_000 else {"hard_vocab_limit": False}
        path = preparation.write_tokenizer(tree, ["train-clean-100"], job.out, vocab_size or VOCAB_SIZE, **options)
        job.done("tokenizer", [path])
        shutil.rmtree(tree, ignore_errors=True)
    tokenizer = Tokenizer(job.out / TOKENIZER_FILE)
    for subset in SUBSETS:
        if not job.needs(subset):
            continue
        extract(job.source(f"{subset}.tar.gz"), job.scratch, keep=lambda n, s=subset: f"/{s}/" in n)
        if not (tree / subset).is_dir():
            raise DatasetUnavailableError(f"{subset}.tar.gz holds no LibriSpeech/{subset}/ tree")
        job.done(subset, preparation.prepare_subset(tree / subset, job.out, tokenizer))
        shutil.rmtree(tree / subset, ignore_errors=True)
        job.say(f"librispeech: {subset} converted")


RECIPE = Recipe(
    name="librispeech",
    convert=convert,
    # One subset extracted at a time: at most train-other-500's 30.6 GB of the 61.4 GB of tarballs.
    scratch_per_source_byte=0.5,
    # 16-bit samples of about 981 h (960 h train, 21 h dev and test): 113 GB from 61.4 GB of FLAC.
    prepared_per_source_byte=1.85,
    manifest=load_manifest("librispeech"),
)
