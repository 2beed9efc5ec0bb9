"""AdamW with the recipe's parameter groups: names containing a `no_decay` substring get no weight decay."""

from __future__ import annotations

import torch

from cramcli.budgets import OptimizerBudget


def param_groups(model: torch.nn.Module, no_decay: list[str], weight_decay: float) -> list[dict]:
    decay, plain = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (plain if any(key in name for key in no_decay) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, budget: OptimizerBudget, device: torch.device) -> torch.optim.AdamW:
    """Fused AdamW (one kernel per step on CUDA, one vectorised pass per tensor on CPU; deterministic on both)."""
    groups = param_groups(model, budget.no_decay, budget.weight_decay)
    return torch.optim.AdamW(groups, lr=budget.lr, betas=tuple(budget.betas), eps=budget.eps, fused=True)
