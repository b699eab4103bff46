"""Rule-set versions (RULES.md): every fact that differs between AlgoPerf versions, as plain data.

One home for these facts: the runner (the budget multiplier), `tune` (studies x trials) and the
scorer (held-out variants, the cutoff, the taus, the budget check) all read the same preset, so a
new version is one new entry in `PRESETS`. Framework-free: the scorer imports it without torch
or jax.
"""

from __future__ import annotations

from dataclasses import dataclass

TUNING_RULESETS = ("external", "self")


@dataclass(frozen=True)
class RuleSet:
    """One rule-set version's facts (RULES.md, Tuning and Scoring)."""

    name: str
    external_studies: int  # a complete external-tuning submission: studies x trials per workload
    external_trials: int
    self_studies: int  # self-tuning: one trial per study
    external_budget_multiplier: float  # x the workload's max_allowed_runtime_sec
    self_budget_multiplier: float
    held_out_variants: tuple[str, ...]  # v0.5: one sampled variant per base workload gates it
    cutoff_factor: float  # a time more than this x the best on its workload is infinite
    min_tau: float  # the performance profile is integrated over [min_tau, max_tau]
    max_tau: float
    num_points: int  # the reference scorer's discretisation of tau for the integral

    def budget_multiplier(self, ruleset: str) -> float:
        """The factor on the workload's budget under the `external` or `self` tuning ruleset."""
        _check_tuning_ruleset(ruleset)
        return self.self_budget_multiplier if ruleset == "self" else self.external_budget_multiplier

    def studies(self, ruleset: str) -> int:
        _check_tuning_ruleset(ruleset)
        return self.self_studies if ruleset == "self" else self.external_studies

    def trials_per_study(self, ruleset: str) -> int:
        _check_tuning_ruleset(ruleset)
        return 1 if ruleset == "self" else self.external_trials


def _check_tuning_ruleset(ruleset: str) -> None:
    if ruleset not in TUNING_RULESETS:
        raise ValueError(
            f"unknown tuning ruleset {ruleset!r}; expected one of {', '.join(TUNING_RULESETS)}."
        )


# The v0.5 competition's held-out workload variants (one sampled per base workload).
V0_5_HELD_OUT = (
    "librispeech_conformer_layernorm",
    "imagenet_resnet_large_bn_init",
    "ogbg_model_size",
    "wmt_glu_tanh",
    "fastmri_tanh",
    "criteo1tb_embed_init",
)

PRESETS: dict[str, RuleSet] = {
    # v0.6: 3 studies x 5 trials, 1.5 x budget under self-tuning, no held-out variants.
    "v0.6": RuleSet(
        "v0.6",
        external_studies=3,
        external_trials=5,
        self_studies=3,
        external_budget_multiplier=1.0,
        self_budget_multiplier=1.5,
        held_out_variants=(),
        cutoff_factor=4.0,
        min_tau=1.0,
        max_tau=4.0,
        num_points=100,
    ),
    # v0.5: 5 studies x 5 trials, 3 x budget under self-tuning, held-out variants gate their bases.
    "v0.5": RuleSet(
        "v0.5",
        external_studies=5,
        external_trials=5,
        self_studies=5,
        external_budget_multiplier=1.0,
        self_budget_multiplier=3.0,
        held_out_variants=V0_5_HELD_OUT,
        cutoff_factor=4.0,
        min_tau=1.0,
        max_tau=4.0,
        num_points=100,
    ),
}

DEFAULT = "v0.6"


def get(name: str) -> RuleSet:
    if name not in PRESETS:
        raise ValueError(
            f"unknown rule-set version {name!r}; known: {', '.join(sorted(PRESETS))}."
        )
    return PRESETS[name]
