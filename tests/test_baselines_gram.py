"""Symmetric Gram products accumulated into their lower triangle (submissions/gram.py) against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from submissions.gram import accumulate_lower_gram_, band_edges, symmetrize


def test_bands_cover_the_rows_once():
    assert band_edges(1023, 512) == [0, 1023]
    assert band_edges(1024, 512) == [0, 512, 1024]
    assert band_edges(7, 2) == [0, 2, 5, 7]  # three bands as equal as rows allow


def test_the_rule_splits_into_four_bands_of_enough_rows():
    assert band_edges(1024, inner=512) == [0, 256, 512, 768, 1024]
    assert band_edges(128, inner=1024) == [0, 64, 128]  # bands of at least 64 rows
    assert band_edges(127, inner=1024) == [0, 127]


def test_a_short_inner_dimension_keeps_one_band():
    assert band_edges(1024, inner=63) == [0, 1024]
    assert band_edges(1024, 512, inner=63) == [0, 512, 1024]  # explicit bands split regardless


@pytest.mark.parametrize("band_rows", [1, 2, 3, 100])
def test_the_lower_triangle_is_the_ema_of_x_x_transpose(band_rows):
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((7, 5)), rng.standard_normal((7, 5))
    out = torch.zeros(7, 7, dtype=torch.float64)
    accumulate_lower_gram_(out, torch.from_numpy(x1), alpha=0.5, beta=0.0, band_rows=band_rows)
    accumulate_lower_gram_(out, torch.from_numpy(x2), alpha=0.25, beta=0.9, band_rows=band_rows)
    expected = 0.9 * 0.5 * x1 @ x1.T + 0.25 * x2 @ x2.T
    np.testing.assert_allclose(np.tril(out.numpy()), np.tril(expected), rtol=1e-12)
    np.testing.assert_allclose(symmetrize(out).numpy(), expected, rtol=1e-12)


def test_a_batch_and_a_transposed_view_give_x_transpose_x_per_matrix():
    rng = np.random.default_rng(1)
    g = rng.standard_normal((3, 4, 6))
    out = torch.zeros(3, 6, 6, dtype=torch.float64)
    accumulate_lower_gram_(out, torch.from_numpy(g).transpose(1, 2), band_rows=2)
    expected = np.einsum("kij,kil->kjl", g, g)
    np.testing.assert_allclose(symmetrize(out).numpy(), expected, rtol=1e-12)


def test_beta_zero_ignores_what_the_output_held():
    out = torch.full((4, 4), float("nan"), dtype=torch.float64)
    x = torch.ones(4, 2, dtype=torch.float64)
    accumulate_lower_gram_(out, x, beta=0.0, band_rows=2)
    assert torch.equal(torch.tril(out), torch.tril(torch.full((4, 4), 2.0, dtype=torch.float64)))
