"""Search spaces, seeded quasi-random sampling, rule sets (RULES.md, Tuning).

A search space is either a dict `{name: {"min", "max", "scaling"} | {"feasible_points": [...]}}`
(sampled with a scrambled Halton sequence) or a list of dicts (one per trial, used as given).
**(ours)** The Halton sequence of a study is seeded from (experiment seed, workload, study): the
same command gives the same points, studies differ, and trial i always gets point i, in whatever
process it runs (the sequence is deterministic, so a trial does not depend on which others ran).
"""

from __future__ import annotations

import collections
import json
import math
from pathlib import Path
from typing import Any

from scipy.stats import qmc

from algoperf import rulesets
from algoperf.random_utils import derive_seed


class SearchSpaceError(ValueError):
    pass


# Rule-set facts live in one place (algoperf/rulesets.py); these names are kept for callers.
RuleSet = rulesets.RuleSet
RULE_SETS = rulesets.PRESETS


def budget_multiplier(ruleset: str, rules: str = rulesets.DEFAULT) -> float:
    """The factor on the workload's budget under `ruleset` (external/self) of version `rules`."""
    return rulesets.get(rules).budget_multiplier(ruleset)


def load_search_space(path: str | Path) -> dict[str, Any] | list[dict[str, Any]]:
    path = Path(path)
    try:
        space = json.loads(path.read_text())
    except FileNotFoundError:
        raise SearchSpaceError(f"Search space file {path} does not exist.") from None
    except json.JSONDecodeError as e:
        raise SearchSpaceError(
            f"Search space file {path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})."
        ) from None
    validate(space, str(path))
    return space


def validate(space: Any, where: str = "search space") -> None:
    """Raises SearchSpaceError naming the first problem found."""
    if isinstance(space, list):
        if not space or not all(isinstance(p, dict) for p in space):
            raise SearchSpaceError(f"{where}: a list search space must be a non-empty list of objects.")
        return
    if not isinstance(space, dict) or not space:
        raise SearchSpaceError(
            f"{where}: expected an object {{name: {{min, max, scaling}} | {{feasible_points}}}} or a list of points."
        )
    for name, spec in space.items():
        if not isinstance(spec, dict):
            raise SearchSpaceError(f"{where}: {name!r} must be an object, got {spec!r}.")
        if "feasible_points" in spec:
            points = spec["feasible_points"]
            if not isinstance(points, list) or not points:
                raise SearchSpaceError(f"{where}: {name!r} feasible_points must be a non-empty list.")
            continue
        if "min" not in spec or "max" not in spec:
            raise SearchSpaceError(
                f"{where}: {name!r} needs 'min' and 'max' (and optional 'scaling') or 'feasible_points'."
            )
        lo, hi = spec["min"], spec["max"]
        if not all(isinstance(v, (int, float)) for v in (lo, hi)) or lo > hi:
            raise SearchSpaceError(f"{where}: {name!r} needs numbers with min <= max, got min={lo!r} max={hi!r}.")
        scaling = spec.get("scaling", "linear")
        if scaling not in ("linear", "log"):
            raise SearchSpaceError(f"{where}: {name!r} scaling must be 'linear' or 'log', got {scaling!r}.")
        if scaling == "log" and lo <= 0:
            raise SearchSpaceError(f"{where}: {name!r} has log scaling but min={lo!r} is not positive.")


def _scale(spec: dict[str, Any], u: float) -> Any:
    if "feasible_points" in spec:
        points = spec["feasible_points"]
        return points[min(int(u * len(points)), len(points) - 1)]
    lo, hi = float(spec["min"]), float(spec["max"])
    if spec.get("scaling", "linear") == "log":
        return math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
    return lo + u * (hi - lo)


def sample(
    space: dict[str, Any] | list[dict[str, Any]], trial: int, seed: int, workload: str, study: int
) -> dict[str, Any]:
    """The hyperparameters of trial `trial` (1-based) of `study` (0-based)."""
    if trial < 1:
        raise SearchSpaceError(f"trial indices start at 1, got {trial}")
    validate(space)
    if isinstance(space, list):
        if trial > len(space):
            raise SearchSpaceError(
                f"the search space lists {len(space)} points, so there is no trial {trial}."
            )
        return dict(space[trial - 1])
    names = sorted(space)
    halton = qmc.Halton(d=len(names), scramble=True, seed=derive_seed(seed, "search", workload, study))
    if trial > 1:
        halton.fast_forward(trial - 1)
    u = halton.random(1)[0]
    return {name: _scale(space[name], float(ui)) for name, ui in zip(names, u)}


class MissingHyperparameterError(AttributeError):
    """A submission read a hyperparameter that the trial's search space does not define.

    An AttributeError, as reading a missing field of the reference's namedtuple is, so that
    `hasattr(hyperparameters, "grad_clip")` and `getattr(hyperparameters, name, default)` keep their
    meaning for optional knobs; a plain read fails with a message naming the file to fix.
    """


def as_hyperparameters(values: dict[str, Any], source: str | Path | None = None) -> Any:
    """An immutable object with attribute access, as the reference's namedtuple.

    Reading a name that `values` lacks raises MissingHyperparameterError naming the hyperparameter
    and `source` (the search-space file the values were drawn from): under external tuning a
    typo in a search space must stop the trial, not tune nothing (RULES.md, Tuning).
    """
    where = f"the search space {source}" if source is not None else "this trial's hyperparameters"
    base = collections.namedtuple("Hyperparameters", sorted(values))  # type: ignore[misc]

    def missing(self: Any, name: str) -> Any:
        if name.startswith("_"):  # copy/pickle protocol probes, namedtuple internals
            raise AttributeError(name)
        defined = ", ".join(self._fields) or "nothing"
        raise MissingHyperparameterError(
            f"hyperparameter {name!r} is not defined in {where} (it defines: {defined}); add it "
            f'there, e.g. "{name}": {{"feasible_points": [<value>]}}'
        )

    cls = type("Hyperparameters", (base,), {"__slots__": (), "__getattr__": missing})
    return cls(**values)
