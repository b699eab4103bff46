"""Framework adapters: the only way the runner, the clock and checkpoints reach a framework.

A backend is a module (`algoperf.backends.pytorch`, `algoperf.backends.jax`) that satisfies the
`Backend` protocol below. `get(framework)` imports one only when a run of that framework starts,
so `algoperf score` and `algoperf --help` work without torch or jax.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

FRAMEWORKS = ("pytorch", "jax")


@dataclass(frozen=True)
class Distributed:
    """Where this process sits in a multi-process run (all defaults: a single process)."""

    num_processes: int = 1
    process_id: int = 0
    coordinator: str | None = None  # host:port of process 0 (JAX) / the rendezvous (torch)
    local_devices: int | None = None  # devices (or processes, for torch) per node


class Backend(Protocol):
    """What the core needs from a framework. Every state crosses this boundary as a pytree of
    numpy arrays, so checkpoints and the runner stay framework-free."""

    name: str

    def init_distributed(self, distributed: Distributed | None = None) -> None:
        """Joins the process group / multi-process runtime when the run has several processes."""

    def set_threads(self, threads: int) -> int:
        """Sets the intra-op thread count; returns the count in force."""

    def device_facts(self) -> dict[str, Any]:
        """Devices, their kind and count, framework version: recorded in meta_data."""

    def seed_everything(self, seed: int) -> None: ...

    def sync(self, outputs: Any = None) -> None:
        """Waits until the device has finished the work that produced `outputs` (or all work)."""

    def world_size(self) -> int: ...

    def is_rank_zero(self) -> bool: ...

    def barrier(self) -> None: ...

    def agree(self, flags: list[bool], elapsed: float = 0.0) -> tuple[list[bool], float]:
        """Each flag true on every process if it is true on any, and the largest `elapsed` over
        processes (a step ends when the slowest process ends): one collective for all."""

    def rng_state(self) -> Any: ...

    def set_rng_state(self, state: Any) -> None: ...

    def to_numpy(self, leaf: Any) -> Any:
        """A framework leaf (tensor, array) as a saveable framework-free value; others unchanged."""

    def from_numpy(self, fresh: Any, saved: Any) -> Any:
        """The saved value of a leaf, placed as `fresh` is (device, dtype, sharding)."""

    def params_finite(self, params: Any) -> bool: ...

    def count_params(self, params: Any) -> int: ...


class FrameworkUnavailableError(ImportError):
    """The framework a run needs is not installed: the user's to fix (one line, exit code 2)."""


def get(framework: str) -> Any:
    """The backend module of `framework`, imported now."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; expected 'pytorch' or 'jax'")
    try:
        return importlib.import_module(f"algoperf.backends.{framework}")
    except ImportError as e:
        raise FrameworkUnavailableError(
            f"The {framework} backend is not available ({e}). Install it with "
            f"`pip install -e '.[{framework}]'` (`make install` installs both)."
        ) from e


def available(framework: str) -> bool:
    """Whether `framework` can be imported here, without importing it."""
    import importlib.util
    import sys

    module = {"pytorch": "torch", "jax": "jax"}[framework]
    if module in sys.modules:
        return sys.modules[module] is not None  # None: imports of it are blocked
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
