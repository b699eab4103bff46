"""Finding, loading and checking a submission module (RULES.md, API).

A submission is named (`adamw` -> `submissions/adamw/`) or given by path: a `.py` file, or a
folder holding `<framework>_submission.py` (or `submission.py`) and `tuning_search_space.json`.
Every required function is checked for presence and parameter names before anything is built.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from algoperf import spec

SUBMISSIONS_ROOT = Path(__file__).resolve().parent.parent / "submissions"
FRAMEWORKS = ("pytorch", "jax")


class SubmissionError(ValueError):
    pass


@dataclass(frozen=True)
class SubmissionSource:
    name: str
    path: Path  # the module file
    framework: str
    search_space: Path | None


def known_submissions() -> list[str]:
    if not SUBMISSIONS_ROOT.is_dir():
        return []
    return sorted(
        p.name
        for p in SUBMISSIONS_ROOT.iterdir()
        if p.is_dir() and any((p / f"{fw}_submission.py").exists() for fw in FRAMEWORKS)
    )


def _framework_of(path: Path, framework: str | None) -> str:
    """The framework a submission file is written for: from its name (`jax_submission.py`,
    `pytorch_submission.py`), else from what it imports, else --framework, else pytorch."""
    stem = path.stem
    for fw in FRAMEWORKS:
        if stem.startswith(fw):
            if framework and framework != fw:
                raise SubmissionError(f"{path} is a {fw} submission but --framework {framework} was asked for.")
            return fw
    if framework:
        return framework
    return _framework_from_imports(path) or "pytorch"


def _framework_from_imports(path: Path) -> str | None:
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            roots.add(node.module.split(".")[0])
    uses_torch = "torch" in roots
    uses_jax = bool(roots & {"jax", "flax", "optax"})
    if uses_jax and not uses_torch:
        return "jax"
    if uses_torch:
        return "pytorch"
    return None


def resolve(name_or_path: str, framework: str | None = None) -> SubmissionSource:
    """The submission module file for a name or a path, and its framework."""
    path = Path(name_or_path)
    looks_like_path = path.suffix == ".py" or "/" in name_or_path or path.exists()
    if not looks_like_path:
        folder = SUBMISSIONS_ROOT / name_or_path
        if not folder.is_dir():
            known = known_submissions()
            close = difflib.get_close_matches(name_or_path, known, n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise SubmissionError(
                f"Unknown submission {name_or_path!r}.{hint} Known: {', '.join(known)}. "
                "A submission can also be a path to a .py file or to a folder holding one."
            )
        path = folder
    if path.is_dir():
        candidates = [path / f"{fw}_submission.py" for fw in ([framework] if framework else FRAMEWORKS)]
        candidates.append(path / "submission.py")
        found = next((c for c in candidates if c.exists()), None)
        if found is None:
            raise SubmissionError(
                f"Submission folder {path} holds no {' or '.join(c.name for c in candidates)}."
            )
        module_path = found
    else:
        module_path = path
    if not module_path.exists():
        raise SubmissionError(f"Submission file {module_path} does not exist.")
    space = module_path.parent / "tuning_search_space.json"
    return SubmissionSource(
        name=module_path.parent.name if module_path.stem.endswith("submission") else module_path.stem,
        path=module_path.resolve(),
        framework=_framework_of(module_path, framework),
        search_space=space if space.exists() else None,
    )


class SubmissionImportError(Exception):
    """Importing a submission raised: a trial error (summary.json), not a usage error."""

    def __init__(self, source: SubmissionSource, error: BaseException) -> None:
        self.error = error
        self.location = location_in(error, source.path.parent)
        where = f" at {self.location}" if self.location else ""
        super().__init__(f"Importing submission {source.path} failed{where}: "
                         f"{type(error).__name__}: {error}")


def location_in(error: BaseException, folder: Path) -> str | None:
    """`file:line` of the innermost traceback frame inside `folder` (the submission's code)."""
    import traceback

    found = None
    for frame in traceback.extract_tb(error.__traceback__):
        try:
            Path(frame.filename).resolve().relative_to(folder.resolve())
        except ValueError:
            continue
        found = f"{frame.filename}:{frame.lineno}"
    if found is None and isinstance(error, SyntaxError) and error.filename:
        found = f"{error.filename}:{error.lineno}"
    return found


def package_root(path: Path) -> tuple[Path, str]:
    """(the folder to put on sys.path, the module's dotted name), as the reference imports a
    submission: walking up the folders that are packages (hold `__init__.py`), so a submission
    inside a repository tree imports its helpers by their full dotted path from that tree's root.
    """
    parts = [path.stem]
    folder = path.parent
    while (folder / "__init__.py").exists():
        parts.insert(0, folder.name)
        folder = folder.parent
    return folder, ".".join(parts)


def _forget_other_tree(top: str, root: Path) -> None:
    """Drops modules of another tree that took the same top-level package name (the harness's own
    baselines' `submissions`, or another submission's repository) from the import cache."""
    loaded = sys.modules.get(top)
    paths = [Path(p).resolve() for p in getattr(loaded, "__path__", [])] if loaded else []
    file = getattr(loaded, "__file__", None)
    if loaded is None or (root / top).resolve() in paths or (
            file and Path(file).resolve().parent == root.resolve()):
        return
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        del sys.modules[name]


def load(source: SubmissionSource) -> ModuleType:
    """Imports the submission module and checks its functions against the API.

    A file inside a package tree is imported by its dotted name with the tree's root first on
    `sys.path` (the reference's way); a lone file under a name of its own, with its folder on
    `sys.path` so that it can import its sibling modules. Raises SubmissionError when the API is
    not followed and SubmissionImportError when importing the code raised.
    """
    root, dotted = package_root(source.path)
    in_package = "." in dotted
    if str(root) in sys.path:
        sys.path.remove(str(root))
    sys.path.insert(0, str(root))
    if in_package:
        _forget_other_tree(dotted.split(".")[0], root)
        module_name = dotted
    else:
        module_name = f"algoperf_submission_{hashlib.sha1(str(source.path).encode()).hexdigest()[:12]}"
    module = sys.modules.get(module_name)
    if module is None or Path(getattr(module, "__file__", "")).resolve() != source.path:
        try:
            if in_package:
                module = importlib.import_module(module_name)
            else:
                spec_ = importlib.util.spec_from_file_location(module_name, source.path)
                if spec_ is None or spec_.loader is None:
                    raise SubmissionError(f"Cannot import {source.path} as a Python module.")
                module = importlib.util.module_from_spec(spec_)
                sys.modules[module_name] = module
                spec_.loader.exec_module(module)
        except SubmissionError:
            raise
        except Exception as e:
            sys.modules.pop(module_name, None)
            raise SubmissionImportError(source, e) from e
    check(module, source.path)
    return module


def check_file(source: SubmissionSource) -> None:
    """Checks a submission before any trial folder exists: API problems raise SubmissionError
    (a usage error); code that fails to import is left for the trial to report as its error."""
    try:
        load(source)
    except SubmissionImportError:
        pass


def check(module: ModuleType, path: Path) -> None:
    problems = []
    for fn_name, params in spec.SUBMISSION_FUNCTIONS.items():
        fn = getattr(module, fn_name, None)
        if fn is None or not callable(fn):
            problems.append(f"function {fn_name}({', '.join(params)}) is missing")
            continue
        problems.extend(_signature_problems(fn_name, fn, params))
    for fn_name, params in spec.OPTIONAL_SUBMISSION_FUNCTIONS.items():
        fn = getattr(module, fn_name, None)
        if fn is not None:
            problems.extend(_signature_problems(fn_name, fn, params))
    if problems:
        raise SubmissionError(
            f"Submission {path} does not follow the API (RULES.md, API): "
            + "; ".join(problems)
            + ". Fix the function definitions to take these keyword parameters."
        )


def _signature_problems(fn_name: str, fn: object, params: tuple[str, ...]) -> list[str]:
    sig = inspect.signature(fn)  # type: ignore[arg-type]
    accepts_kwargs = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    missing = [p for p in params if p not in sig.parameters]
    if missing and not accepts_kwargs:
        return [f"{fn_name} lacks parameter(s) {', '.join(missing)}"]
    extra = [
        n
        for n, p in sig.parameters.items()
        if n not in params and n != "train_state" and p.default is p.empty
        and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]
    if extra:
        return [f"{fn_name} has required parameter(s) {', '.join(extra)} the harness does not pass"]
    return []


def takes_train_state(module: ModuleType) -> bool:
    return "train_state" in inspect.signature(module.update_params).parameters


def batch_size(module: ModuleType, info: Any, notice: Any = None) -> int:
    """The submission's global batch size for a workload (RULES.md, API).

    A variant falls back to its base name when the submission does not know the variant. A
    development workload (mnist1d, mnist, cifar) that the submission does not know gets the
    workload's default batch size, with one line through `notice`: no public submission knows
    mnist1d, and they should still run on the default workload.
    """
    try:
        return int(module.get_batch_size(info.name))
    except (ValueError, KeyError, NotImplementedError) as first:
        if info.base_name != info.name:
            try:
                return int(module.get_batch_size(info.base_name))
            except (ValueError, KeyError, NotImplementedError):
                pass
        if info.development and info.default_batch_size:
            if notice is not None:
                notice(f"get_batch_size({info.name!r}) raised {type(first).__name__}: the submission "
                       f"does not know this development workload; using its default batch size "
                       f"{info.default_batch_size}.")
            return int(info.default_batch_size)
        raise
