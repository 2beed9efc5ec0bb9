"""LR factor, batch-size ramp and (scheduled) masking rate as functions of the budget fraction x ∈ [0, 1]
(recipe §2.2, §2.3)."""

from __future__ import annotations

import math

from cramcli.budgets import MaskingBudget, ScheduleBudget


def lr_factor(schedule: ScheduleBudget, x: float) -> float:
    """Multiplier of the peak LR after the share `x` of the budget is spent."""
    x = min(max(x, 0.0), 1.0)
    name, warm, cool = schedule.name, schedule.warmup, schedule.cooldown
    if name == "budget-triangle2":  # base 0.25, falloff 0.25: peak at x = 0.75
        return min(0.25 + x, 4.0 * (1.0 - x))
    if name == "budget-one-cycle":
        return 2.0 * x if x < 0.5 else 2.0 - 2.0 * x
    if name == "budget-cosine":
        if x < warm:
            return x / warm
        return 0.5 * (1.0 + math.cos(math.pi * (x - warm) / (1.0 - warm)))
    if name == "budget-wsd":
        if x < warm:
            return x / warm
        if cool > 0 and x > 1.0 - cool:
            return _cooldown(schedule.decay, x, cool)
        return 1.0
    return 1.0  # constant


def _cooldown(shape: str, x: float, cool: float) -> float:
    """The wsd decay from 1 to 0 over the last `cool` of the budget."""
    if shape == "linear":
        return (1.0 - x) / cool
    t = min((x - (1.0 - cool)) / cool, 1.0)
    if shape == "1-sqrt":
        return 1.0 - math.sqrt(t)
    return 0.5 * (1.0 + math.cos(math.pi * t))  # cosine


def masking_rate(masking: MaskingBudget, x: float) -> float:
    """The masking rate after the share `x` of the budget: `rate`, or linear from `rate` to `final_rate`."""
    if masking.final_rate is None:
        return masking.rate
    x = min(max(x, 0.0), 1.0)
    return masking.rate + (masking.final_rate - masking.rate) * x


def batch_size_at(*, micro_steps: int, x: float, batch_size: int, micro_batch_size: int, ramp: float) -> int:
    """Target batch (sequences) at micro-step counter `micro_steps` and budget fraction `x`.

    ramp ≥ 1: v1 step-based, (floor(s·B/R / mbs) + 1)·mbs until s ≥ R; 0 < ramp < 1: v2, linear in the budget
    fraction reaching B at x = ramp; 0: B from the start."""
    if ramp >= 1:
        if micro_steps >= ramp:
            return batch_size
        return min((math.floor(micro_steps * batch_size / ramp / micro_batch_size) + 1) * micro_batch_size, batch_size)
    if ramp > 0:
        return min((math.floor(x * batch_size / ramp / micro_batch_size) + 1) * micro_batch_size, batch_size)
    return batch_size
