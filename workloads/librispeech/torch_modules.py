"""PyTorch parts both LibriSpeech models share, and their workload base class.

The log-mel front end (constants and numpy reference in `frontend.py`), SpecAugment, the
stride-2 'SAME' convolutional subsampling, the padding-aware batch norm and the zero-centred layer
norm of the reference models; then the workload: the reference's batch format, CTC loss, greedy
decoding and WER at eval.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from algoperf import spec
from workloads.librispeech import frontend as fe
from workloads.librispeech.data import LibriSpeechData
from workloads.librispeech.metrics import BLANK_ID, eval_metrics, transcript_errors
from workloads.torch_base import TorchWorkload


class LogMelFrontend(nn.Module):
    """(N, samples) audio and paddings -> normalised (N, frames, 80) log-mel and frame paddings."""

    window: torch.Tensor
    mel_weights: torch.Tensor
    mean: torch.Tensor
    stddev: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.from_numpy(fe.hann_window()), persistent=False)
        self.register_buffer(
            "mel_weights", torch.from_numpy(fe.mel_weight_matrix()), persistent=False
        )
        self.register_buffer(
            "mean", torch.tensor(fe.LIBRISPEECH_MEAN, dtype=torch.float32), persistent=False
        )
        self.register_buffer(
            "stddev", torch.tensor(fe.LIBRISPEECH_STDDEV, dtype=torch.float32), persistent=False
        )

    def forward(
        self, audio: torch.Tensor, paddings: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = audio * (1.0 - paddings) * fe.INPUT_SCALE
        frames = x.unfold(1, fe.FRAME_SIZE, fe.FRAME_STEP)  # (N, frames, 401)
        emphasised = torch.cat(
            [
                frames[..., :1] * (1.0 - fe.PREEMPHASIS),
                frames[..., 1:-1] - fe.PREEMPHASIS * frames[..., :-2],
            ],
            dim=-1,
        )
        power = torch.fft.rfft(emphasised * self.window, fe.FFT_SIZE, dim=-1).abs() ** 2
        mel = power @ self.mel_weights
        features = (torch.log(mel.clamp(min=fe.OUTPUT_FLOOR)) - self.mean) / self.stddev
        frame_paddings = paddings.unfold(1, fe.FRAME_SIZE, fe.FRAME_STEP).min(dim=-1).values
        return features, frame_paddings


class SpecAugment(nn.Module):
    """Time and frequency masks (Park et al. 2019, arXiv:1904.08779) as the reference draws them.

    Time masks: `time_mask_count` per utterance, each at most `time_mask_max_ratio` of the
    utterance's real length (the reference's dynamic maximum). Frequency masks:
    `freq_mask_count`, each of at most `freq_mask_max_bins` bins. Lengths are drawn uniformly
    below the maximum, starts uniformly where the mask fits; the masked entries become 0.
    """

    def __init__(
        self,
        freq_mask_count: int = 2,
        freq_mask_max_bins: int = 27,
        time_mask_count: int = 10,
        time_mask_max_ratio: float = 0.05,
    ) -> None:
        super().__init__()
        self.freq_mask_count, self.freq_mask_max_bins = freq_mask_count, freq_mask_max_bins
        self.time_mask_count, self.time_mask_max_ratio = time_mask_count, time_mask_max_ratio

    @staticmethod
    def keep_mask(
        choose_range: torch.Tensor,
        size: int,
        max_length: torch.Tensor,
        count: int,
        max_ratio: float,
    ) -> torch.Tensor:
        """(N, size) 1/0 mask of positions outside all `count` masks of each row."""
        batch = len(choose_range)
        length = (max_length[:, None] * torch.rand(batch, count, device=choose_range.device)).long()
        bound = (max_ratio * choose_range[:, None].float()).long().clamp(min=1)
        length = torch.minimum(length, bound)
        span = choose_range[:, None] - length + 1
        start = (torch.rand(batch, count, device=choose_range.device) * span).long()
        end = start + length - 1
        position = torch.arange(size, device=choose_range.device)[None, None, :]
        inside = (position > start[..., None] - 0.1) & (position < end[..., None] + 0.1)
        return 1.0 - inside.any(dim=1).float()

    def forward(self, x: torch.Tensor, paddings: torch.Tensor) -> torch.Tensor:
        n, frames, bins = x.shape
        if self.time_mask_count > 0 and self.time_mask_max_ratio > 0:
            lengths = (1 - paddings).sum(1).long()
            keep = self.keep_mask(
                lengths,
                frames,
                lengths * self.time_mask_max_ratio,
                self.time_mask_count,
                self.time_mask_max_ratio,
            )
            x = x * keep[:, :, None]
        if self.freq_mask_count > 0 and self.freq_mask_max_bins > 0:
            full = torch.full((n,), bins, device=x.device)
            max_bins = torch.full((n,), float(self.freq_mask_max_bins), device=x.device)
            x = x * self.keep_mask(full, bins, max_bins, self.freq_mask_count, 1.0)[:, None, :]
        return x


def same_padding(length: int, stride: int = 2, kernel: int = 3) -> tuple[int, int]:
    """TensorFlow's 'SAME' padding (before, after) of one axis."""
    pad = max(kernel - stride, 0) if length % stride == 0 else max(kernel - length % stride, 0)
    return pad // 2, pad - pad // 2


