"""The PyTorch adapter: device and process setup, device sync, seeding, RNG state, parameter types.

Imported only when a PyTorch run starts (never by the core at module level).
"""

from __future__ import annotations

import datetime
import os
import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from algoperf import spec
from algoperf.checkpoint import FrameworkArray

name = "pytorch"
# How long a collective may wait for a missing rank before the trial ends as `error` (a rank that
# died or hangs must never hang the others); ALGOPERF_DDP_TIMEOUT_S overrides it.
DDP_TIMEOUT_S = float(os.environ.get("ALGOPERF_DDP_TIMEOUT_S", "600"))


def setup() -> tuple[bool, int, torch.device, int]:
    """(use_ddp, rank, device, n_gpus) from the torchrun environment, as AlgoPerf's pytorch_setup.

    As the reference, DDP is on whenever torchrun set LOCAL_RANK (even for one process), so a
    submission that builds a distributed configuration under `--devices N` finds a process group.
    """
    use_ddp = "LOCAL_RANK" in os.environ
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device(f"cuda:{local_rank}")
        n_gpus = torch.cuda.device_count()
    else:
        device = torch.device("cpu")
        n_gpus = world_size if use_ddp else 1
    return use_ddp, rank, device, n_gpus


_DEVICE: torch.device | None = None


def device() -> torch.device:
    """This process's device, read from the environment once."""
    global _DEVICE
    if _DEVICE is None:
        _DEVICE = setup()[2]
    return _DEVICE


def init_distributed(distributed: Any = None) -> None:
    """Joins the process group torchrun describes.

    One group serves both the CPU control tensors (gloo) and, on GPUs, the model (NCCL): the
    runner's per-step agreement and timing all-reduce small CPU tensors, DDP reduces gradients on
    the device.
    """
    use_ddp, dev = setup()[0], device()
    if use_ddp and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        backend = "cpu:gloo,cuda:nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=DDP_TIMEOUT_S))


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def set_threads(threads: int) -> int:
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()


def device_facts() -> dict[str, Any]:
    dev = device()
    facts: dict[str, Any] = {
        "framework": "pytorch", "version": torch.__version__, "device": str(dev),
        "world_size": world_size(), "intra_op_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        facts["accelerators"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        facts["cuda"] = torch.version.cuda
        facts["cudnn"] = torch.backends.cudnn.version()
    return facts


def sync(outputs: Any = None) -> None:
    """Waits for the device to finish queued work, so a timestamp taken next is honest."""
    if _DEVICE is not None and _DEVICE.type == "cuda":
        torch.cuda.synchronize(_DEVICE)


def synchronize(dev: torch.device | None = None) -> None:
    if (dev or device()).type == "cuda":
        torch.cuda.synchronize(dev or device())


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
        "torch": torch.get_rng_state().numpy().copy(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.numpy().copy() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(torch.from_numpy(np.array(state["torch"])))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.from_numpy(np.array(s)) for s in state["cuda"]])


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


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in unwrap(model).parameters())


def to_numpy(leaf: Any) -> Any:
    """A tensor as a FrameworkArray (bfloat16, which numpy lacks, as its 16 bits).

    The array is the device-to-host copy of a GPU tensor and a view of a CPU tensor's memory, not
    a second copy: a checkpoint is captured and written between two steps, before anything
    changes the tensor, and `from_numpy` copies on the way back. On a ViT-B/16 + AdamW checkpoint
    (1 GB) the copy was a quarter of the checkpoint's CPU time (scripts/bench_checkpoint.py)."""
    if not isinstance(leaf, torch.Tensor):
        return leaf
    t = leaf.detach().cpu()
    dtype = str(t.dtype).removeprefix("torch.")
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return FrameworkArray("pytorch", dtype, t.numpy())


def from_numpy(fresh: Any, saved: Any) -> Any:
    if not isinstance(saved, FrameworkArray):
        return saved
    t = torch.from_numpy(np.array(saved.value))
    if saved.dtype == "bfloat16":
        t = t.view(torch.bfloat16)
    if isinstance(fresh, torch.Tensor):
        return t.to(device=fresh.device, dtype=fresh.dtype)
    # No fresh tensor to copy placement from (e.g. an optimizer state not yet built): the
    # optimizer's load_state_dict moves it next to its parameter.
    return t


def is_rank_zero() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def agree(flags: list[bool], elapsed: float = 0.0) -> tuple[list[bool], float]:
    """Each flag true on every rank if it is true on any, and the largest `elapsed` over ranks.

    Ranks must take the same decisions at the same step (evaluate, stop, checkpoint) or the
    next collective deadlocks; their clocks and signals differ slightly, so they agree here. A
    step ends when the slowest rank ends, so every rank charges the largest step time: one
    all-reduce (MAX) of a small CPU tensor carries both.
    """
    if world_size() == 1:
        return flags, elapsed
    t = torch.tensor([elapsed, *(1.0 if f else 0.0 for f in flags)], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    values = t.tolist()
    return [v > 0.5 for v in values[1:]], values[0]
