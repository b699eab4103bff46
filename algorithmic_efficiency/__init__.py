"""AlgoPerf's earlier package name: `algorithmic_efficiency.X` is the very module `algoperf.X`.

Submissions written for AlgoPerf up to early 2025 import `algorithmic_efficiency` (`from
algorithmic_efficiency import spec`, `from algorithmic_efficiency.pytorch_utils import
pytorch_setup`); the reference renamed the package `algoperf` later. An import finder maps every
`algorithmic_efficiency.<name>` to the already imported (or newly imported) `algoperf.<name>`:
one module object under both names, so `isinstance` checks across the two names hold.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any

import algoperf

OLD, NEW = "algorithmic_efficiency", "algoperf"


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        # The module is algoperf's, already executed: nothing to run twice.
        return None


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(OLD + "."):
            return None
        new_name = NEW + fullname[len(OLD):]
        if importlib.util.find_spec(new_name) is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new_name))


if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _AliasFinder())

# `import algorithmic_efficiency` itself gives the algoperf package (its attributes, its
# submodules as they are imported).
sys.modules[OLD] = algoperf
