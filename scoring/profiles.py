"""Performance profiles and the benchmark score (RULES.md, Scoring; Dolan & More 2002).

All functions take a times matrix T (submissions x workloads, seconds, inf = not reached) as a
numpy array, with an optional leading batch axis for the bootstrap.
"""

from __future__ import annotations

import numpy as np

from scoring.rules import ScoringRules


def apply_cutoff(times: np.ndarray, factor: float) -> np.ndarray:
    """Times more than `factor` x the best submission's on their workload become infinite."""
    best = np.min(times, axis=-2, keepdims=True)
    with np.errstate(invalid="ignore"):
        return np.where(times > factor * best, np.inf, times)


def gate_held_out(
    times: np.ndarray, columns: list[str], bases: dict[str, str], rules: ScoringRules
) -> tuple[np.ndarray, list[str]]:
    """v0.5's held-out variants, in the stated order, then the cutoff; variant columns dropped.

    1. a variant's time is infinite where its base's is; 2. the cutoff on every column;
    3. a base's time is infinite where its variant's is. `bases` maps variant -> base column.
    """
    t = np.array(times, dtype=float, copy=True)
    pairs = [
        (columns.index(v), columns.index(b))
        for v, b in bases.items()
        if v in columns and b in columns
    ]
    for v, b in pairs:
        t[..., v] = np.where(np.isinf(t[..., b]), np.inf, t[..., v])
    t = apply_cutoff(t, rules.cutoff_factor)
    for v, b in pairs:
        t[..., b] = np.where(np.isinf(t[..., v]), np.inf, t[..., b])
    keep = [i for i, c in enumerate(columns) if c not in bases]
    return t[..., keep], [columns[i] for i in keep]


def performance_ratios(times: np.ndarray) -> np.ndarray:
    """r = t / best t over submissions, per workload; inf where either is infinite."""
    best = np.min(times, axis=-2, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = times / best
    return np.where(np.isfinite(ratios), ratios, np.inf)


def taus(rules: ScoringRules) -> np.ndarray:
    return np.linspace(rules.min_tau, rules.max_tau, rules.num_points)


def profile(ratios: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """rho(tau): the fraction of workloads with r <= tau; shape (..., submissions, len(tau))."""
    return (ratios[..., :, :, None] <= tau).mean(axis=-2)


def benchmark_score(ratios: np.ndarray, rules: ScoringRules, exact: bool = False) -> np.ndarray:
    """The area under rho over [min_tau, max_tau], normalised to [0, 1].

    Reference: the trapezoid rule on `num_points` evenly spaced taus. Exact: rho is a step
    function, so each workload contributes (max_tau - max(r, min_tau)) / (max_tau - min_tau).
    """
    span = rules.max_tau - rules.min_tau
    if exact:
        r = np.maximum(ratios, rules.min_tau)
        contribution = np.where(r <= rules.max_tau, (rules.max_tau - r) / span, 0.0)
        return contribution.mean(axis=-1)
    tau = taus(rules)
    return np.trapezoid(profile(ratios, tau), tau, axis=-1) / span
