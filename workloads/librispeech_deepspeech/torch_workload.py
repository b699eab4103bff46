"""The reference's DeepSpeech (AlgoPerf's PyTorch port): 18,393,600 parameters.

Log-mel front end -> SpecAugment (training only) -> two 3x3 stride-2 convolutions (ReLU or tanh)
-> linear 10240 -> 512 + dropout -> 6 bidirectional LSTMs (256 per direction, each after a norm,
over the real frames only) -> 3 feed-forward layers (norm, linear, ReLU or tanh, dropout) ->
layer norm -> linear to the 1024 tokens. LSTMs and feed-forward layers are residual unless the
`no_resnet` variant says otherwise; the norms are the padding-aware batch norm, or layer norm in
the `norm_and_spec_aug` variant (which also drops the decoder layer norm and masks more).
PyTorch LSTMs have two bias vectors per gate where JAX's have one, hence 12,288 parameters more
than the JAX model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from workloads.librispeech.frontend import NUM_BINS
from workloads.librispeech.tokenizer import VOCAB_SIZE
from workloads.librispeech.torch_modules import (
    Conv2dSubsampling,
    LayerNorm,
    LibriSpeechTorchWorkload,
    LogMelFrontend,
    MaskedBatchNorm,
    SpecAugment,
    xavier_init,
)

ENCODER_DIM, NUM_LSTM_LAYERS, NUM_FFN_LAYERS = 512, 6, 3


class Normalization(nn.Module):
    """The reference's two norms under their names: `normalization_layer` or `bn_normalization_layer`."""

    def __init__(self, layernorm: bool) -> None:
        super().__init__()
        self.layernorm = layernorm
        if layernorm:
            self.normalization_layer = LayerNorm(ENCODER_DIM)
        else:
            self.bn_normalization_layer = MaskedBatchNorm(ENCODER_DIM, scale_name="weight")

    def normalize(self, x: torch.Tensor, paddings: torch.Tensor) -> torch.Tensor:
        if self.layernorm:
            return self.normalization_layer(x)
        return self.bn_normalization_layer(x, paddings)


class Subsample(nn.Module):
    def __init__(self, use_tanh: bool) -> None:
        super().__init__()
        self.conv1 = Conv2dSubsampling(1, ENCODER_DIM, use_tanh)
        self.conv2 = Conv2dSubsampling(ENCODER_DIM, ENCODER_DIM, use_tanh)
        self.lin = nn.Linear(ENCODER_DIM * NUM_BINS // 4, ENCODER_DIM)

    def forward(
        self, x: torch.Tensor, paddings: torch.Tensor, rate: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, paddings = self.conv1(x[:, None], paddings)
        x, paddings = self.conv2(x, paddings)
        n, channels, frames, bins = x.shape
        x = self.lin(x.permute(0, 2, 3, 1).reshape(n, frames, bins * channels))
        return F.dropout(x, rate, self.training), paddings


class BatchRNN(Normalization):
    """A norm, then a bidirectional LSTM over each utterance's real frames (zeros after them)."""

    def __init__(self, layernorm: bool) -> None:
        super().__init__(layernorm)
        self.lstm = nn.LSTM(ENCODER_DIM, ENCODER_DIM // 2, bidirectional=True, batch_first=True)

    def forward(self, x: torch.Tensor, paddings: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x, paddings)
        # An all-padding row (never in real data) gets length 1 so that packing accepts it.
        lengths = (1 - paddings).sum(1).long().clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(
            x, lengths, batch_first=True, enforce_sorted=False
        )
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out


class FeedForwardModule(Normalization):
    def __init__(self, layernorm: bool, use_tanh: bool) -> None:
        super().__init__(layernorm)
        self.lin = nn.Linear(ENCODER_DIM, ENCODER_DIM)
        self.use_tanh = use_tanh

    def forward(self, x: torch.Tensor, paddings: torch.Tensor, rate: float) -> torch.Tensor:
        x = self.lin(self.normalize(x, paddings))
        x = (torch.tanh(x) if self.use_tanh else F.relu(x)) * (1 - paddings)[:, :, None]
        return F.dropout(x, rate, self.training)


class DeepSpeech(nn.Module):
    def __init__(
        self,
        use_tanh: bool = False,
        enable_residual_connections: bool = True,
        layernorm_everywhere: bool = False,
        enable_decoder_layer_norm: bool = True,
        freq_mask_count: int = 2,
        time_mask_count: int = 10,
    ) -> None:
        super().__init__()
        self.specaug = SpecAugment(
            freq_mask_count=freq_mask_count,
            freq_mask_max_bins=27,
            time_mask_count=time_mask_count,
            time_mask_max_ratio=0.05,
        )
        self.preprocessor = LogMelFrontend()
        self.subsample = Subsample(use_tanh)
        self.lstms = nn.ModuleList(BatchRNN(layernorm_everywhere) for _ in range(NUM_LSTM_LAYERS))
        self.ffns = nn.ModuleList(
            FeedForwardModule(layernorm_everywhere, use_tanh) for _ in range(NUM_FFN_LAYERS)
        )
        self.ln = LayerNorm(ENCODER_DIM) if enable_decoder_layer_norm else None
        self.lin = nn.Linear(ENCODER_DIM, VOCAB_SIZE)
        self.residual = enable_residual_connections
        # The reference's Conformer init (LSTMs keep PyTorch's default uniform init).
        xavier_init(self)

    def forward(
        self, inputs: torch.Tensor, input_paddings: torch.Tensor, dropout_rate: float = 0.1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, paddings = self.preprocessor(inputs, input_paddings)
        if self.training:
            x = self.specaug(x, paddings)
        x, paddings = self.subsample(x, paddings, dropout_rate)
        for lstm in self.lstms:
            x = x + lstm(x, paddings) if self.residual else lstm(x, paddings)
        for ffn in self.ffns:
            x = (
                x + ffn(x, paddings, dropout_rate)
                if self.residual
                else ffn(x, paddings, dropout_rate)
            )
        if self.ln is not None:
            x = self.ln(x)
        return self.lin(x), paddings


class DeepSpeechWorkload(LibriSpeechTorchWorkload):
    def build_model(self) -> nn.Module:
        o = self.options
        return DeepSpeech(
            use_tanh=bool(o.get("use_tanh", False)),
            enable_residual_connections=bool(o.get("enable_residual_connections", True)),
            layernorm_everywhere=bool(o.get("layernorm_everywhere", False)),
            enable_decoder_layer_norm=bool(o.get("enable_decoder_layer_norm", True)),
            freq_mask_count=int(o.get("freq_mask_count", 2)),
            time_mask_count=int(o.get("time_mask_count", 10)),
        )
