"""AlgoPerf's `algoperf.pytorch_utils`, for submissions that import it."""

from __future__ import annotations

from typing import Any


def pytorch_setup() -> tuple[bool, int, Any, int]:
    """(use_pytorch_ddp, rank, device, n_gpus), as the reference returns them."""
    from algoperf.backends import pytorch

    return pytorch.setup()


def pytorch_init(use_pytorch_ddp: bool, rank: int, profiler: Any = None) -> None:
    """Joins the process group when running under torchrun (the reference's pytorch_init)."""
    from algoperf.backends import pytorch

    if use_pytorch_ddp:
        pytorch.init_distributed()


def sync_ddp_time(time: float, device: Any = None) -> float:
    from algoperf.backends import pytorch

    return pytorch.max_over_ranks(time)
