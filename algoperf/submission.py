"""Finding, loading and checking a submission module (RULES.md, API).

A submission is named (`adamw` -> `submissions/adamw/`) or given by path: a `.py` file, or a
folder holding `<framework>_submission.py` (or `submission.py`) and `tuning_search_space.json`.
Every required function is checked for presence and parameter names before anything is built.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

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
    stem = path.stem
    for fw in FRAMEWORKS:
        if stem.startswith(fw):
            if framework and framework != fw:
                raise SubmissionError(f"{path} is a {fw} submission but --framework {framework} was asked for.")
            return fw
    return framework or "pytorch"


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


def load(source: SubmissionSource) -> ModuleType:
    """Imports the submission module and checks its functions against the API."""
    module_name = f"algoperf_submission_{abs(hash(str(source.path))) % 10**8}"
    try:
        rel = source.path.relative_to(SUBMISSIONS_ROOT.parent)
        module_name = ".".join(rel.with_suffix("").parts)
    except ValueError:
        pass
    if module_name in sys.modules:
        module = sys.modules[module_name]
    else:
        spec_ = importlib.util.spec_from_file_location(module_name, source.path)
        if spec_ is None or spec_.loader is None:
            raise SubmissionError(f"Cannot import {source.path} as a Python module.")
        module = importlib.util.module_from_spec(spec_)
        sys.modules[module_name] = module
        try:
            spec_.loader.exec_module(module)
        except Exception as e:
            del sys.modules[module_name]
            raise SubmissionError(f"Importing submission {source.path} failed: {type(e).__name__}: {e}") from e
    check(module, source.path)
    return module


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


def batch_size(module: ModuleType, workload_name: str, base_name: str) -> int:
    """The submission's global batch size; a variant falls back to its base name on ValueError."""
    try:
        return int(module.get_batch_size(workload_name))
    except (ValueError, KeyError):
        if base_name == workload_name:
            raise
        return int(module.get_batch_size(base_name))
