"""DLRM-small in PyTorch, as the reference defines it, and its layer-norm / resnet / embed-init variants.

Module tree and parameter names follow the reference (`embedding_chunk_0..3`, `bot_mlp`,
`top_mlp`, `embed_ln`), so parameter names, shapes, order and types match it:

- Embedding: a 4,194,304 x 128 table held as 4 parameters of 1,048,576 rows, each uniform(0, 1)
  times 1 / sqrt(4,194,304) (times the `embedding_init_multiplier` instead, if given). An id is
  the categorical input (a float) cast to an integer, mod 4,194,304. The reference concatenates
  the 4 chunks (a 2 GB copy) in every forward pass; here each chunk serves its own rows, which
  gives the same outputs and the same gradients without the copy.
- DlrmSmall: bottom MLP 13 -> 512 -> 256 -> 128 (ReLU after each, then a LayerNorm in the
  layer-norm variant); the dot interaction of the bottom output and the 26 embeddings (the upper
  triangle, diagonal included, of the 27 x 27 Gram matrix: 378 values) concatenated after the
  bottom output (506 values); top MLP 506 -> 1024 -> 1024 -> 512 -> 256 -> 1 (ReLU, then LayerNorm
  in the variant, after every layer but the last), dropout after the 256-wide layer. The
  layer-norm variant also normalises each embedding (`embed_ln`). LayerNorm eps 1e-6.
- DLRMResNet (criteo1tb_resnet): bottom 13 -> 256 -> 256 -> 256 with residual connections on the
  2nd and 3rd layer; the 26 embeddings flattened (3,328 values) after the bottom output; top
  3,584 -> 256 -> 256 -> 256 -> 256 -> 1 with residual connections on the 2nd to 4th layer and
  dropout inside the 4th (before its residual sum). No dot interaction.
- Init: bottom Linear weights uniform(+-sqrt(6 / (fan_in + fan_out))), top Linear weights
  normal(0, sqrt(2 / (fan_in + fan_out))), every Linear bias normal(0, sqrt(1 / fan_out)).
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from algoperf import spec
from workloads.criteo1tb.workload import NUM_DENSE, NUM_SPARSE, VOCAB_SIZE, CriteoData
from workloads.torch_base import TorchWorkload

EMBED_DIM = 128
NUM_CHUNKS = 4
LAYER_NORM_EPS = 1e-6


class Dropout(nn.Module):
    """Dropout whose rate is given at call time (the reference's dropout position in the tree)."""

    def forward(self, x: torch.Tensor, dropout_rate: float = 0.0) -> torch.Tensor:
        return F.dropout(x, p=dropout_rate, training=self.training) if dropout_rate else x


def _takes_rate(module: nn.Module) -> bool:
    return "dropout_rate" in inspect.signature(module.forward).parameters


class DropoutSequential(nn.Sequential):
    """nn.Sequential that hands the call-time dropout rate to the modules that take one."""

    def forward(self, x: torch.Tensor, dropout_rate: float = 0.0) -> torch.Tensor:  # type: ignore[override]
        for module in self:
            x = module(x, dropout_rate=dropout_rate) if _takes_rate(module) else module(x)
        return x


class DenseBlock(nn.Module):
    """A block with an optional residual connection (`module` keeps the reference's names)."""

    def __init__(self, module: nn.Module, resnet: bool = False) -> None:
        super().__init__()
        self.module = module
        self.resnet = resnet

    def forward(self, x: torch.Tensor, dropout_rate: float = 0.0) -> torch.Tensor:
        out = (
            self.module(x, dropout_rate=dropout_rate)
            if _takes_rate(self.module)
            else self.module(x)
        )
        return out + x if self.resnet else out


def _init_bottom(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            limit = math.sqrt(6.0 / (m.in_features + m.out_features))
            nn.init.uniform_(m.weight, -limit, limit)
            nn.init.normal_(m.bias, 0.0, math.sqrt(1.0 / m.out_features))


def _init_top(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.in_features + m.out_features)))
            nn.init.normal_(m.bias, 0.0, math.sqrt(1.0 / m.out_features))


