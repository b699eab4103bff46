"""LibriSpeech metrics and tokenizer: greedy CTC decoding, WER by hand, SentencePiece ids."""

from __future__ import annotations

import numpy as np
import pytest

from workloads.librispeech.metrics import ctc_greedy_decode, word_error_rate, word_errors
from workloads.librispeech.tokenizer import Tokenizer, train_tokenizer


def test_greedy_decoding_collapses_repeats_then_drops_blanks():
    path = np.array([[0, 3, 3, 0, 3, 5, 5, 5, 0, 0, 7, 9, 9]])
    # "3 3" collapses to 3, the blank keeps the next 3 apart; then blanks go.
    assert ctc_greedy_decode(path) == [[3, 3, 5, 7, 9]]


def test_greedy_decoding_reads_padding_frames_as_blanks():
    path = np.array([[4, 4, 6, 6, 6], [2, 0, 2, 8, 8]])
    paddings = np.array([[0, 0, 0, 1, 1], [0, 0, 0, 0, 1]])
    assert ctc_greedy_decode(path, paddings) == [[4, 6], [2, 2, 8]]


def test_greedy_decoding_of_an_all_blank_path_is_empty():
    assert ctc_greedy_decode(np.zeros((2, 6), dtype=np.int64)) == [[], []]


def test_word_errors_of_one_utterance_by_hand():
    # the cat sat on the mat -> the cat sit on mat: 1 substitution (sat) + 1 deletion (the).
    assert word_errors("the cat sit on mat", "the cat sat on the mat") == (2, 6)
    # one inserted word.
    assert word_errors("hello big world", "hello world") == (1, 2)


def test_corpus_wer_is_total_errors_over_total_reference_words():
    refs = ["the cat sat on the mat", "hello world", "a b c d"]
    hyps = ["the cat sit on mat", "hello big world", "a b c d"]
    # (2 + 1 + 0) errors over (6 + 2 + 4) words, not the mean of 2/6, 1/2 and 0/4.
    assert word_error_rate(hyps, refs) == pytest.approx(3 / 12)


def test_wer_ignores_repeated_spaces_and_counts_an_empty_reference_as_one_word():
    assert word_errors("a  b", " a b ") == (0, 2)
    assert word_errors("", "") == (0, 1)
    assert word_errors("x y", "") == (2, 1)
    assert word_errors("", "one two three") == (3, 3)


def test_tokenizer_round_trip_with_end_of_sentence(tmp_path):
    sentences = ["HELLO WORLD", "THE CAT SAT ON THE MAT", "A QUICK BROWN FOX", "THE WORLD IS A CAT"]
    path = train_tokenizer(
        sentences, tmp_path / "spm_model.vocab", vocab_size=40, hard_vocab_limit=False
    )
    tokenizer = Tokenizer(path)
    ids = tokenizer.tokenize("THE CAT SAT")
    # SentencePiece's default ids: 0 <unk> (the CTC blank), 1 <s>, 2 </s>; </s> ends every target.
    assert ids[-1] == 2 and 0 not in ids and 1 not in ids
    assert tokenizer.detokenize(ids) == "THE CAT SAT"
    assert tokenizer.detokenize(ids[:-1]) == "THE CAT SAT"


def test_a_missing_tokenizer_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"spm_model.vocab.*datasets prepare"):
        Tokenizer(tmp_path / "spm_model.vocab")
