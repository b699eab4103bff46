"""`algoperf datasets prepare` for LibriSpeech: FLAC + transcripts -> the reference's .npy layout.

Input: a LibriSpeech tree `<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt` with the
`<utterance id>.flac` files it lists (read with soundfile). Output, per subset present: the
tokenizer `spm_model.vocab` (trained first, on the train-clean-100 transcripts as the reference
does, or on every training subset present if that one is absent), `<subset>/<id>_audio.npy` (the
16-bit samples as int16), `<subset>/<id>_targets.npy` (int32 ids ending with </s>) and the listing
`<subset>.csv`. As the reference, an utterance whose transcript has more than 256 characters or
whose audio has more than 320,000 samples is skipped.

The reference stores the samples as int64; they are 16-bit FLAC samples, so int16 holds them
exactly in a quarter of the space (113 GB instead of 452 GB for the 960 hours) and a quarter of
the reading, and the pipeline converts them to float32 either way.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from workloads.librispeech.input_pipeline import MAX_AUDIO_LENGTH, MAX_TARGET_LENGTH, TRAIN_SUBSETS
from workloads.librispeech.tokenizer import TOKENIZER_FILE, VOCAB_SIZE, Tokenizer, train_tokenizer

SUBSETS = (*TRAIN_SUBSETS, "dev-clean", "dev-other", "test-clean", "test-other")
SAMPLE_RATE = 16_000


def transcripts(subset_dir: Path) -> Iterator[tuple[str, str, Path]]:
    """(utterance id, transcript, flac path) of a subset, speakers and chapters in sorted order."""
    for trans in sorted(subset_dir.glob("*/*/*.trans.txt")):
        for line in trans.read_text(encoding="utf-8").splitlines():
            if line.strip():
                uid, text = line.strip().split(" ", 1)
                yield uid, text, trans.parent / f"{uid}.flac"


def read_flac(path: Path) -> np.ndarray:
    """16 kHz mono 16-bit samples of a FLAC file, as int16 (exactly the stored samples)."""
    import soundfile

    audio, rate = soundfile.read(str(path), dtype="int16", always_2d=False)
    if rate != SAMPLE_RATE or audio.ndim != 1:
        raise ValueError(
            f"{path}: expected 16 kHz mono audio, got {rate} Hz with shape {audio.shape}"
        )
    return audio


def tokenizer_subsets(present: list[str]) -> list[str]:
    """The subsets the tokenizer is trained on: train-clean-100 (the reference's), else any train."""
    if "train-clean-100" in present:
        return ["train-clean-100"]
    return [s for s in present if s in TRAIN_SUBSETS]


def write_tokenizer(
    source: Path, subsets: list[str], data_dir: Path, vocab_size: int = VOCAB_SIZE, **options: object
) -> Path:
    texts = (text for s in subsets for _, text, _ in transcripts(source / s))
    return train_tokenizer(texts, data_dir / TOKENIZER_FILE, vocab_size, **options)  # type: ignore[arg-type]


def prepare_subset(subset_dir: Path, data_dir: Path, tokenizer: Tokenizer) -> list[Path]:
    """One subset's .npy files and listing; returns the files written."""
    subset = subset_dir.name
    (data_dir / subset).mkdir(parents=True, exist_ok=True)
    ids, written = [], []
    for uid, text, flac in transcripts(subset_dir):
        if len(text) > MAX_TARGET_LENGTH or not flac.exists():
            continue
        audio = read_flac(flac)
        if len(audio) > MAX_AUDIO_LENGTH:
            continue
        for kind, values in (("audio", audio), ("targets", tokenizer.tokenize(text))):
            path = data_dir / subset / f"{uid}_{kind}.npy"
            np.save(path, values)
            written.append(path)
        ids.append(uid)
    listing = data_dir / f"{subset}.csv"
    with open(listing, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["", "id"])
        writer.writerows([i, uid] for i, uid in enumerate(ids))
    return [*written, listing]


def prepare(
    source: str | Path,
    data_dir: str | Path,
    vocab_size: int = VOCAB_SIZE,
    **tokenizer_options: object,
) -> dict[str, int]:
    """Writes the tokenizer, .npy files and listings; returns the utterances kept per subset."""
    source, data_dir = Path(source), Path(data_dir)
    present = [s for s in SUBSETS if (source / s).is_dir()]
    if not present:
        raise FileNotFoundError(
            f"No LibriSpeech subsets ({', '.join(SUBSETS)}) in {source}: pass --source the folder "
            "holding the extracted LibriSpeech/ tree."
        )
    training = tokenizer_subsets(present)
    if not training:
        raise FileNotFoundError(
            f"No training subset in {source}: the tokenizer is trained on train-clean-100."
        )
    write_tokenizer(source, training, data_dir, vocab_size, **tokenizer_options)
    tokenizer = Tokenizer(data_dir / TOKENIZER_FILE)
    kept: dict[str, int] = {}
    for subset in present:
        files = prepare_subset(source / subset, data_dir, tokenizer)
        kept[subset] = (len(files) - 1) // 2
    return kept
