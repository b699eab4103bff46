"""WMT17 German -> English: the WMT tarballs -> sentence-pair files, SentencePiece 32k, token arrays.

The splits are the reference's TFDS ones: train = WMT17 de-en (`wmt17_translate/de-en`: Europarl
v7, Common Crawl, News Commentary v12 and Rapid 2016, 5,906,184 pairs), validation = newstest2013
(3,000) and test = newstest2014 (3,003), both from the WMT dev tarball. As TFDS reads them: the
parallel text files are split at b"\\n", SGML files give the text of their `<seg id="...">` lines,
and a pair with an empty side is dropped. TFDS stores the training pairs in a hashed (shuffled)
order and the reference trains the tokenizer on the first 10^7 characters of that order, so the
training pairs are written in a fixed seeded permutation (`TRAIN_ORDER_SEED`), not file by file.
Tabs and carriage returns inside a sentence become spaces (the pair files are `de<TAB>en` lines).

Then, in the prepared folder, what `workloads/wmt/workload.py` reads: `train.tsv`,
`validation.tsv`, `test.tsv`, `sentencepiece.model` (trained as the reference trains it) and the
tokenised `<split>_{inputs,targets}[_offsets].npy`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from algoperf.datasets.archives import extract
from algoperf.datasets.base import DatasetUnavailableError, Recipe, load_manifest
from algoperf.datasets.prepare import Job

TRAIN_SOURCES = {
    "training-parallel-europarl-v7.tgz": ("training/europarl-v7.de-en.de", "training/europarl-v7.de-en.en"),
    "training-parallel-commoncrawl.tgz": ("commoncrawl.de-en.de", "commoncrawl.de-en.en"),
    "training-parallel-nc-v12.tgz": (
        "training/news-commentary-v12.de-en.de",
        "training/news-commentary-v12.de-en.en",
    ),
    "rapid2016.tgz": ("rapid2016.de-en.de", "rapid2016.de-en.en"),
}
DEV_ARCHIVE = "dev.tgz"
EVAL_SOURCES = {
    "validation": ("dev/newstest2013.de", "dev/newstest2013.en"),
    "test": ("dev/newstest2014-deen-src.de.sgm", "dev/newstest2014-deen-ref.en.sgm"),
}
TRAIN_ORDER_SEED = 0
# SentencePiece's hard vocabulary limit makes training fail when a corpus cannot fill 32,000
# pieces; the real corpus (millions of pairs) always can, a test fixture cannot.
HARD_LIMIT_MIN_PAIRS = 100_000
_SEG = re.compile(r"<seg id=\"\d+\">(.*)</seg>")


def read_sentences(path: Path) -> list[str]:
    """The sentences of a parallel text file (split at b"\\n") or of an SGML file (its segments)."""
    if path.suffix == ".sgm":
        with open(path, encoding="utf-8") as f:
            return [m.group(1) for line in f if (m := _SEG.match(line))]
    return [line.decode("utf-8") for line in path.read_bytes().split(b"\n")]


def read_pairs(folder: Path, de_path: str, en_path: str) -> list[tuple[str, str]]:
    de, en = read_sentences(folder / de_path), read_sentences(folder / en_path)
    if len(de) != len(en):
        raise DatasetUnavailableError(
            f"{de_path} has {len(de)} sentences and {en_path} {len(en)}: the archive is not the expected WMT file"
        )
    return [(d, e) for d, e in zip(de, en) if d and e]


def _clean(sentence: str) -> str:
    return sentence.replace("\t", " ").replace("\r", " ")


def write_tsv(path: Path, pairs: list[tuple[str, str]], order: np.ndarray | None = None) -> Path:
    indices = range(len(pairs)) if order is None else order
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for i in indices:
            de, en = pairs[int(i)]
            f.write(f"{_clean(de)}\t{_clean(en)}\n")
    return path


def convert(job: Job) -> None:
    from workloads.wmt import tokenizer as tok
    from workloads.wmt import workload as wmt

    out = job.out
    names = ("train", "validation", "test")
    if job.needs("text"):
        train: list[tuple[str, str]] = []
        for archive, (de_path, en_path) in TRAIN_SOURCES.items():
            extract(job.source(archive), job.scratch, keep=lambda n, w=(de_path, en_path): n in w)
            train += read_pairs(job.scratch, de_path, en_path)
        wanted = {p for pair in EVAL_SOURCES.values() for p in pair}
        extract(job.source(DEV_ARCHIVE), job.scratch, keep=lambda n: n in wanted)
        order = np.random.default_rng(TRAIN_ORDER_SEED).permutation(len(train))
        files = [write_tsv(out / "train.tsv", train, order)]
        for split, (de_path, en_path) in EVAL_SOURCES.items():
            files.append(write_tsv(out / f"{split}.tsv", read_pairs(job.scratch, de_path, en_path)))
        job.done("text", files)
        job.say(f"wmt: {len(train):,} training pairs")
    if job.needs("tokens"):
        pairs = sum(1 for _ in open(out / "train.tsv", encoding="utf-8"))
        tok.train(
            wmt.read_pairs(out / "train.tsv"),
            out / wmt.TOKENIZER_FILE,
            tok.VOCAB_SIZE,
            hard_vocab_limit=pairs >= HARD_LIMIT_MIN_PAIRS,
        )
        tokenizer = tok.Tokenizer(out / wmt.TOKENIZER_FILE)
        files = [out / wmt.TOKENIZER_FILE]
        for split in names:
            wmt.save_tokenized(wmt.tokenize_file(out / f"{split}.tsv", tokenizer), out, split)
            files += [out / f"{split}_{s}{o}.npy" for s in ("inputs", "targets") for o in ("", "_offsets")]
        job.done("tokens", files)


RECIPE = Recipe(
    name="wmt",
    convert=convert,
    # The de-en text files of the tarballs, uncompressed (text gzips about 3:1; the tarballs also
    # hold other language pairs, which are not extracted).
    scratch_per_source_byte=1.5,
    # The pair files (the same text once more) and int32 token arrays of about the same size.
    prepared_per_source_byte=2.0,
    manifest=load_manifest("wmt"),
)
