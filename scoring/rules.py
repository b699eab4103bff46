"""Rule-set versions of the scoring (RULES.md, Scoring): the presets of `algoperf.rulesets`.

The scorer, the runner and `tune` read the same preset; add a version there, not here.
"""

from __future__ import annotations

from algoperf.rulesets import DEFAULT, PRESETS, V0_5_HELD_OUT, RuleSet, get

ScoringRules = RuleSet
RULES = PRESETS

__all__ = ["DEFAULT", "RULES", "V0_5_HELD_OUT", "RuleSet", "ScoringRules", "get"]
