"""The PyTorch adapter: device and process setup, device sync, seeding, RNG state, parameter types.

Imported only when a PyTorch run starts (never by the core at module level).
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from algoperf import spec


def setup() -> tuple[bool, int, torch.device, int]:
    """(use_ddp, rank, device, n_gpus) from the torchrun environment, as AlgoPerf's pytorch_setup."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    use_ddp = world_size > 1
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device(f"cuda:{local_rank}")
        n_gpus = torch.cuda.device_count()
    else:
        device = torch.device("cpu")
        n_gpus = world_size if use_ddp else 1
    return use_ddp, rank, device, n_gpus


def init_distributed() -> None:
    """Joins the process group torchrun describes: NCCL on CUDA, gloo on the CPU."""
    use_ddp, _, device, _ = setup()
    if use_ddp and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def synchronize(device: torch.device | None = None) -> None:
    """Waits for the device to finish queued work, so a timestamp taken next is honest."""
    if device is None:
        device = setup()[2]
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def max_over_ranks(value: float) -> float:
    """The largest value over all processes (a step ends when the slowest rank ends)."""
    if world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG a trial can draw from: python, numpy, torch (CPU and CUDA)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


_NORM_TYPES = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm, torch.nn.modules.instancenorm._InstanceNorm)


def param_types(model: torch.nn.Module) -> dict[str, spec.ParameterType]:
    """The ParameterType of every named parameter, from the module that owns it."""
    P = spec.ParameterType
    types: dict[str, spec.ParameterType] = {}
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            is_bias = param_name.endswith("bias")
            if isinstance(module, _NORM_TYPES):
                t = P.BATCH_NORM_BIAS if is_bias else P.BATCH_NORM_SCALE
            elif isinstance(module, torch.nn.LayerNorm) or "norm" in type(module).__name__.lower():
                t = P.LAYER_NORM_BIAS if is_bias else P.LAYER_NORM_SCALE
            elif isinstance(module, (torch.nn.Embedding, torch.nn.EmbeddingBag)) or "embed" in param_name:
                t = P.EMBEDDING
            elif isinstance(module, torch.nn.MultiheadAttention):
                t = P.ATTENTION_BIAS if is_bias else (P.ATTENTION_QKV if "in_proj" in param_name else P.WEIGHT)
            elif isinstance(module, torch.nn.modules.conv._ConvNd):
                t = P.BIAS if is_bias else P.CONV_WEIGHT
            else:
                t = P.BIAS if is_bias else P.WEIGHT
            types[full] = t
    return types


def param_shapes(model: torch.nn.Module) -> dict[str, spec.ShapeTuple]:
    return {name: spec.ShapeTuple(tuple(p.shape)) for name, p in model.named_parameters()}


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel / DataParallel wrapper."""
    return getattr(model, "module", model)


def params_finite(model: torch.nn.Module) -> bool:
    """Whether every parameter is finite (checked at evals only: it costs a pass over the model)."""
    with torch.no_grad():
        return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def save(obj: Any, path: str) -> None:
    torch.save(obj, path)


def load(path: str) -> Any:
    return torch.load(path, map_location=setup()[2], weights_only=False)


def is_rank_zero() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def agree(flags: list[bool]) -> list[bool]:
    """Each flag true on every rank if it is true on any (one collective for all of them).

    Ranks must take the same decisions at the same step (evaluate, stop, checkpoint) or the
    next collective deadlocks; their clocks and signals differ slightly, so they agree here.
    """
    if world_size() == 1:
        return flags
    t = torch.tensor([1 if f else 0 for f in flags], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]
