"""Beam search as the reference decodes WMT (the Flax WMT example's algorithm), in torch.

Facts of the reference's search: position 0 of every sequence is a dummy 0 token; at each step
the 2k best extensions of the k live beams are scored; those ending in </s> compete for the k
finished slots with score log p / ((5 + n) / 6)^alpha (n = generated tokens, </s> included), the
others for the k live slots; "-infinity" is -1e7; the search stops after `max_decode_len - 1`
tokens, or when every finished slot is filled and the worst finished score beats the best live
log-probability divided by the penalty at `max_decode_len`. An example with no finished sequence
returns its live ones. Generated tokens are written to every later position (so a finished
sequence is followed by copies of </s>).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

NEG_INF = -1.0e7
BEAM_SIZE, ALPHA = 4, 0.6


def length_penalty(length: int | torch.Tensor, alpha: float = ALPHA) -> float:
    """((5 + length) / 6)^alpha (Wu et al. 2016), what the reference calls the brevity penalty."""
    return float(((5.0 + float(length)) / 6.0) ** alpha)


def gather_tree(cache: Any, index: torch.Tensor) -> Any:
    """Every tensor of a nested dict/list/tuple indexed along dim 0 (other leaves unchanged)."""
    if isinstance(cache, torch.Tensor):
        return cache.index_select(0, index.to(cache.device))
    if isinstance(cache, dict):
        return {k: gather_tree(v, index) for k, v in cache.items()}
    if isinstance(cache, (list, tuple)):
        return type(cache)(gather_tree(v, index) for v in cache)
    return cache


def beam_search(
    tokens_to_logits: Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]],
    batch_size: int,
    max_decode_len: int,
    eos_id: int,
    beam_size: int = BEAM_SIZE,
    alpha: float = ALPHA,
    cache: Any = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best sequences and scores, best first: ([batch, beam, max_decode_len], [batch, beam]).

    `tokens_to_logits(prefixes, cache)` gets the live prefixes, (batch * beam, t + 1) with the
    beams of an example adjacent, and returns next-token logits (batch * beam, vocab) and the new
    cache; the cache's tensors have batch * beam rows and are reordered with the surviving beams.
    Position 0 of the result is the dummy start token.
    """
    b, k, length = batch_size, beam_size, max_decode_len
    rows = torch.arange(b, device=device).unsqueeze(1)
    live_lp = torch.full((b, k), NEG_INF, device=device)
    live_lp[:, 0] = 0.0
    live_seqs = torch.zeros((b, k, length), dtype=torch.long, device=device)
    fin_seqs = torch.zeros_like(live_seqs)
    fin_scores = torch.full((b, k), NEG_INF, device=device)
    fin_flags = torch.zeros((b, k), dtype=torch.bool, device=device)
    worst_penalty = length_penalty(length, alpha)

    for cur in range(length - 1):
        best_live = live_lp.max(dim=1, keepdim=True).values / worst_penalty
        worst_finished = torch.where(fin_flags, fin_scores.min(dim=1, keepdim=True).values, NEG_INF)
        if bool((worst_finished > best_live).all()):
            break
        logits, new_cache = tokens_to_logits(
            live_seqs[:, :, : cur + 1].reshape(b * k, cur + 1), cache
        )
        log_probs = torch.log_softmax(logits.float(), dim=-1).view(b, k, -1) + live_lp.unsqueeze(2)
        vocab = log_probs.shape[2]
        top_lp, top_idx = torch.topk(log_probs.view(b, k * vocab), k=2 * k)
        top_beam = torch.div(top_idx, vocab, rounding_mode="floor")
        top_seqs = live_seqs[rows, top_beam].clone()  # (b, 2k, length)
        top_tokens = top_idx % vocab
        top_seqs[:, :, cur + 1 :] = top_tokens.unsqueeze(2)
        newly_finished = top_tokens == eos_id

        # Live: the k best extensions that did not just end.
        alive_lp = top_lp + newly_finished.float() * NEG_INF
        keep_lp, keep = torch.topk(alive_lp, k=k)
        live_seqs, live_lp = top_seqs[rows, keep], keep_lp
        origin = (rows * k + top_beam[rows, keep]).reshape(-1)
        cache = gather_tree(new_cache, origin)

        # Finished: the k best among the finished so far and those that just ended.
        new_scores = top_lp / length_penalty(cur + 1, alpha) + (~newly_finished).float() * NEG_INF
        all_seqs = torch.cat([fin_seqs, top_seqs], dim=1)
        all_scores = torch.cat([fin_scores, new_scores], dim=1)
        all_flags = torch.cat([fin_flags, newly_finished], dim=1)
        fin_scores, best = torch.topk(all_scores, k=k)
        fin_seqs, fin_flags = all_seqs[rows, best], all_flags[rows, best]

    any_finished = fin_flags.any(dim=1)
    seqs = torch.where(any_finished[:, None, None], fin_seqs, live_seqs)
    scores = torch.where(any_finished[:, None], fin_scores, live_lp)
    return seqs, scores
