"""Framework adapters. `get(framework)` imports a framework only when a run of it starts."""

from __future__ import annotations

import importlib
from types import ModuleType


def get(framework: str) -> ModuleType:
    if framework not in ("pytorch", "jax"):
        raise ValueError(f"unknown framework {framework!r}; expected 'pytorch' or 'jax'")
    try:
        return importlib.import_module(f"algoperf.backends.{framework}")
    except ImportError as e:
        extra = "pytorch" if framework == "pytorch" else "jax"
        raise ImportError(
            f"The {framework} backend is not available ({e}). Install it with "
            f"`pip install -e '.[{extra}]'` (make install does this for pytorch)."
        ) from e