class Conv2dSubsampling(nn.Module):
    """A 3x3 stride-2 'SAME' convolution over (time, mel), ReLU or tanh, padded frames zeroed.

    A subsampled frame is padding when the first input frame of its stride is.
    """

    def __init__(self, input_channels: int, output_channels: int, use_tanh: bool = False) -> None:
        super().__init__()
        self.kernel = nn.Parameter(
            nn.init.xavier_uniform_(torch.empty(output_channels, input_channels, 3, 3))
        )
        self.bias = nn.Parameter(torch.zeros(output_channels))
        self.use_tanh = use_tanh

    def forward(self, x: torch.Tensor, paddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        top, bottom = same_padding(x.shape[2])
        left, right = same_padding(x.shape[3])
        out = F.conv2d(F.pad(x, (left, right, top, bottom)), self.kernel, self.bias, stride=2)
        out = torch.tanh(out) if self.use_tanh else F.relu(out)
        out_paddings = F.pad(paddings, (0, paddings.shape[1] % 2))[:, ::2]
        return out * (1 - out_paddings[:, None, :, None]), out_paddings


class MaskedBatchNorm(nn.Module):
    """Batch norm over the real frames of (N, T, D) inputs; the gain is 1 + a zero-initialised scale.

    Running statistics: new = (1 - momentum) old + momentum batch, momentum 1 - 0.999, eps 1e-3.
    The reference names the scale `scale` in the Conformer and `weight` in DeepSpeech.
    """

    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(
        self, dim: int, scale_name: str = "scale", momentum: float = 1 - 0.999, eps: float = 1e-3
    ) -> None:
        super().__init__()
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))
        self.scale_name = scale_name
        self.register_parameter(scale_name, nn.Parameter(torch.zeros(dim)))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.momentum, self.eps = momentum, eps

    def forward(self, x: torch.Tensor, paddings: torch.Tensor) -> torch.Tensor:
        mask = 1 - paddings[:, :, None]
        if self.training:
            count = mask.sum()
            masked = x.masked_fill(mask == 0, 0)
            mean = masked.sum(dim=(0, 1)) / count
            var = (torch.square(masked - mean) * mask).sum(dim=(0, 1)) / count
            if self.momentum:
                with torch.no_grad():
                    self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
                    self.running_var.mul_(1 - self.momentum).add_(self.momentum * var)
        else:
            mean, var = self.running_mean, self.running_var
        scale: torch.Tensor = getattr(self, self.scale_name)
        gain = (1 + scale) * torch.rsqrt(var + self.eps)
        return ((x - mean) * gain + self.bias).masked_fill(mask == 0, 0)


class LayerNorm(nn.Module):
    """Layer norm over the last axis with gain 1 + scale; scale and bias start at 0, eps 1e-6."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), 1 + self.scale, self.bias, self.eps)


def xavier_init(model: nn.Module) -> None:
    """The reference's init: Xavier-uniform weights and zero biases of every Linear and Conv1d."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@contextlib.contextmanager
def frozen_batch_norm_statistics(model: nn.Module, frozen: bool) -> Iterator[None]:
    """Train-mode batch norm that leaves its running statistics alone (the reference sets momentum 0)."""
    saved = (
        [(m, m.momentum) for m in model.modules() if isinstance(m, MaskedBatchNorm)]
        if frozen
        else []
    )
    for m, _ in saved:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in saved:
            m.momentum = momentum