class ChunkedEmbedding(nn.Module):
    """Mixin: the vocab x 128 table as NUM_CHUNKS parameters `embedding_chunk_<i>` and its lookup."""

    vocab_size: int
    embed_dim: int

    def _make_chunks(self, vocab_size: int, embed_dim: int, init_multiplier: float | None) -> None:
        if vocab_size % NUM_CHUNKS:
            raise ValueError(f"vocab_size {vocab_size} must be a multiple of {NUM_CHUNKS}")
        self.vocab_size, self.embed_dim = vocab_size, embed_dim
        scale = 1.0 / math.sqrt(vocab_size) if init_multiplier is None else init_multiplier
        for i in range(NUM_CHUNKS):
            chunk = nn.Parameter(torch.empty(vocab_size // NUM_CHUNKS, embed_dim))
            with torch.no_grad():
                chunk.uniform_(0.0, 1.0).mul_(scale)
            self.register_parameter(f"embedding_chunk_{i}", chunk)

    def chunks(self) -> list[torch.Tensor]:
        return [getattr(self, f"embedding_chunk_{i}") for i in range(NUM_CHUNKS)]

    def embed(self, sparse: torch.Tensor) -> torch.Tensor:
        """(B, 26) float ids -> (B, 26, embed_dim): row (id mod vocab) of the concatenated chunks."""
        ids = sparse.to(torch.int32).reshape(-1).to(torch.int64) % self.vocab_size
        chunks = self.chunks()
        rows = chunks[0].shape[0]
        which = ids // rows
        out = chunks[0].new_zeros(len(ids), self.embed_dim)
        for c, table in enumerate(chunks):
            sel = torch.nonzero(which == c).squeeze(1)
            out = out.index_put((sel,), F.embedding(ids[sel] - c * rows, table))
        return out.reshape(*sparse.shape, self.embed_dim)


class DotInteract(nn.Module):
    """The bottom output and the embeddings: their pairwise dot products (upper triangle with the
    diagonal), after the bottom output."""

    rows: torch.Tensor
    cols: torch.Tensor

    def __init__(self, num_sparse_features: int) -> None:
        super().__init__()
        rows, cols = torch.triu_indices(num_sparse_features + 1, num_sparse_features + 1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        combined = torch.cat([dense.unsqueeze(1), sparse], dim=1)
        gram = torch.bmm(combined, combined.transpose(1, 2))
        return torch.cat([dense, gram[:, self.rows, self.cols]], dim=1)


class DlrmSmall(ChunkedEmbedding, nn.Module):
    def __init__(
        self,
        vocab_size: int = VOCAB_SIZE,
        num_dense_features: int = NUM_DENSE,
        num_sparse_features: int = NUM_SPARSE,
        mlp_bottom_dims: tuple[int, ...] = (512, 256, 128),
        mlp_top_dims: tuple[int, ...] = (1024, 1024, 512, 256, 1),
        embed_dim: int = EMBED_DIM,
        use_layer_norm: bool = False,
        embedding_init_multiplier: float | None = None,
    ) -> None:
        super().__init__()
        self.num_dense_features = num_dense_features
        self._make_chunks(vocab_size, embed_dim, embedding_init_multiplier)
        bottom: list[nn.Module] = []
        fan_in = num_dense_features
        for width in mlp_bottom_dims:
            bottom += [nn.Linear(fan_in, width), nn.ReLU()]
            if use_layer_norm:
                bottom.append(nn.LayerNorm(width, eps=LAYER_NORM_EPS))
            fan_in = width
        self.bot_mlp = nn.Sequential(*bottom)
        _init_bottom(self.bot_mlp)
        self.dot_interact = DotInteract(num_sparse_features)
        n = num_sparse_features + 1
        fan_in = mlp_bottom_dims[-1] + n * (n + 1) // 2  # 128 + 378 = 506
        top: list[nn.Module] = []
        for i, width in enumerate(mlp_top_dims):
            top.append(nn.Linear(fan_in, width))
            if i < len(mlp_top_dims) - 1:
                top.append(nn.ReLU())
                if use_layer_norm:
                    top.append(nn.LayerNorm(width, eps=LAYER_NORM_EPS))
            if i == len(mlp_top_dims) - 2:
                top.append(Dropout())
            fan_in = width
        self.top_mlp = DropoutSequential(*top)
        self.embed_ln = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS) if use_layer_norm else None
        _init_top(self.top_mlp)

    def forward(self, x: torch.Tensor, dropout_rate: float = 0.0) -> torch.Tensor:
        dense, sparse = x[:, : self.num_dense_features], x[:, self.num_dense_features :]
        embedded_dense = self.bot_mlp(dense)
        embedded_sparse = self.embed(sparse)
        if self.embed_ln is not None:
            embedded_sparse = self.embed_ln(embedded_sparse)
        return self.top_mlp(
            self.dot_interact(embedded_dense, embedded_sparse), dropout_rate=dropout_rate
        )


class DLRMResNet(ChunkedEmbedding, nn.Module):
    def __init__(
        self,
        vocab_size: int = VOCAB_SIZE,
        num_dense_features: int = NUM_DENSE,
        num_sparse_features: int = NUM_SPARSE,
        mlp_bottom_dims: tuple[int, ...] = (256, 256, 256),
        mlp_top_dims: tuple[int, ...] = (256, 256, 256, 256, 1),
        embed_dim: int = EMBED_DIM,
        embedding_init_multiplier: float | None = None,
    ) -> None:
        super().__init__()
        self.num_dense_features = num_dense_features
        self._make_chunks(vocab_size, embed_dim, embedding_init_multiplier)
        blocks: list[nn.Module] = []
        fan_in = num_dense_features
        for i, width in enumerate(mlp_bottom_dims):
            blocks.append(
                DenseBlock(nn.Sequential(nn.Linear(fan_in, width), nn.ReLU()), resnet=i > 0)
            )
            fan_in = width
        self.bot_mlp = nn.Sequential(*blocks)
        _init_bottom(self.bot_mlp)
        fan_in = num_sparse_features * embed_dim + mlp_bottom_dims[-1]
        n = len(mlp_top_dims)
        blocks = []
        for i, width in enumerate(mlp_top_dims):
            layers: list[nn.Module] = [nn.Linear(fan_in, width)]
            if i < n - 1:
                layers.append(nn.ReLU())
            if i == n - 2:
                layers.append(Dropout())
            blocks.append(DenseBlock(DropoutSequential(*layers), resnet=0 < i < n - 1))
            fan_in = width
        self.top_mlp = DropoutSequential(*blocks)
        _init_top(self.top_mlp)

    def forward(self, x: torch.Tensor, dropout_rate: float = 0.0) -> torch.Tensor:
        dense, sparse = x[:, : self.num_dense_features], x[:, self.num_dense_features :]
        embedded_dense = self.bot_mlp(dense)
        embedded_sparse = self.embed(sparse).reshape(len(x), -1)
        return self.top_mlp(
            torch.cat([embedded_dense, embedded_sparse], dim=1), dropout_rate=dropout_rate
        )


def build(options: dict[str, Any], vocab_size: int = VOCAB_SIZE) -> nn.Module:
    """The model of a workload's model_options (`resnet`, `use_layer_norm`, `embedding_init_multiplier`)."""
    multiplier = options.get("embedding_init_multiplier")
    if options.get("resnet"):
        return DLRMResNet(vocab_size=vocab_size, embedding_init_multiplier=multiplier)
    return DlrmSmall(
        vocab_size=vocab_size,
        use_layer_norm=bool(options.get("use_layer_norm")),
        embedding_init_multiplier=multiplier,
    )


def output_layer_names(model: nn.Module) -> tuple[str, ...]:
    """The names of the last Linear's weight and bias (the model's output layer)."""
    last = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    return (f"{last}.weight", f"{last}.bias")


class Criteo1TbWorkload(CriteoData, TorchWorkload):
    def build_model(self) -> nn.Module:
        # `vocab_size`: a smaller table with the same code (the JAX parity tests use one).
        model = build(self.options, vocab_size=int(self.options.get("vocab_size", VOCAB_SIZE)))
        self._output_names = output_layer_names(model)
        return model

    def is_output_params(self, param_key: str) -> bool:
        return param_key.removeprefix("module.") in getattr(self, "_output_names", ())

    def loss_fn(
        self,
        label_batch: torch.Tensor,
        logits_batch: torch.Tensor,
        mask_batch: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, torch.Tensor]:
        """Per-example sigmoid cross-entropy of the (B, 1) logits against the (B,) click labels.

        As the reference's, this loss ignores `label_smoothing`.
        """
        del label_smoothing
        return super().loss_fn(label_batch.reshape(-1), logits_batch.reshape(-1), mask_batch)

    def eval_batch(
        self, params: spec.ParameterContainer, model_state: Any, batch: dict[str, Any], rng: Any
    ) -> dict[str, Any]:
        """The summed loss over the batch's real examples (metric: its mean over the split)."""
        logits, _ = self.model_fn(
            params, batch, model_state, spec.ForwardPassMode.EVAL, rng, update_batch_norm=False
        )
        loss = self.loss_fn(batch["targets"], logits, batch["weights"])["summed"]
        return {"loss": loss.to(torch.float64)}
