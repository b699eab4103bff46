"""Which trials and rows count (RULES.md, Scoring): the flags check and the budget check.

A trial written by this harness carries `flags_<p>.json` (one per preemption p) with the flags it
ran under. A run that changed what the rules fix is *unofficial*: it is listed in `trials.csv`
with the reason and left out of the scores unless `--include-unofficial` is given. The flags
that make a run unofficial (a missing key or null means the default, which is official):

- `data` other than `real`: synthetic batches are not the workload's dataset;
- `max_runtime` set: a budget other than the workload's;
- `eval_every` set: evals on a step count instead of the workload's eval period, so the eval rows
  (and with them the time to target) are not the ones the rules define;
- `batch_size` set (the `--batch-size` flag, an override of the submission's own choice, even
  to the same number: a scored batch size is the submission's, not the command line's);
- `max_steps` set: the rules end a run at the target, the budget or `TrainingCompleteError`,
  never at a step count, so *any* `--max-steps` is a change (whether the cap bit or not: the
  flags alone cannot tell, and a scored run has no reason to set one);
- `ruleset` or `rules` other than the ones being scored: a self-tuning run has a longer budget
  (1.5 x in v0.6) and no search space, so it does not belong in an external-tuning leaderboard
  (or vice versa); versions differ in budgets and studies x trials.

Rows of this harness's logs whose `score` is past the workload's budget x the rule set's
multiplier never count (the runner stops at the budget, so such a row is a bug or an edited
log). Logs of the reference harness are scored as the reference scorer does: its v0.5 runner
checked the budget only at evals and the published scores include rows past it. A reference
`flags_<p>.json` (absl's flag dump of `submission_runner.py`) is told apart by its
`submission_path` / `tuning_ruleset` keys, which this harness never writes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from algoperf.rulesets import DEFAULT

OURS = "algoperf"
REFERENCE = "reference"
FLAGS_FILE = re.compile(r"^flags_(\d+)\.json$")
# Flags only the reference's submission_runner.py defines (absl writes every defined flag).
REFERENCE_FLAG_KEYS = ("submission_path", "tuning_ruleset")


@dataclass(frozen=True)
class Provenance:
    """Which harness wrote a trial's logs, and why it is unofficial (empty: official)."""

    harness: str
    unofficial: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)


def flags_files(filenames: list[str]) -> list[str]:
    """The `flags_<p>.json` names among a trial folder's files, in preemption order."""
    found = [(int(m.group(1)), name) for name in filenames if (m := FLAGS_FILE.match(name))]
    return [name for _, name in sorted(found)]


def is_reference_flags(flags: dict[str, Any]) -> bool:
    return any(key in flags for key in REFERENCE_FLAG_KEYS)


def unofficial_reasons(flags: dict[str, Any], ruleset: str, rules: str) -> list[str]:
    """Why a run with these flags does not count when scoring `rules` under `ruleset` tuning."""
    reasons = []
    data = flags.get("data")
    if data is not None and data != "real":
        reasons.append(f"data={data} (not the workload's dataset)")
    if flags.get("max_runtime") is not None:
        reasons.append(f"max_runtime={flags['max_runtime']} (a budget other than the workload's)")
    if flags.get("eval_every") is not None:
        reasons.append(
            f"eval_every={flags['eval_every']} (evals every N steps, not every eval period)"
        )
    if flags.get("batch_size") is not None:
        reasons.append(
            f"batch_size={flags['batch_size']} (the submission's batch size overridden)"
        )
    if flags.get("max_steps") is not None:
        reasons.append(f"max_steps={flags['max_steps']} (a step cap the rules do not have)")
    run_ruleset = flags.get("ruleset") or "external"
    if run_ruleset != ruleset:
        reasons.append(f"ruleset={run_ruleset} (scored as {ruleset} tuning)")
    run_rules = flags.get("rules") or DEFAULT
    if run_rules != rules:
        reasons.append(f"rules={run_rules} (scored under {rules})")
    return reasons


def provenance(trial_dir: Path, names: list[str], ruleset: str, rules: str) -> Provenance:
    """Reads a trial's flags files (all preemptions: a resumed run may have changed flags).

    No flags file, or the reference's: a reference trial. A flags file that cannot be read
    makes the trial unofficial (how it was run cannot be checked) and gives a warning.
    """
    if not names:
        return Provenance(REFERENCE)
    reasons: list[str] = []
    warnings: list[str] = []
    reference = 0
    for name in names:
        path = trial_dir / name
        try:
            flags = json.loads(path.read_text())
            if not isinstance(flags, dict):
                raise ValueError(f"expected a JSON object, got {type(flags).__name__}")
        except (OSError, ValueError, UnicodeDecodeError) as e:
            reasons.append(f"{name} cannot be read, so how the trial ran cannot be checked")
            warnings.append(
                f"{path}: cannot be read ({e}); the trial counts as unofficial "
                "(--include-unofficial counts it)."
            )
            continue
        if is_reference_flags(flags):
            reference += 1
            continue
        for reason in unofficial_reasons(flags, ruleset, rules):
            if reason not in reasons:
                reasons.append(reason)
    if reference == len(names):
        return Provenance(REFERENCE)
    return Provenance(OURS, tuple(reasons), tuple(warnings))
