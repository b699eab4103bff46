"""Beam search as the reference decodes WMT (the Flax WMT example's algorithm), for both frameworks.

Facts of the reference's search: position 0 of every sequence is a dummy 0 token; at each step
the 2k best extensions of the k live beams are scored; those ending in </s> compete for the k
finished slots with score log p / ((5 + n) / 6)^alpha (n = generated tokens, </s> included), the
others for the k live slots; "-infinity" is -1e7; the search stops after `max_decode_len - 1`
tokens, or when every finished slot is filled and the worst finished score beats the best live
log-probability divided by the penalty at `max_decode_len`. An example with no finished sequence
returns its live ones. Generated tokens are written to every later position (so a finished
sequence is followed by copies of </s>).

The algorithm is written once (`initial_state`, `advance`, `is_done`, `result`), on arrays of
either framework through `ArrayOps`, the few operations whose spelling differs between torch and
jax.numpy. Two thin drivers run it: `beam_search` (PyTorch: a Python loop, the decoder fed the
prefixes) and `jax_beam_search` (a jitted step per position, the decoder fed the last tokens and
their position). Each framework is imported only by its driver.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

NEG_INF = -1.0e7
BEAM_SIZE, ALPHA = 4, 0.6


def length_penalty(length: Any, alpha: float = ALPHA) -> Any:
    """((5 + length) / 6)^alpha (Wu et al. 2016), what the reference calls the brevity penalty;
    a float for a Python number, an array for an array (a traced position under jit)."""
    if isinstance(length, (int, float)):
        return float(((5.0 + float(length)) / 6.0) ** alpha)
    return ((5.0 + length) / 6.0) ** alpha


@dataclass(frozen=True)
class ArrayOps:
    """The operations the search needs whose spelling differs between frameworks."""

    topk: Callable[[Any, int], tuple[Any, Any]]  # (values, indices) of the last axis, largest first
    log_softmax: Callable[[Any], Any]  # over the last axis
    concat: Callable[[list[Any], int], Any]
    where: Callable[[Any, Any, Any], Any]
    arange: Callable[[int], Any]
    full: Callable[[tuple[int, ...], Any, str], Any]  # dtype: "float32", "int" (token ids), "bool"
    max: Callable[[Any, int], Any]  # over an axis, keeping it
    min: Callable[[Any, int], Any]
    any: Callable[[Any, int], Any]
    all: Callable[[Any], Any]  # a 0-d boolean array


class BeamState(NamedTuple):
    """Live and finished beams: sequences (batch, beam, length), log-probs and scores (batch, beam)."""

    live_seqs: Any
    live_lp: Any
    fin_seqs: Any
    fin_scores: Any
    fin_flags: Any


def initial_state(ops: ArrayOps, batch_size: int, beam_size: int, max_decode_len: int) -> BeamState:
    """One live beam per example (the dummy start token, log-prob 0), the others at -infinity."""
    live_lp = ops.where(ops.arange(beam_size)[None, :] == 0,
                        ops.full((batch_size, beam_size), 0.0, "float32"),
                        ops.full((batch_size, beam_size), NEG_INF, "float32"))
    seqs = ops.full((batch_size, beam_size, max_decode_len), 0, "int")
    return BeamState(seqs, live_lp, seqs, ops.full((batch_size, beam_size), NEG_INF, "float32"),
                     ops.full((batch_size, beam_size), False, "bool"))


def is_done(ops: ArrayOps, state: BeamState, max_decode_len: int, alpha: float = ALPHA) -> Any:
    """Whether no live beam can still beat the worst finished one (every finished slot filled)."""
    best_live = ops.max(state.live_lp, 1) / length_penalty(max_decode_len, alpha)
    worst_finished = ops.where(state.fin_flags, ops.min(state.fin_scores, 1), NEG_INF)
    return ops.all(worst_finished > best_live)


def advance(ops: ArrayOps, state: BeamState, logits: Any, position: Any, eos_id: int,
            alpha: float = ALPHA) -> tuple[BeamState, Any]:
    """The state after one more token, and for every new live row (batch * beam) the row of the
    old live beams it extends (the order the decoder's cache must follow).

    `logits` are the next-token logits of the live beams, (batch * beam, vocab), beams of an
    example adjacent; `position` is the index of the last token fed (0: the start token).
    """
    b, k, length = state.live_seqs.shape
    rows = ops.arange(b)[:, None]
    log_probs = ops.log_softmax(logits.reshape(b, k, -1)) + state.live_lp[:, :, None]
    vocab = log_probs.shape[2]
    top_lp, top_idx = ops.topk(log_probs.reshape(b, k * vocab), 2 * k)
    top_beam = top_idx // vocab
    top_tokens = top_idx % vocab
    top_seqs = ops.where(ops.arange(length)[None, None, :] > position, top_tokens[:, :, None],
                         state.live_seqs[rows, top_beam])  # (b, 2k, length)
    newly_finished = top_tokens == eos_id

    # Live: the k best extensions that did not just end.
    keep_lp, keep = ops.topk(top_lp + newly_finished * NEG_INF, k)
    origin = (rows * k + top_beam[rows, keep]).reshape(-1)

    # Finished: the k best among the finished so far and those that just ended.
    new_scores = top_lp / length_penalty(position + 1, alpha) + (~newly_finished) * NEG_INF
    fin_scores, best = ops.topk(ops.concat([state.fin_scores, new_scores], 1), k)
    fin_seqs = ops.concat([state.fin_seqs, top_seqs], 1)[rows, best]
    fin_flags = ops.concat([state.fin_flags, newly_finished], 1)[rows, best]
    return BeamState(top_seqs[rows, keep], keep_lp, fin_seqs, fin_scores, fin_flags), origin


def result(ops: ArrayOps, state: BeamState) -> tuple[Any, Any]:
    """Best sequences and scores, best first: the finished ones, or the live ones of an example
    that finished none."""
    any_finished = ops.any(state.fin_flags, 1)
    seqs = ops.where(any_finished[:, None, None], state.fin_seqs, state.live_seqs)
    scores = ops.where(any_finished[:, None], state.fin_scores, state.live_lp)
    return seqs, scores


# ---- PyTorch -----------------------------------------------------------------------------------
def torch_ops(device: Any = "cpu") -> ArrayOps:
    import torch

    dtypes = {"float32": torch.float32, "int": torch.long, "bool": torch.bool}
    return ArrayOps(
        topk=lambda x, k: tuple(torch.topk(x, k=k)),
        log_softmax=lambda x: torch.log_softmax(x.float(), dim=-1),
        concat=lambda xs, axis: torch.cat(xs, dim=axis),
        where=torch.where,
        arange=lambda n: torch.arange(n, device=device),
        full=lambda shape, value, dtype: torch.full(shape, value, dtype=dtypes[dtype], device=device),
        max=lambda x, axis: x.max(dim=axis, keepdim=True).values,
        min=lambda x, axis: x.min(dim=axis, keepdim=True).values,
        any=lambda x, axis: x.any(dim=axis),
        all=lambda x: x.all(),
    )


def gather_tree(cache: Any, index: Any) -> Any:
    """Every tensor of a nested dict/list/tuple indexed along dim 0 (other leaves unchanged)."""
    import torch

    if isinstance(cache, torch.Tensor):
        return cache.index_select(0, index.to(cache.device))
    if isinstance(cache, dict):
        return {k: gather_tree(v, index) for k, v in cache.items()}
    if isinstance(cache, (list, tuple)):
        return type(cache)(gather_tree(v, index) for v in cache)
    return cache


def beam_search(
    tokens_to_logits: Callable[[Any, Any], tuple[Any, Any]],
    batch_size: int,
    max_decode_len: int,
    eos_id: int,
    beam_size: int = BEAM_SIZE,
    alpha: float = ALPHA,
    cache: Any = None,
    device: Any = "cpu",
) -> tuple[Any, Any]:
    """PyTorch: best sequences and scores, best first: ([batch, beam, max_decode_len], [batch, beam]).

    `tokens_to_logits(prefixes, cache)` gets the live prefixes, (batch * beam, t + 1) with the
    beams of an example adjacent, and returns next-token logits (batch * beam, vocab) and the new
    cache; the cache's tensors have batch * beam rows and are reordered with the surviving beams.
    Position 0 of the result is the dummy start token.
    """
    ops = torch_ops(device)
    state = initial_state(ops, batch_size, beam_size, max_decode_len)
    for cur in range(max_decode_len - 1):
        if bool(is_done(ops, state, max_decode_len, alpha)):
            break
        prefixes = state.live_seqs[:, :, : cur + 1].reshape(batch_size * beam_size, cur + 1)
        logits, new_cache = tokens_to_logits(prefixes, cache)
        state, origin = advance(ops, state, logits, cur, eos_id, alpha)
        cache = gather_tree(new_cache, origin)
    return result(ops, state)


# ---- JAX ---------------------------------------------------------------------------------------
def jax_ops() -> ArrayOps:
    import jax
    import jax.numpy as jnp

    dtypes = {"float32": jnp.float32, "int": jnp.int32, "bool": jnp.bool_}  # int32: no x64
    return ArrayOps(
        topk=jax.lax.top_k,
        log_softmax=lambda x: jax.nn.log_softmax(x.astype(jnp.float32), axis=-1),
        concat=lambda xs, axis: jnp.concatenate(xs, axis=axis),
        where=jnp.where,
        arange=jnp.arange,
        full=lambda shape, value, dtype: jnp.full(shape, value, dtype=dtypes[dtype]),
        max=lambda x, axis: x.max(axis=axis, keepdims=True),
        min=lambda x, axis: x.min(axis=axis, keepdims=True),
        any=lambda x, axis: x.any(axis=axis),
        all=lambda x: x.all(),
    )


def jax_search_step(tokens_to_logits: Callable[[Any, Any, Any, Any], tuple[Any, Any]],
                    eos_id: int, alpha: float = ALPHA) -> Callable[..., tuple[BeamState, Any, Any]]:
    """JAX: one jitted search step, `step(state, cache, context, position) -> (state, cache, done)`.

    `tokens_to_logits(context, tokens, position, cache)` gets the last token of every live beam
    (batch * beam,) and its position (a traced integer), and returns next-token logits and the new
    cache, a pytree whose arrays have batch * beam leading rows (reordered with the beams).
    `context` holds what does not change during a search (parameters, encoder outputs). Build the
    step once and reuse it: it compiles once per batch shape.
    """
    import jax

    ops = jax_ops()

    @jax.jit
    def step(state: BeamState, cache: Any, context: Any, position: Any) -> tuple[BeamState, Any, Any]:
        tokens = state.live_seqs[:, :, position].reshape(-1)
        logits, cache = tokens_to_logits(context, tokens, position, cache)
        state, origin = advance(ops, state, logits, position, eos_id, alpha)
        cache = jax.tree.map(lambda x: x[origin], cache)
        return state, cache, is_done(ops, state, state.live_seqs.shape[2], alpha)

    return step


def jax_beam_search(
    step: Callable[..., tuple[BeamState, Any, Any]],
    batch_size: int,
    max_decode_len: int,
    context: Any,
    cache: Any,
    beam_size: int = BEAM_SIZE,
) -> tuple[Any, Any]:
    """JAX: the same search and result as `beam_search`, one `jax_search_step` call per position;
    the loop stops early as the PyTorch driver does."""
    ops = jax_ops()
    state = initial_state(ops, batch_size, beam_size, max_decode_len)
    for cur in range(max_decode_len - 1):
        state, cache, done = step(state, cache, context, cur)
        if bool(done):
            break
    return result(ops, state)
