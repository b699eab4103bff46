"""Learning-rate schedules the baselines share."""

from __future__ import annotations

import math


def warmup_cosine(step: int, step_hint: int, warmup_steps: int) -> float:
    """The learning-rate factor at `step`: linear warmup from 0, then cosine decay to 0 at step_hint.

    The reference baselines' schedule (linear warmup then CosineAnnealingLR over the remaining
    step_hint - warmup steps); past step_hint the factor stays at 0.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, step_hint - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))
