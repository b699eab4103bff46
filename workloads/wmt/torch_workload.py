"""The WMT Transformer in PyTorch as the reference defines it, its loss, and beam-search BLEU.

Model facts (reference `wmt_pytorch/models.py`): 6 encoder and 6 decoder layers, width 1024,
16 heads, feed-forward width 1024, attention without biases (fused QKV projection for
self-attention, Q and fused KV projections for cross-attention), queries multiplied by the
attention temperature, layer norm eps 1e-6, pre-LN with a final norm after each stack (post-LN
has none), one 32,000 x 1024 embedding shared by encoder, decoder and the output projection
(logits = h E^T / sqrt(1024)), sinusoidal positions (sin on the first half of the channels, cos
on the second, 256 positions), dropout after the embeddings, inside attention, after each
sub-block and on the feed-forward hidden layer. GLU variant: act(W1 x) * (Wg x), with the
decoder's Wg 1024 x 1024 (the reference sizes it feed-forward x feed-forward). Init: every Linear
weight Xavier-uniform, biases N(0, 1e-6), the embedding N(0, 1) (PyTorch's default). The decoder
input is the packed target row shifted right by one as a whole (a later segment starts with the
previous segment's </s>, as in the reference). Parameter names follow the reference's module tree.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from algoperf import spec
from workloads.torch_base import TorchWorkload, to_torch
from workloads.wmt.beam_search import beam_search
from workloads.wmt.workload import (
    BEAM_SIZE,
    EOS_ID,
    LENGTH_PENALTY_ALPHA,
    MAX_LENGTH,
    VOCAB_SIZE,
    WmtData,
)

ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh}
MASKED = -1e10  # the reference's additive attention mask value


def mask_bias(allowed: torch.Tensor) -> torch.Tensor:
    """(batch, Lq, Lk) booleans -> (batch, 1, Lq, Lk) additive float mask (0 or -1e10)."""
    return (
        torch.zeros(allowed.shape, dtype=torch.float32, device=allowed.device)
        .masked_fill(~allowed, MASKED)
        .unsqueeze(1)
    )


class PositionalEncoding(nn.Module):
    def __init__(self, d_model: int, max_len: int = MAX_LENGTH) -> None:
        super().__init__()
        half = d_model // 2
        position = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(half) * (-math.log(10000.0) / (half - 1)))
        pe = torch.zeros(1, max_len, d_model)
        pe[0, :, :half] = torch.sin(position * div)
        pe[0, :, half : 2 * half] = torch.cos(position * div)
        self.register_buffer("pe", pe)

    def forward(
        self, x: torch.Tensor, positions: torch.Tensor | None, rate: float, offset: int = 0
    ) -> torch.Tensor:
        if positions is None:
            pe = self.pe[:, offset : offset + x.shape[1]]
        else:
            pe = self.pe[0, positions.long()]
        return F.dropout(x + pe, rate, self.training)


class MultiheadAttention(nn.Module):
    def __init__(self, d: int, heads: int, self_attn: bool, attention_temp: float) -> None:
        super().__init__()
        self.d, self.heads, self.self_attn, self.attention_temp = (
            d,
            heads,
            self_attn,
            attention_temp,
        )
        if self_attn:
            self.in_proj = nn.Linear(d, 3 * d, bias=False)
        else:
            self.q_proj = nn.Linear(d, d, bias=False)
            self.kv_proj = nn.Linear(d, 2 * d, bias=False)
        self.out_proj = nn.Linear(d, d, bias=False)

    def split(self, t: torch.Tensor) -> torch.Tensor:
        """(N, L, d) -> (N, heads, L, d / heads)."""
        return t.reshape(t.shape[0], t.shape[1], self.heads, self.d // self.heads).transpose(1, 2)

    def merge(self, t: torch.Tensor) -> torch.Tensor:
        return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], self.d)

    def memory_kv(self, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv_proj(mem).split(self.d, dim=2)
        return self.split(k), self.split(v)

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        bias: torch.Tensor | None,
        rate: float,
    ) -> torch.Tensor:
        """Heads-split q, k, v -> (N, Lq, d) after the output projection."""
        out = F.scaled_dot_product_attention(
            self.attention_temp * q,
            k,
            v,
            attn_mask=None if bias is None else bias.to(q.dtype),
            dropout_p=rate if self.training else 0.0,
        )
        return self.out_proj(self.merge(out))

    def forward(
        self, x: torch.Tensor, mem: torch.Tensor | None, bias: torch.Tensor | None, rate: float
    ) -> torch.Tensor:
        if self.self_attn:
            q, k, v = (self.split(t) for t in self.in_proj(x).split(self.d, dim=2))
        else:
            assert mem is not None
            q = self.split(self.q_proj(x))
            k, v = self.memory_kv(mem)
        return self.attend(q, k, v, bias, rate)


def feed_forward(layer: Any, x: torch.Tensor, rate: float) -> torch.Tensor:
    h = layer.activation(layer.linear1(x))
    if layer.glu:
        h = h * layer.linear_glu(x)
    h = layer.linear2(F.dropout(h, rate, layer.training))
    return F.dropout(h, rate, layer.training)


class TransformerEncoderLayer(nn.Module):
    def __init__(
        self,
        d: int,
        heads: int,
        d_hid: int,
        activation: str,
        glu: bool,
        eps: float,
        attention_temp: float,
        pre_ln: bool,
    ) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(d, heads, True, attention_temp)
        self.linear1 = nn.Linear(d, d_hid)
        self.glu = glu
        if glu:
            self.linear_glu = nn.Linear(d, d_hid)
        self.linear2 = nn.Linear(d_hid, d)
        self.pre_ln = pre_ln
        self.norm1 = nn.LayerNorm(d, eps=eps)
        self.norm2 = nn.LayerNorm(d, eps=eps)
        self.activation = ACTIVATIONS[activation]

    def _sa(self, x: torch.Tensor, bias: torch.Tensor, rate: float) -> torch.Tensor:
        return F.dropout(self.self_attn(x, None, bias, rate), rate, self.training)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, rate: float) -> torch.Tensor:
        if self.pre_ln:
            x = x + self._sa(self.norm1(x), bias, rate)
            return x + feed_forward(self, self.norm2(x), rate)
        x = self.norm1(x + self._sa(x, bias, rate))
        return self.norm2(x + feed_forward(self, x, rate))


class TransformerDecoderLayer(nn.Module):
    def __init__(
        self,
        d: int,
        heads: int,
        d_hid: int,
        activation: str,
        glu: bool,
        eps: float,
        attention_temp: float,
        pre_ln: bool,
    ) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(d, heads, True, attention_temp)
        self.multihead_attn = MultiheadAttention(d, heads, False, attention_temp)
        self.linear1 = nn.Linear(d, d_hid)
        self.glu = glu
        if glu:
            self.linear_glu = nn.Linear(d_hid, d_hid)
        self.linear2 = nn.Linear(d_hid, d)
        self.pre_ln = pre_ln
        self.norm1 = nn.LayerNorm(d, eps=eps)
        self.norm2 = nn.LayerNorm(d, eps=eps)
        self.norm3 = nn.LayerNorm(d, eps=eps)
        self.activation = ACTIVATIONS[activation]

    def _residual(self, x: torch.Tensor, block: Any, norm: nn.Module) -> torch.Tensor:
        if self.pre_ln:
            return x + block(norm(x))
        return norm(x + block(x))

    def forward(
        self,
        x: torch.Tensor,
        mem: torch.Tensor,
        self_bias: torch.Tensor,
        cross_bias: torch.Tensor,
        rate: float,
    ) -> torch.Tensor:
        def sa(y: torch.Tensor) -> torch.Tensor:
            return F.dropout(self.self_attn(y, None, self_bias, rate), rate, self.training)

        def ca(y: torch.Tensor) -> torch.Tensor:
            return F.dropout(self.multihead_attn(y, mem, cross_bias, rate), rate, self.training)

        x = self._residual(x, sa, self.norm1)
        x = self._residual(x, ca, self.norm2)
        return self._residual(x, lambda y: feed_forward(self, y, rate), self.norm3)

    def decode_step(
        self,
        x: torch.Tensor,
        cache: dict[str, torch.Tensor],
        cross: tuple[torch.Tensor, ...],
        beams: int,
    ) -> torch.Tensor:
        """One new position per (example, beam) row: x is (batch * beams, 1, d).

        `cache` holds this layer's self-attention keys/values of the earlier positions (rows
        follow the beams); `cross` the cross-attention keys/values of the un-repeated memory and its
        mask bias, shared by the beams of an example (they are treated as its query positions).
        """
        attn, cross_attn = self.self_attn, self.multihead_attn

        def sa(y: torch.Tensor) -> torch.Tensor:
            q, k, v = (attn.split(t) for t in attn.in_proj(y).split(attn.d, dim=2))
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
            return attn.attend(q, k, v, None, 0.0)

        def ca(y: torch.Tensor) -> torch.Tensor:
            k, v, bias = cross
            n = y.shape[0] // beams
            q = cross_attn.split(cross_attn.q_proj(y).reshape(n, beams, attn.d))
            return cross_attn.attend(q, k, v, bias, 0.0).reshape(n * beams, 1, attn.d)

        x = self._residual(x, sa, self.norm1)
        x = self._residual(x, ca, self.norm2)
        return self._residual(x, lambda y: feed_forward(self, y, 0.0), self.norm3)


class TransformerStack(nn.Module):
    def __init__(self, layers: list[nn.Module], norm: nn.Module | None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = norm


class Encoder(nn.Module):
    def __init__(self, layer_args: tuple, nlayers: int, d: int, eps: float, pre_ln: bool) -> None:
        super().__init__()
        self.encoder = TransformerStack(
            [TransformerEncoderLayer(*layer_args) for _ in range(nlayers)],
            nn.LayerNorm(d, eps=eps) if pre_ln else None,
        )


class Decoder(nn.Module):
    def __init__(self, layer_args: tuple, nlayers: int, d: int, eps: float, pre_ln: bool) -> None:
        super().__init__()
        self.decoder = TransformerStack(
            [TransformerDecoderLayer(*layer_args) for _ in range(nlayers)],
            nn.LayerNorm(d, eps=eps) if pre_ln else None,
        )


class Transformer(nn.Module):
    def __init__(
        self,
        ntoken: int = VOCAB_SIZE,
        d_model: int = 1024,
        nhead: int = 16,
        d_hid: int = 1024,
        nlayers: int = 6,
        activation: str = "relu",
        glu: bool = False,
        layer_norm_eps: float = 1e-6,
        attention_temp: float = 1.0,
        pre_ln: bool = True,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.pos_encoder = PositionalEncoding(d_model)
        self.shared_embedding = nn.Embedding(ntoken, d_model)
        args = (d_model, nhead, d_hid, activation, glu, layer_norm_eps, attention_temp, pre_ln)
        self.encoder = Encoder(args, nlayers, d_model, layer_norm_eps, pre_ln)
        self.decoder = Decoder(args, nlayers, d_model, layer_norm_eps, pre_ln)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.normal_(module.bias, std=1e-6)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        norm = self.decoder.decoder.norm
        if norm is not None:
            h = norm(h)
        return torch.matmul(h, self.shared_embedding.weight.T) / math.sqrt(self.d_model)

    def encode(
        self,
        src: torch.Tensor,
        positions: torch.Tensor | None = None,
        segmentation: torch.Tensor | None = None,
        rate: float = 0.0,
    ) -> torch.Tensor:
        valid = src > 0
        allowed = valid.unsqueeze(-1) & valid.unsqueeze(-2)
        if segmentation is not None:
            allowed = allowed & (segmentation.unsqueeze(-1) == segmentation.unsqueeze(-2))
        bias = mask_bias(allowed)
        x = self.pos_encoder(self.shared_embedding(src.long()), positions, rate)
        for layer in self.encoder.encoder.layers:
            x = layer(x, bias, rate)
        norm = self.encoder.encoder.norm
        return norm(x) if norm is not None else x

    def forward(
        self,
        src: torch.Tensor,
        tgt: torch.Tensor,
        inputs_positions: torch.Tensor | None = None,
        targets_positions: torch.Tensor | None = None,
        inputs_segmentation: torch.Tensor | None = None,
        targets_segmentation: torch.Tensor | None = None,
        dropout_rate: float = 0.1,
    ) -> torch.Tensor:
        """Logits (batch, target length, vocab) of teacher-forced decoding."""
        rate = float(dropout_rate)
        mem = self.encode(src, inputs_positions, inputs_segmentation, rate)
        tgt_valid, src_valid = tgt > 0, src > 0
        length = tgt.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=tgt.device).tril()
        self_allowed = tgt_valid.unsqueeze(-1) & tgt_valid.unsqueeze(-2) & causal
        cross_allowed = tgt_valid.unsqueeze(-1) & src_valid.unsqueeze(-2)
        if inputs_segmentation is not None and targets_segmentation is not None:
            self_allowed = self_allowed & (
                targets_segmentation.unsqueeze(-1) == targets_segmentation.unsqueeze(-2)
            )
            cross_allowed = cross_allowed & (
                targets_segmentation.unsqueeze(-1) == inputs_segmentation.unsqueeze(-2)
            )
        shifted = F.pad(tgt.long(), (1, 0))[:, :-1]
        x = self.pos_encoder(self.shared_embedding(shifted), targets_positions, rate)
        self_bias, cross_bias = mask_bias(self_allowed), mask_bias(cross_allowed)
        for layer in self.decoder.decoder.layers:
            x = layer(x, mem, self_bias, cross_bias, rate)
        return self._logits(x)

    def decode_fn(self, src: torch.Tensor, beam_size: int) -> Any:
        """The cached one-position-at-a-time decoder for the beam search, on sources `src`.

        Returns `tokens_to_logits(prefixes, cache)`: prefixes are (batch * beam_size, t + 1) with
        the beams of an example adjacent; only the last token is fed, earlier positions come from
        the cache (the reference's fast decoding). Cross-attention keys/values are computed once
        from the un-repeated encoder output and shared by an example's beams.
        """
        mem = self.encode(src)
        cross_bias = mask_bias((src > 0).unsqueeze(1))  # (batch, 1, 1, S)
        cross = [
            (*layer.multihead_attn.memory_kv(mem), cross_bias)
            for layer in self.decoder.decoder.layers
        ]

        def tokens_to_logits(prefixes: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
            position = prefixes.shape[1] - 1
            x = self.pos_encoder(
                self.shared_embedding(prefixes[:, -1:].long()), None, 0.0, offset=position
            )
            cache = cache or [{} for _ in cross]
            for layer, layer_cache, layer_cross in zip(self.decoder.decoder.layers, cache, cross):
                x = layer.decode_step(x, layer_cache, layer_cross, beam_size)
            return self._logits(x)[:, 0], cache

        return tokens_to_logits

    @torch.no_grad()
    def translate(
        self,
        src: torch.Tensor,
        max_decode_len: int,
        beam_size: int = BEAM_SIZE,
        alpha: float = LENGTH_PENALTY_ALPHA,
        eos_id: int = EOS_ID,
    ) -> torch.Tensor:
        """Beam-search translations (batch, max_decode_len - 1), best beam, start token dropped."""
        # Trailing padding columns change nothing (masked keys get exactly zero weight): drop them.
        used = (src > 0).any(0).nonzero()
        src = src[:, : int(used.max()) + 1 if len(used) else 1]
        seqs, _ = beam_search(
            self.decode_fn(src, beam_size),
            len(src),
            max_decode_len,
            eos_id,
            beam_size,
            alpha,
            device=src.device,
        )
        return seqs[:, 0, 1:]


def unwrap(model: nn.Module) -> Any:
    return model.module if hasattr(model, "module") else model


class WmtWorkload(WmtData, TorchWorkload):
    def build_model(self) -> nn.Module:
        """The reference model; the size options (`d_model`, `nlayers`, ...) exist for tests only."""
        o = self.options
        return Transformer(
            ntoken=int(o.get("vocab_size", VOCAB_SIZE)),
            d_model=int(o.get("d_model", 1024)),
            nhead=int(o.get("nhead", 16)),
            d_hid=int(o.get("d_hid", 1024)),
            nlayers=int(o.get("nlayers", 6)),
            activation=o.get("activation", "relu"),
            glu=bool(o.get("glu", False)),
            attention_temp=float(o.get("attention_temp", 1.0)),
            pre_ln=bool(o.get("pre_ln", True)),
        )

    def is_output_params(self, param_key: str) -> bool:
        return param_key.removeprefix("module.") == "shared_embedding.weight"

    def forward(self, model: nn.Module, batch: dict[str, Any], dropout_rate: float | None) -> Any:
        rate = self.dropout_rate(dropout_rate)
        return model(
            batch["inputs"],
            batch["targets"],
            inputs_positions=batch.get("inputs_position"),
            targets_positions=batch.get("targets_position"),
            inputs_segmentation=batch.get("inputs_segmentation"),
            targets_segmentation=batch.get("targets_segmentation"),
            dropout_rate=rate,
        )

    def loss_fn(
        self,
        label_batch: torch.Tensor,
        logits_batch: torch.Tensor,
        mask_batch: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, torch.Tensor]:
        """Per-token (label-smoothed) cross-entropy: `per_example` is (batch, length).

        As the reference's `compute_weighted_cross_entropy`: with a per-token mask (the training
        and eval batches carry `weights` = targets > 0), positions of weight 0 add 0 and
        `n_valid_examples` is the weight sum, the number of real target tokens. Without a mask
        every target position counts, padding included: `summed` adds the loss of predicting
        token 0 at the padding positions and `n_valid_examples` is batch x length. A per-example
        mask (batch,), which the reference does not take, keeps the real tokens (targets > 0) of
        the examples of non-zero weight.
        """
        if logits_batch.ndim != label_batch.ndim + 1:
            raise ValueError(
                f"logits {tuple(logits_batch.shape)} do not fit targets {tuple(label_batch.shape)}"
            )
        if mask_batch is None:
            weights = torch.ones(label_batch.shape, dtype=logits_batch.dtype, device=label_batch.device)
        else:
            weights = mask_batch.to(logits_batch.dtype)
        if weights.ndim < label_batch.ndim:
            weights = weights.reshape(*weights.shape, *([1] * (label_batch.ndim - weights.ndim)))
            weights = weights * (label_batch > 0).to(weights.dtype)
        losses = F.cross_entropy(
            logits_batch.transpose(1, -1),
            label_batch.long(),
            reduction="none",
            label_smoothing=label_smoothing,
        )
        per_token = torch.where(weights.bool(), losses, torch.zeros_like(losses))
        return {
            "summed": per_token.sum(),
            "n_valid_examples": weights.sum(),
            "per_example": per_token,
        }

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
        """Loss and accuracy per real target token, and BLEU of the beam-search translations."""
        model = unwrap(params)
        loss = correct = tokens = 0.0
        predicted: list[Any] = []
        targets: list[Any] = []
        for batch in self.eval_split_batches(split, num_examples, global_batch_size):
            real = batch["weights"].max(axis=1) > 0  # a real example has at least its </s>
            device_batch = to_torch({k: v[real] for k, v in batch.items()}, self.device)
            logits, _ = self.model_fn(
                model, device_batch, model_state, spec.ForwardPassMode.EVAL, rng, False
            )
            weights = device_batch["weights"]
            loss += float(self.loss_fn(device_batch["targets"], logits, weights, 0.0)["summed"])
            correct += float(
                ((logits.argmax(-1) == device_batch["targets"]).to(weights.dtype) * weights).sum()
            )
            tokens += float(weights.sum())
            predicted += list(
                model.translate(device_batch["inputs"], self.max_predict_length).cpu().numpy()
            )
            targets += list(batch["targets"][real])
        return self.translation_metrics(loss, correct, tokens, predicted, targets)
