"""Rule-set versions of the scoring, as named plain data (RULES.md, Scoring).

A version is a preset, never constants spread through the code: add one by adding an entry.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScoringRules:
    name: str
    held_out_variants: tuple[str, ...]  # v0.5: one sampled variant per base workload gates it
    cutoff_factor: float = 4.0  # a time more than this x the best on its workload is infinite
    min_tau: float = 1.0
    max_tau: float = 4.0
    num_points: int = 100  # the reference's discretisation of tau for the integral
    self_budget_multiplier: float = 1.5
    external_studies: int = 3  # what a complete submission has: studies x trials per workload
    external_trials: int = 5
    self_studies: int = 3


V0_5_HELD_OUT = (
    "librispeech_conformer_layernorm",
    "imagenet_resnet_large_bn_init",
    "ogbg_model_size",
    "wmt_glu_tanh",
    "fastmri_tanh",
    "criteo1tb_embed_init",
)

RULES = {
    "v0.5": ScoringRules(
        "v0.5",
        held_out_variants=V0_5_HELD_OUT,
        self_budget_multiplier=3.0,
        external_studies=5,
        self_studies=5,
    ),
    "v0.6": ScoringRules("v0.6", held_out_variants=()),
}


def get(name: str) -> ScoringRules:
    if name not in RULES:
        raise ValueError(f"unknown rule-set version {name!r}; known: {', '.join(sorted(RULES))}")
    return RULES[name]
