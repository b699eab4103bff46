"""JAX (flax linen) parts both LibriSpeech models share, and their workload base class: the twins
of `torch_modules.py`, computing the same numbers.

The log-mel front end (constants in `frontend.py`), SpecAugment, the stride-2 'SAME' convolutional
subsampling, the padding-aware batch norm (statistics in the `batch_stats` collection, i.e.
`model_state`, named `mean` and `var` as in the reference's JAX models) and the zero-centred layer
norm; then the workload: batches as the reference's ((audio, paddings), (ids, paddings)), CTC loss
(`optax.ctc_loss`), greedy decoding and WER at eval through the framework-free `metrics.py`.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from algoperf import spec
from workloads.jax_base import JaxWorkload, _pad_rows, to_jax
from workloads.librispeech import frontend as fe
from workloads.librispeech import metrics
from workloads.librispeech.data import LibriSpeechData
from workloads.librispeech.metrics import BLANK_ID

xavier = nn.initializers.xavier_uniform()


def log_mel(audio: Any, paddings: Any) -> tuple[Any, Any]:
    """(N, samples) audio and paddings -> normalised (N, frames, 80) log-mel and frame paddings."""
    x = audio * (1.0 - paddings) * fe.INPUT_SCALE
    frames = fe.num_frames(audio.shape[1])
    index = np.arange(frames)[:, None] * fe.FRAME_STEP + np.arange(fe.FRAME_SIZE)[None, :]
    framed = x[:, index]  # (N, frames, 401)
    emphasised = jnp.concatenate(
        [framed[..., :1] * (1.0 - fe.PREEMPHASIS),
         framed[..., 1:-1] - fe.PREEMPHASIS * framed[..., :-2]], axis=-1)
    power = jnp.abs(jnp.fft.rfft(emphasised * fe.hann_window(), fe.FFT_SIZE, axis=-1)) ** 2
    mel = power @ fe.mel_weight_matrix()
    mean = np.asarray(fe.LIBRISPEECH_MEAN, np.float32)
    stddev = np.asarray(fe.LIBRISPEECH_STDDEV, np.float32)
    features = (jnp.log(jnp.maximum(mel, fe.OUTPUT_FLOOR)) - mean) / stddev
    return features, paddings[:, index].min(axis=-1)


def keep_mask(choose_range: Any, size: int, max_length: Any, count: int, max_ratio: float,
              u_length: Any, u_start: Any) -> Any:
    """(N, size) 1/0 mask of the positions outside all `count` masks of each row, from uniform
    draws `u_length`, `u_start` (N, count): the rule of `torch_modules.SpecAugment.keep_mask`
    (lengths below the row's maximum, capped at max_ratio of its range; starts where they fit)."""
    length = jnp.floor(max_length[:, None] * u_length).astype(jnp.int32)
    bound = jnp.maximum(jnp.floor(max_ratio * choose_range[:, None].astype(jnp.float32)), 1)
    length = jnp.minimum(length, bound.astype(jnp.int32))
    span = choose_range[:, None] - length + 1
    start = jnp.floor(u_start * span).astype(jnp.int32)
    end = start + length - 1
    position = jnp.arange(size)[None, None, :]
    inside = (position > start[..., None] - 0.1) & (position < end[..., None] + 0.1)
    return 1.0 - inside.any(axis=1).astype(jnp.float32)


class SpecAugment(nn.Module):
    """Time and frequency masks (Park et al. 2019, arXiv:1904.08779), drawn as the PyTorch twin
    draws them; the random numbers come from the `dropout` stream (the reference's choice)."""

    freq_mask_count: int = 2
    freq_mask_max_bins: int = 27
    time_mask_count: int = 10
    time_mask_max_ratio: float = 0.05

    @nn.compact
    def __call__(self, x: Any, paddings: Any) -> Any:
        n, frames, bins = x.shape
        if self.time_mask_count > 0 and self.time_mask_max_ratio > 0:
            k1, k2 = jax.random.split(self.make_rng("dropout"))
            shape = (n, self.time_mask_count)
            lengths = jnp.floor((1 - paddings).sum(1)).astype(jnp.int32)
            keep = keep_mask(lengths, frames, lengths * self.time_mask_max_ratio,
                             self.time_mask_count, self.time_mask_max_ratio,
                             jax.random.uniform(k1, shape), jax.random.uniform(k2, shape))
            x = x * keep[:, :, None]
        if self.freq_mask_count > 0 and self.freq_mask_max_bins > 0:
            k1, k2 = jax.random.split(self.make_rng("dropout"))
            shape = (n, self.freq_mask_count)
            full = jnp.full((n,), bins, jnp.int32)
            max_bins = jnp.full((n,), float(self.freq_mask_max_bins))
            keep = keep_mask(full, bins, max_bins, self.freq_mask_count, 1.0,
                             jax.random.uniform(k1, shape), jax.random.uniform(k2, shape))
            x = x * keep[:, None, :]
        return x


def front(inputs: Any, input_paddings: Any, train: bool, freq_mask_count: int,
          time_mask_count: int) -> tuple[Any, Any]:
    """Both models' front, called inside their compact `__call__`: log-mel features, then (in
    training) SpecAugment as the reference configures it (27 bins, 5% of the frames per mask)."""
    x, paddings = log_mel(inputs, input_paddings)
    if train:
        x = SpecAugment(freq_mask_count=freq_mask_count, freq_mask_max_bins=27, time_mask_count=time_mask_count,
                        time_mask_max_ratio=0.05)(x, paddings)
    return x, paddings


class Conv2dSubsampling(nn.Module):
    """A 3x3 stride-2 'SAME' convolution over (time, mel), ReLU or tanh, padded frames zeroed;
    a subsampled frame is padding when the first input frame of its stride is."""

    output_channels: int
    use_tanh: bool = False

    @nn.compact
    def __call__(self, x: Any, paddings: Any) -> tuple[Any, Any]:
        kernel = self.param("kernel", xavier, (3, 3, x.shape[-1], self.output_channels))
        bias = self.param("bias", nn.initializers.zeros, (self.output_channels,))
        out = jax.lax.conv_general_dilated(x, kernel, (2, 2), "SAME",
                                           dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias
        out = jnp.tanh(out) if self.use_tanh else nn.relu(out)
        out_paddings = jnp.pad(paddings, ((0, 0), (0, paddings.shape[1] % 2)))[:, ::2]
        return out * (1 - out_paddings[:, :, None, None]), out_paddings


class BatchNorm(nn.Module):
    """Batch norm over the real frames of (N, T, D) inputs; gain 1 + a zero-initialised `scale`.

    Running statistics: new = 0.999 old + 0.001 batch, eps 1e-3 (lingvo's, the reference's). They
    are written only when the `batch_stats` collection is mutable (a train step that updates them).
    """

    momentum: float = 0.999
    epsilon: float = 1e-3

    @nn.compact
    def __call__(self, x: Any, paddings: Any, use_running_average: bool) -> Any:
        dim = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (dim,))
        ra_var = self.variable("batch_stats", "var", jnp.ones, (dim,))
        scale = self.param("scale", nn.initializers.zeros, (dim,))
        bias = self.param("bias", nn.initializers.zeros, (dim,))
        mask = 1.0 - paddings[:, :, None]
        if use_running_average:
            mean, var = ra_mean.value, ra_var.value
        else:
            count = mask.sum()
            mean = (x * mask).sum(axis=(0, 1)) / count
            var = (jnp.square(x * mask - mean) * mask).sum(axis=(0, 1)) / count
            if self.is_mutable_collection("batch_stats") and not self.is_initializing():
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        gain = (1 + scale) * jax.lax.rsqrt(var + self.epsilon)
        return ((x - mean) * gain + bias) * mask


class LayerNorm(nn.Module):
    """Layer norm over the last axis with gain 1 + scale; scale and bias start at 0, eps 1e-6."""

    epsilon: float = 1e-6

    @nn.compact
    def __call__(self, x: Any) -> Any:
        scale = self.param("scale", nn.initializers.zeros, (x.shape[-1],))
        bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
        mean = x.mean(-1, keepdims=True)
        var = jnp.square(x - mean).mean(-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * (1 + scale) + bias


def dropout(x: Any, rate: float, train: bool, module: nn.Module) -> Any:
    """Inverted dropout (kept units scaled by 1 / (1 - rate)), as `algoperf.jax_utils.Dropout`."""
    if not train or rate == 0.0:
        return x
    keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def ctc_losses(logits: Any, logit_paddings: Any, targets: Any, target_paddings: Any) -> Any:
    """CTC negative log-likelihood per utterance, blank 0 (`optax.ctc_loss`; the PyTorch twin uses
    `F.ctc_loss`: the same quantity)."""
    return optax.ctc_loss(logits, logit_paddings, targets.astype(jnp.int32), target_paddings,
                          blank_id=BLANK_ID)


class LibriSpeechJaxWorkload(LibriSpeechData, JaxWorkload):
    """Batches as the reference's ((audio, paddings), (ids, paddings)); CTC loss; WER at eval."""

    def model_inputs(self, batch: dict[str, Any]) -> tuple[Any, ...]:
        audio, paddings = batch["inputs"]
        return audio, paddings

    def init_inputs(self) -> tuple[Any, ...]:
        """One second of silence: the parameter shapes depend on no data."""
        return np.zeros((2, 16_000), np.float32), np.zeros((2, 16_000), np.float32)

    def model_batch(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        """The pipeline's flat numpy batch in the model's layout (tuples of arrays)."""
        out = {"inputs": (batch["inputs"], batch["input_paddings"]),
               "targets": (batch["targets"], batch["target_paddings"])}
        if "weights" in batch:
            out["weights"] = batch["weights"]
        return out

    def device_batch(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        b = super().device_batch(batch)
        return self.model_batch(b)

    def is_output_params(self, param_key: spec.ParameterKey) -> bool:
        names = [k for k in (self._param_shapes or {}) if k.startswith("Dense_")]
        return bool(names) and param_key == sorted(names, key=lambda k: int(k.split("_")[1]))[-1]

    def loss_fn(
        self,
        label_batch: Any,
        logits_batch: Any,
        mask_batch: Any = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, Any]:
        """CTC loss per utterance and its normaliser, as the PyTorch twin's (its docstring gives
        the reference's rules): without a mask `n_valid_examples` is the number of target tokens,
        with a mask the number of utterances of non-zero weight and non-empty target; at least 1.
        Label smoothing does not apply to CTC."""
        targets, target_paddings = label_batch
        logits, logit_paddings = logits_batch
        per_example = ctc_losses(logits, logit_paddings, targets, target_paddings)
        target_lengths = (1 - target_paddings).sum(1)
        if mask_batch is None:
            n_valid = target_lengths.sum()
        else:
            weights = mask_batch.reshape(per_example.shape[0]).astype(per_example.dtype)
            per_example = jnp.where(weights != 0, per_example * weights, 0.0)
            n_valid = ((weights != 0) & (target_lengths > 0)).sum().astype(per_example.dtype)
        return {"summed": per_example.sum(), "n_valid_examples": jnp.maximum(n_valid, 1.0),
                "per_example": per_example}

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
        """CTC loss per target token and corpus WER: the model and the loss on the devices
        (jitted), greedy decoding and word errors in `metrics.py` (numpy), as the PyTorch twin."""
        totals = {"ctc_loss": 0.0, "n_valid": 0.0, "word_errors": 0.0, "num_words": 0.0}
        evaluated = 0
        for batch in self.eval_split_batches(split, num_examples, global_batch_size):
            real = batch["weights"].reshape(-1) > 0
            if not real.any():
                continue
            padded = _pad_rows(batch, jax.device_count())
            out = jax.device_get(self._eval_batch_jit(params, model_state, to_jax(padded)))
            n = len(batch["weights"])
            totals["ctc_loss"] += float(out["ctc_loss"])
            totals["n_valid"] += float(out["n_valid"])
            errors, words = metrics.transcript_errors(
                np.asarray(out["tokens"])[:n][real], np.asarray(out["paddings"])[:n][real],
                batch["targets"][real], batch["target_paddings"][real], self.detokenize)
            totals["word_errors"] += errors
            totals["num_words"] += words
            evaluated += int(real.sum())
        return {**metrics.eval_metrics(totals), "num_examples": evaluated}

    @functools.cached_property
    def _eval_batch_jit(self) -> Any:
        def evaluate(params: Any, model_state: Any, batch: dict[str, Any]) -> dict[str, Any]:
            (logits, paddings), _ = self.model_fn(
                params, self.model_batch(batch), model_state, spec.ForwardPassMode.EVAL, None,
                update_batch_norm=False)
            real = (batch["weights"].reshape(-1) > 0).astype(logits.dtype)
            losses = ctc_losses(logits, paddings, batch["targets"], batch["target_paddings"])
            target_tokens = ((1 - batch["target_paddings"]).sum(1) * real).sum()
            return {"ctc_loss": jnp.where(real > 0, losses, 0.0).sum(),
                    "n_valid": jnp.maximum(target_tokens, 1.0),
                    "tokens": jnp.argmax(logits, -1), "paddings": paddings}

        return jax.jit(evaluate)