class LibriSpeechTorchWorkload(LibriSpeechData, TorchWorkload):
    """Batches as the reference's ((audio, paddings), (ids, paddings)); CTC loss; WER at eval."""

    def init_model_fn(
        self,
        rng: spec.RandomState,
        dropout_rate: float | None = None,
        aux_dropout_rate: float | None = None,
    ) -> tuple[nn.Module, spec.ModelAuxiliaryState]:
        model, state = super().init_model_fn(rng, dropout_rate, aux_dropout_rate)
        # The padding-aware batch norms are batch norms (the backend's rule would call them layer norms).
        for name, module in model.named_modules():
            if isinstance(module, MaskedBatchNorm):
                for p, _ in module.named_parameters(recurse=False):
                    key = f"{name}.{p}"
                    self._param_types[key] = (  # type: ignore[index]
                        spec.ParameterType.BATCH_NORM_BIAS
                        if p == "bias"
                        else spec.ParameterType.BATCH_NORM_SCALE
                    )
        return model, state

    def is_output_params(self, param_key: spec.ParameterKey) -> bool:
        return param_key.removeprefix("module.") in ("lin.weight", "lin.bias")

    def device_batch(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        b = super().device_batch(batch)
        out = {
            "inputs": (b["inputs"], b["input_paddings"]),
            "targets": (b["targets"], b["target_paddings"]),
        }
        if "weights" in b:
            out["weights"] = b["weights"]
        return out

    def forward(self, model: nn.Module, batch: dict[str, Any], dropout_rate: float | None) -> Any:
        rate = self.dropout_rate(dropout_rate)
        audio, paddings = batch["inputs"]
        return model(audio, paddings, dropout_rate=rate)

    def model_fn(
        self,
        params: spec.ParameterContainer,
        augmented_and_preprocessed_input_batch: dict[str, Any],
        model_state: spec.ModelAuxiliaryState,
        mode: spec.ForwardPassMode,
        rng: spec.RandomState,
        update_batch_norm: bool,
        dropout_rate: float | None = None,
    ) -> tuple[Any, spec.ModelAuxiliaryState]:
        model = params
        train = mode == spec.ForwardPassMode.TRAIN
        model.train(train)
        with (
            torch.set_grad_enabled(train),
            frozen_batch_norm_statistics(model, train and not update_batch_norm),
        ):
            out = self.forward(model, augmented_and_preprocessed_input_batch, dropout_rate)
        return out, model_state

    def loss_fn(
        self,
        label_batch: Any,
        logits_batch: Any,
        mask_batch: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, torch.Tensor]:
        """CTC negative log-likelihood per utterance (blank 0) and its normaliser, as the reference.

        `label_batch` is (ids, paddings) and `logits_batch` (logits, paddings). `summed` adds the
        utterances' losses (each times its weight when a mask is given). `n_valid_examples` is
        what the reference's PyTorch `loss_fn` returns, at least 1:

        - without a mask (the training batches carry no `weights`, so every training step): the
          number of target tokens, sum of the target lengths; a submission's `summed /
          n_valid_examples` is then a per-token loss, as the reference's;
        - with a mask: the number of utterances of non-zero weight and non-empty target.

        Label smoothing does not apply to CTC. A masked-out utterance adds 0 even when its CTC
        loss is infinite (the reference multiplies, and would get NaN there).
        """
        targets, target_paddings = label_batch
        logits, logit_paddings = logits_batch
        logprobs = torch.log_softmax(logits, dim=-1)
        input_lengths = (1 - logit_paddings).sum(1).long()
        target_lengths = (1 - target_paddings).sum(1).long()
        per_example = F.ctc_loss(
            logprobs.transpose(0, 1),
            targets.long(),
            input_lengths,
            target_lengths,
            blank=BLANK_ID,
            reduction="none",
        )
        if mask_batch is None:
            n_valid = target_lengths.sum().to(per_example.dtype)
        else:
            weights = mask_batch.reshape(len(per_example)).to(per_example.dtype)
            per_example = torch.where(
                weights != 0, per_example * weights, torch.zeros_like(per_example)
            )
            n_valid = ((weights != 0) & (target_lengths > 0)).sum().to(per_example.dtype)
        return {
            "summed": per_example.sum(),
            "n_valid_examples": n_valid.clamp(min=1),
            "per_example": per_example,
        }

    def eval_batch(
        self, params: spec.ParameterContainer, model_state: Any, batch: dict[str, Any], rng: Any
    ) -> dict[str, Any]:
        """Summed CTC loss, its normaliser, word errors and reference words of a device batch
        (`device_batch`'s layout: ((audio, paddings), (ids, paddings)), weights).

        The loss is taken without a mask over the real rows, as the reference's eval does, so the
        normaliser is the number of target tokens and `ctc_loss` a per-token loss like the
        reference's.
        """
        real = batch["weights"].reshape(-1) > 0
        device = batch["weights"].device
        zero = torch.zeros((), dtype=torch.float64, device=device)
        if not bool(real.any()):
            return {"ctc_loss": zero, "n_valid": zero, "word_errors": zero, "num_words": zero}
        (audio, audio_paddings), (targets, target_paddings) = batch["inputs"], batch["targets"]
        model_batch = {
            "inputs": (audio[real], audio_paddings[real]),
            "targets": (targets[real], target_paddings[real]),
        }
        (logits, paddings), _ = self.model_fn(
            params,
            model_batch,
            model_state,
            spec.ForwardPassMode.EVAL,
            rng,
            update_batch_norm=False,
        )
        loss = self.loss_fn(model_batch["targets"], (logits, paddings))
        errors, words = transcript_errors(
            logits.argmax(-1).cpu().numpy(), paddings.cpu().numpy(),
            *(t.cpu().numpy() for t in model_batch["targets"]), self.detokenize,
        )
        return {
            "ctc_loss": loss["summed"].detach().to(torch.float64),
            "n_valid": loss["n_valid_examples"].detach().to(torch.float64),
            "word_errors": torch.tensor(float(errors), dtype=torch.float64, device=device),
            "num_words": torch.tensor(float(words), dtype=torch.float64, device=device),
        }

    def finalize_eval_metrics(
        self, totals: dict[str, float], num_examples: int
    ) -> dict[str, float]:
        return eval_metrics(totals)
