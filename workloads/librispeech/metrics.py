"""Greedy CTC decoding and word error rate, as the reference computes them (framework-free).

Decoding: the arg-max token of every frame, padding frames read as blanks, repeats collapsed,
then blanks dropped (blank = id 0). WER: the word-level edit distance between each decoded and
reference transcript, summed over the split, divided by the summed number of reference words
(a corpus WER, not a mean of per-utterance rates). The edit distance is jiwer's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

BLANK_ID = 0


def ctc_greedy_decode(
    framewise_tokens: np.ndarray, paddings: np.ndarray | None = None, blank_id: int = BLANK_ID
) -> list[list[int]]:
    """Token sequences of a batch of (N, frames) arg-max paths; padding frames count as blanks.

    A blank between two equal tokens keeps both ("a _ a" -> "a a"); equal neighbours collapse
    ("a a" -> "a").
    """
    tokens = np.asarray(framewise_tokens)
    if tokens.ndim == 1:
        tokens = tokens[None]
    if paddings is not None:
        tokens = np.where(np.asarray(paddings).reshape(tokens.shape) > 0, blank_id, tokens)
    out = []
    for row in tokens:
        keep = np.ones(len(row), dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        out.append([int(t) for t in row[keep & (row != blank_id)]])
    return out


def word_errors(hypothesis: str, reference: str) -> tuple[int, int]:
    """(word edit distance, reference words) of one utterance.

    As the reference, an empty reference counts as one word, so an empty pair scores 0 / 1 and
    every hypothesis word against an empty reference is an error.
    """
    import jiwer

    ref_words = reference.split()
    hyp_words = hypothesis.split()
    if not ref_words:
        return len(hyp_words), 1
    if not hyp_words:
        return len(ref_words), len(ref_words)
    out = jiwer.process_words(" ".join(ref_words), " ".join(hyp_words))
    return out.substitutions + out.deletions + out.insertions, len(ref_words)


def word_error_rate(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus WER: total word edit distance over total reference words."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    errors = words = 0
    for hyp, ref in zip(hypotheses, references):
        e, n = word_errors(hyp, ref)
        errors += e
        words += n
    return errors / words if words else 0.0


def transcript_errors(
    framewise_tokens: np.ndarray,
    paddings: np.ndarray,
    targets: np.ndarray,
    target_paddings: np.ndarray,
    detokenize: Callable[[Sequence[int]], str],
) -> tuple[int, int]:
    """(word errors, reference words) of a batch: each row's arg-max path greedily decoded and
    detokenised against its target ids (target padding dropped). Both frameworks' evals call it
    with their per-batch numpy arrays."""
    errors = words = 0
    for hyp, ids, pad in zip(ctc_greedy_decode(framewise_tokens, paddings), targets, target_paddings):
        e, n = word_errors(detokenize(hyp), detokenize(np.asarray(ids)[np.asarray(pad) == 0]))
        errors += e
        words += n
    return errors, words


def eval_metrics(totals: dict[str, float]) -> dict[str, float]:
    """A split's metrics from its summed CTC loss, loss normaliser (target tokens), word errors
    and reference words: the CTC loss per target token and the corpus WER."""
    return {
        "ctc_loss": totals["ctc_loss"] / max(totals["n_valid"], 1.0),
        "wer": totals["word_errors"] / max(totals["num_words"], 1.0),
    }
