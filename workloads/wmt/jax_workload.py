"""The WMT Transformer in JAX (flax linen): the same model, loss, beam search and BLEU as the
PyTorch twin (`torch_workload.py` lists the model's facts).

Module names are the reference's JAX ones (the Flax WMT example's): `shared_embedding`,
`encoder/encoderblock_<i>/{LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0}`,
`encoder/encoder_layernorm`, `decoder/encoderdecoderblock_<i>/{LayerNorm_0..2,
MultiHeadDotProductAttention_0 (self), MultiHeadDotProductAttention_1 (cross), MlpBlock_0}`,
`decoder/encoderdecoder_layernorm`; attention projections are flax's `query`, `key`, `value`
(kernels (d, heads, d / heads)) and `out` (heads, d / heads, d) without biases. Init as the
reference's JAX model: Xavier-uniform kernels (each projection on its own (d, d) shape, where the
PyTorch twin, as the reference's PyTorch model, draws its fused projections on (3d, d) / (2d, d)),
N(0, 1e-6) biases, N(0, 1) embedding. Masks are the same additive -1e10 biases as the PyTorch
twin's, so fully masked rows (padding queries) give the same numbers too.

Decoding: the shared beam search (`beam_search.py`) with a fixed-size cache of the decoder's
self-attention keys and values (positions not yet decoded masked out), one jitted step per
position, compiled once per batch shape. The modules are written with `setup` so that the
decoder's one-position step reuses the layers of teacher-forced decoding.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from algoperf import spec
from workloads.jax_base import JaxWorkload, _pad_rows, to_jax
from workloads.wmt.beam_search import jax_beam_search, jax_search_step
from workloads.wmt.positions import sinusoids
from workloads.wmt.workload import (
    BEAM_SIZE,
    EOS_ID,
    LENGTH_PENALTY_ALPHA,
    MAX_LENGTH,
    VOCAB_SIZE,
    WmtData,
)

ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh}
MASKED = -1e10  # the reference's additive attention mask value (as the PyTorch twin's)
xavier = nn.initializers.xavier_uniform()
tiny_normal = nn.initializers.normal(stddev=1e-6)


@dataclass(frozen=True)
class TransformerConfig:
    vocab_size: int = VOCAB_SIZE
    d_model: int = 1024
    num_heads: int = 16
    mlp_dim: int = 1024
    num_layers: int = 6
    activation: str = "relu"
    glu: bool = False
    attention_temp: float = 1.0
    pre_ln: bool = True
    max_len: int = MAX_LENGTH


def mask_bias(allowed: Any) -> Any:
    """(batch, Lq, Lk) booleans -> (batch, 1, Lq, Lk) additive mask (0 or -1e10)."""
    return jnp.where(allowed, 0.0, MASKED).astype(jnp.float32)[:, None]


def dropout(module: nn.Module, x: Any, rate: float, train: bool) -> Any:
    """Inverted dropout (kept units scaled by 1 / (1 - rate)), as `algoperf.jax_utils.Dropout`."""
    if not train or rate == 0.0:
        return x
    keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


class MultiHeadDotProductAttention(nn.Module):
    """Multi-head attention without biases; queries times the attention temperature."""

    d_model: int
    num_heads: int
    attention_temp: float = 1.0

    def setup(self) -> None:
        heads = (self.num_heads, self.d_model // self.num_heads)
        self.query = nn.DenseGeneral(heads, use_bias=False, kernel_init=xavier)
        self.key = nn.DenseGeneral(heads, use_bias=False, kernel_init=xavier)
        self.value = nn.DenseGeneral(heads, use_bias=False, kernel_init=xavier)
        self.out = nn.DenseGeneral(self.d_model, axis=(-2, -1), use_bias=False, kernel_init=xavier)

    def __call__(self, x: Any, memory: Any, bias: Any, train: bool, rate: float) -> Any:
        """Attention of `x` over `memory` (None: over itself)."""
        source = x if memory is None else memory
        return self.attend(x, self.key(source), self.value(source), bias, train, rate)

    def attend(self, x: Any, k: Any, v: Any, bias: Any, train: bool, rate: float) -> Any:
        """softmax(q k^T / sqrt(d_head) + bias) v, then the output projection."""
        q = self.query(x) * self.attention_temp
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
        weights = jax.nn.softmax(scores + bias if bias is not None else scores, axis=-1)
        return self.out(jnp.einsum("bhqk,bkhd->bqhd", dropout(self, weights, rate, train), v))

    def memory_kv(self, memory: Any) -> tuple[Any, Any]:
        """Keys and values of the encoder output (once for all decoding steps)."""
        return self.key(memory), self.value(memory)

    def attend_cached(self, x: Any, cache: dict[str, Any], position: Any) -> tuple[Any, dict[str, Any]]:
        """Self-attention of one new position: its key and value written into the cache at
        `position`; the query sees the positions up to it."""
        k = jax.lax.dynamic_update_slice_in_dim(cache["k"], self.key(x), position, axis=1)
        v = jax.lax.dynamic_update_slice_in_dim(cache["v"], self.value(x), position, axis=1)
        bias = jnp.where(jnp.arange(k.shape[1]) <= position, 0.0, MASKED)[None, None, None, :]
        return self.attend(x, k, v, bias, False, 0.0), {"k": k, "v": v}


class MlpBlock(nn.Module):
    """act(W1 x) [* Wg x] -> dropout -> W2 -> dropout (Dense_0, [Dense_1 gate], last Dense)."""

    config: TransformerConfig

    def setup(self) -> None:
        cfg = self.config
        dense = functools.partial(nn.Dense, kernel_init=xavier, bias_init=tiny_normal)
        self.Dense_0 = dense(cfg.mlp_dim)
        if cfg.glu:
            self.Dense_1 = dense(cfg.mlp_dim)
            self.Dense_2 = dense(cfg.d_model)
        else:
            self.Dense_1 = dense(cfg.d_model)

    def __call__(self, x: Any, train: bool, rate: float) -> Any:
        h = ACTIVATIONS[self.config.activation](self.Dense_0(x))
        if self.config.glu:
            h = h * self.Dense_1(x)
        out = (self.Dense_2 if self.config.glu else self.Dense_1)(dropout(self, h, rate, train))
        return dropout(self, out, rate, train)


def _layer_norm() -> nn.Module:
    return nn.LayerNorm(epsilon=1e-6)


class EncoderBlock(nn.Module):
    config: TransformerConfig

    def setup(self) -> None:
        cfg = self.config
        self.LayerNorm_0, self.LayerNorm_1 = _layer_norm(), _layer_norm()
        self.MultiHeadDotProductAttention_0 = MultiHeadDotProductAttention(
            cfg.d_model, cfg.num_heads, cfg.attention_temp)
        self.MlpBlock_0 = MlpBlock(cfg)

    def __call__(self, x: Any, bias: Any, train: bool, rate: float) -> Any:
        def attention(y: Any) -> Any:
            return dropout(self, self.MultiHeadDotProductAttention_0(y, None, bias, train, rate),
                           rate, train)

        if self.config.pre_ln:
            x = x + attention(self.LayerNorm_0(x))
            return x + self.MlpBlock_0(self.LayerNorm_1(x), train, rate)
        x = self.LayerNorm_0(x + attention(x))
        return self.LayerNorm_1(x + self.MlpBlock_0(x, train, rate))


class DecoderBlock(nn.Module):
    config: TransformerConfig

    def setup(self) -> None:
        cfg = self.config
        self.LayerNorm_0, self.LayerNorm_1, self.LayerNorm_2 = (_layer_norm() for _ in range(3))
        self.MultiHeadDotProductAttention_0 = MultiHeadDotProductAttention(
            cfg.d_model, cfg.num_heads, cfg.attention_temp)
        self.MultiHeadDotProductAttention_1 = MultiHeadDotProductAttention(
            cfg.d_model, cfg.num_heads, cfg.attention_temp)
        self.MlpBlock_0 = MlpBlock(cfg)

    def _residual(self, x: Any, block: Any, norm: nn.Module) -> Any:
        return x + block(norm(x)) if self.config.pre_ln else norm(x + block(x))

    def __call__(self, x: Any, memory: Any, self_bias: Any, cross_bias: Any, train: bool,
                 rate: float) -> Any:
        self_attention, cross_attention = (self.MultiHeadDotProductAttention_0,
                                           self.MultiHeadDotProductAttention_1)
        x = self._residual(x, lambda y: dropout(
            self, self_attention(y, None, self_bias, train, rate), rate, train), self.LayerNorm_0)
        x = self._residual(x, lambda y: dropout(
            self, cross_attention(y, memory, cross_bias, train, rate), rate, train), self.LayerNorm_1)
        return self._residual(x, lambda y: self.MlpBlock_0(y, train, rate), self.LayerNorm_2)

    def memory_kv(self, memory: Any) -> tuple[Any, Any]:
        return self.MultiHeadDotProductAttention_1.memory_kv(memory)

    def step(self, x: Any, cache: dict[str, Any], position: Any, cross: tuple[Any, Any, Any]
             ) -> tuple[Any, dict[str, Any]]:
        """One new position per row (x: (rows, 1, d)): self-attention through the cache, cross-
        attention over the precomputed encoder keys and values `cross` = (k, v, bias)."""
        new_cache = {}

        def self_attention(y: Any) -> Any:
            out, new_cache["self"] = self.MultiHeadDotProductAttention_0.attend_cached(
                y, cache, position)
            return out

        k, v, bias = cross
        x = self._residual(x, self_attention, self.LayerNorm_0)
        x = self._residual(x, lambda y: self.MultiHeadDotProductAttention_1.attend(
            y, k, v, bias, False, 0.0), self.LayerNorm_1)
        x = self._residual(x, lambda y: self.MlpBlock_0(y, False, 0.0), self.LayerNorm_2)
        return x, new_cache["self"]


class Encoder(nn.Module):
    config: TransformerConfig

    def setup(self) -> None:
        for i in range(self.config.num_layers):
            setattr(self, f"encoderblock_{i}", EncoderBlock(self.config))
        if self.config.pre_ln:
            self.encoder_layernorm = _layer_norm()

    def __call__(self, x: Any, bias: Any, train: bool, rate: float) -> Any:
        for i in range(self.config.num_layers):
            x = getattr(self, f"encoderblock_{i}")(x, bias, train, rate)
        return self.encoder_layernorm(x) if self.config.pre_ln else x


class Decoder(nn.Module):
    config: TransformerConfig

    def setup(self) -> None:
        for i in range(self.config.num_layers):
            setattr(self, f"encoderdecoderblock_{i}", DecoderBlock(self.config))
        if self.config.pre_ln:
            self.encoderdecoder_layernorm = _layer_norm()

    def blocks(self) -> list[DecoderBlock]:
        return [getattr(self, f"encoderdecoderblock_{i}") for i in range(self.config.num_layers)]

    def final_norm(self, x: Any) -> Any:
        return self.encoderdecoder_layernorm(x) if self.config.pre_ln else x

    def __call__(self, x: Any, memory: Any, self_bias: Any, cross_bias: Any, train: bool,
                 rate: float) -> Any:
        for block in self.blocks():
            x = block(x, memory, self_bias, cross_bias, train, rate)
        return self.final_norm(x)


class Transformer(nn.Module):
    """Encoder-decoder with one shared embedding; logits = h E^T / sqrt(d)."""

    config: TransformerConfig

    def setup(self) -> None:
        cfg = self.config
        self.shared_embedding = nn.Embed(cfg.vocab_size, cfg.d_model,
                                         embedding_init=nn.initializers.normal(stddev=1.0))
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def _embed(self, tokens: Any, positions: Any, train: bool, rate: float, offset: Any = 0) -> Any:
        x = self.shared_embedding(tokens.astype(jnp.int32))
        table = jnp.asarray(sinusoids(self.config.max_len, self.config.d_model))
        if positions is None:
            pe = jax.lax.dynamic_slice_in_dim(table, offset, x.shape[1])[None]
        else:
            pe = table[positions.astype(jnp.int32)]
        return dropout(self, x + pe, rate, train)

    def _logits(self, h: Any) -> Any:
        return self.shared_embedding.attend(h) / math.sqrt(self.config.d_model)

    def encode(self, src: Any, positions: Any = None, segmentation: Any = None,
               train: bool = False, rate: float = 0.0) -> Any:
        valid = src > 0
        allowed = valid[:, :, None] & valid[:, None, :]
        if segmentation is not None:
            allowed = allowed & (segmentation[:, :, None] == segmentation[:, None, :])
        return self.encoder(self._embed(src, positions, train, rate), mask_bias(allowed), train, rate)

    def __call__(self, src: Any, tgt: Any, inputs_positions: Any = None,
                 targets_positions: Any = None, inputs_segmentation: Any = None,
                 targets_segmentation: Any = None, *, train: bool, dropout_rate: float = 0.1) -> Any:
        """Logits (batch, target length, vocab) of teacher-forced decoding."""
        rate = dropout_rate
        memory = self.encode(src, inputs_positions, inputs_segmentation, train, rate)
        tgt_valid, src_valid = tgt > 0, src > 0
        length = tgt.shape[1]
        causal = jnp.tril(jnp.ones((length, length), bool))
        self_allowed = tgt_valid[:, :, None] & tgt_valid[:, None, :] & causal
        cross_allowed = tgt_valid[:, :, None] & src_valid[:, None, :]
        if inputs_segmentation is not None and targets_segmentation is not None:
            self_allowed = self_allowed & (
                targets_segmentation[:, :, None] == targets_segmentation[:, None, :])
            cross_allowed = cross_allowed & (
                targets_segmentation[:, :, None] == inputs_segmentation[:, None, :])
        shifted = jnp.pad(tgt, ((0, 0), (1, 0)))[:, :-1]  # the whole row, as the reference
        x = self._embed(shifted, targets_positions, train, rate)
        h = self.decoder(x, memory, mask_bias(self_allowed), mask_bias(cross_allowed), train, rate)
        return self._logits(h)

    def init_decoding(self, src: Any, beam_size: int, max_decode_len: int) -> tuple[Any, Any]:
        """(context, cache) of a beam search over sources `src`: the cross-attention keys, values
        and mask of every layer, repeated for the beams, and zeroed self-attention caches."""
        memory = self.encode(src)
        rows = src.shape[0] * beam_size
        bias = mask_bias(jnp.repeat(src > 0, beam_size, axis=0)[:, None, :])
        cross = [(*(jnp.repeat(t, beam_size, axis=0) for t in block.memory_kv(memory)), bias)
                 for block in self.decoder.blocks()]
        heads = self.config.num_heads
        shape = (rows, max_decode_len, heads, self.config.d_model // heads)
        cache = [{"k": jnp.zeros(shape), "v": jnp.zeros(shape)} for _ in cross]
        return cross, cache

    def decode_step(self, tokens: Any, position: Any, cache: Any, cross: Any) -> tuple[Any, Any]:
        """Next-token logits (rows, vocab) of one token per row at `position`, and the cache."""
        x = self._embed(tokens[:, None], None, False, 0.0, offset=position)
        new_cache = []
        for block, layer_cache, layer_cross in zip(self.decoder.blocks(), cache, cross):
            x, c = block.step(x, layer_cache, position, layer_cross)
            new_cache.append(c)
        return self._logits(self.decoder.final_norm(x))[:, 0], new_cache


class WmtWorkload(WmtData, JaxWorkload):
    def build_model(self) -> nn.Module:
        """The reference model; the size options (`d_model`, `nlayers`, ...) exist for tests only
        (the PyTorch twin's option names)."""
        o = self.options
        return Transformer(TransformerConfig(
            vocab_size=int(o.get("vocab_size", VOCAB_SIZE)),
            d_model=int(o.get("d_model", 1024)),
            num_heads=int(o.get("nhead", 16)),
            mlp_dim=int(o.get("d_hid", 1024)),
            num_layers=int(o.get("nlayers", 6)),
            activation=str(o.get("activation", "relu")),
            glu=bool(o.get("glu", False)),
            attention_temp=float(o.get("attention_temp", 1.0)),
            pre_ln=bool(o.get("pre_ln", True)),
        ))

    def init_inputs(self) -> tuple[Any, ...]:
        """Two short sentence pairs: the parameter shapes depend on no data."""
        tokens = np.array([[5, 6, EOS_ID, 0], [7, EOS_ID, 0, 0]], np.int32)
        return tokens, tokens

    def model_inputs(self, batch: dict[str, Any]) -> tuple[Any, ...]:
        """Sources, targets, and for packed training rows their positions and segmentations."""
        return (batch["inputs"], batch["targets"], batch.get("inputs_position"),
                batch.get("targets_position"), batch.get("inputs_segmentation"),
                batch.get("targets_segmentation"))

    def is_output_params(self, param_key: spec.ParameterKey) -> bool:
        return param_key == "shared_embedding"

    def loss_fn(
        self,
        label_batch: Any,
        logits_batch: Any,
        mask_batch: Any = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, Any]:
        """Per-token (label-smoothed) cross-entropy, `per_example` (batch, length), as the PyTorch
        twin's (its docstring gives the reference's normalisers): a per-token mask weights the
        tokens; no mask counts every position; a per-example mask keeps the real tokens
        (targets > 0) of the examples of non-zero weight."""
        if logits_batch.ndim != label_batch.ndim + 1:
            raise ValueError(
                f"logits {tuple(logits_batch.shape)} do not fit targets {tuple(label_batch.shape)}")
        if mask_batch is None:
            weights = jnp.ones(label_batch.shape, logits_batch.dtype)
        else:
            weights = jnp.asarray(mask_batch).astype(logits_batch.dtype)
        if weights.ndim < label_batch.ndim:
            weights = weights.reshape(*weights.shape, *([1] * (label_batch.ndim - weights.ndim)))
            weights = weights * (label_batch > 0).astype(weights.dtype)
        vocab = logits_batch.shape[-1]
        targets = jax.nn.one_hot(label_batch, vocab, dtype=logits_batch.dtype)
        targets = targets * (1.0 - label_smoothing) + label_smoothing / vocab
        losses = -jnp.sum(targets * jax.nn.log_softmax(logits_batch, axis=-1), axis=-1)
        per_token = jnp.where(weights != 0, losses, 0.0)
        return {"summed": per_token.sum(), "n_valid_examples": weights.sum(), "per_example": per_token}

    # ---- eval --------------------------------------------------------------------------------
    def _eval_model_on_split(
        self,
        split: str,
        num_examples: int,
        global_batch_size: int,
        params: spec.ParameterContainer,
        model_state: Any,
        rng: Any,
        data_dir: str,
        global_step: int = 0,
    ) -> dict[str, float]:
        """Loss and accuracy per real target token and BLEU of the beam-search translations:
        sums and translations on the devices (jitted), the metric in `WmtData.translation_metrics`."""
        sums = np.zeros(3)
        predicted: list[np.ndarray] = []
        targets: list[np.ndarray] = []
        for batch in self.eval_split_batches(split, num_examples, global_batch_size):
            real = batch["weights"].max(axis=1) > 0  # a real example has at least its </s>
            padded = _pad_rows(batch, jax.device_count())
            device_batch = to_jax(padded)
            sums += np.asarray(jax.device_get(self._eval_sums_jit(params, device_batch)), np.float64)
            predicted += list(self.translate(params, device_batch["inputs"])[: len(real)][real])
            targets += list(batch["targets"][real])
        return self.translation_metrics(*sums, predicted, targets)

    @functools.cached_property
    def _eval_sums_jit(self) -> Any:
        def sums(params: Any, batch: dict[str, Any]) -> Any:
            logits, _ = self.model_fn(params, batch, None, spec.ForwardPassMode.EVAL, None, False)
            weights = batch["weights"]
            loss = self.loss_fn(batch["targets"], logits, weights)["summed"]
            correct = ((jnp.argmax(logits, -1) == batch["targets"]) * weights).sum()
            return jnp.stack([loss, correct, weights.sum()])

        return jax.jit(sums)

    def translate(self, params: Any, src: Any, max_decode_len: int | None = None,
                  beam_size: int = BEAM_SIZE) -> np.ndarray:
        """Beam-search translations (batch, max_decode_len - 1), best beam, start token dropped."""
        length = max_decode_len or self.max_predict_length
        cross, cache = self._init_decoding_jit(params, src, beam_size, length)
        seqs, _ = jax_beam_search(self._search_step, src.shape[0], length, (params, cross), cache,
                                  beam_size)
        return np.asarray(jax.device_get(seqs[:, 0, 1:]))

    @functools.cached_property
    def _init_decoding_jit(self) -> Any:
        def init(params: Any, src: Any, beam_size: int, length: int) -> Any:
            return self._model.apply({"params": params}, src, beam_size, length,
                                     method=Transformer.init_decoding)

        return jax.jit(init, static_argnums=(2, 3))

    @functools.cached_property
    def _search_step(self) -> Any:
        def tokens_to_logits(context: Any, tokens: Any, position: Any, cache: Any) -> Any:
            params, cross = context
            return self._model.apply({"params": params}, tokens, position, cache, cross,
                                     method=Transformer.decode_step)

        return jax_search_step(tokens_to_logits, EOS_ID, LENGTH_PENALTY_ALPHA)
