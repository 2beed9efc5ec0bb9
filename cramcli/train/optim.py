"""The optimizers of a run: AdamW with the recipe's parameter groups (names containing a `no_decay` substring get
no weight decay), and with `optimizer.name: muon` also `torch.optim.Muon` for the encoder layers' 2-D matrices."""

from __future__ import annotations

from collections.abc import Collection

import torch

from cramcli.budgets import OptimizerBudget
from cramcli.utils.errors import UsageError


def hidden_matrices(model: torch.nn.Module) -> set[str]:
    """Muon's share: the weights of the Linear layers inside the encoder layers (attention qkv and output, FFN in
    and out). Embeddings, the prediction head and decoder, norms and biases stay on AdamW (Muon is for hidden
    layers)."""
    return {f"{name}.weight" for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and ".layers." in f".{name}" and module.weight.requires_grad}


def param_groups(model: torch.nn.Module, no_decay: list[str], weight_decay: float,
                 exclude: Collection[str] = ()) -> list[dict]:
    decay, plain = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad or name in exclude:
            continue
        (plain if any(key in name for key in no_decay) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def make_optimizers(model: torch.nn.Module, budget: OptimizerBudget) -> list[torch.optim.Optimizer]:
    """[AdamW] for `adamw`; [AdamW, Muon] for `muon`. Fused AdamW: one kernel per step on CUDA, one vectorised
    pass per tensor on CPU; deterministic on both. Every group keeps its peak LR as `initial_lr`, which the
    schedule's factor scales (`set_lr`)."""
    muon_names = hidden_matrices(model) if budget.name == "muon" else set()
    groups = param_groups(model, budget.no_decay, budget.weight_decay, exclude=muon_names)
    optimizers: list[torch.optim.Optimizer] = [
        torch.optim.AdamW(groups, lr=budget.lr, betas=tuple(budget.betas), eps=budget.eps, fused=True)]
    if muon_names:
        if not hasattr(torch.optim, "Muon"):  # torch ≥ 2.9; cram's floor is older
            raise UsageError(f"optimizer.name: muon needs torch.optim.Muon (torch 2.9 or newer), this is torch "
                             f"{torch.__version__}; upgrade torch or use optimizer.name adamw")
        m = budget.muon
        params = [param for name, param in model.named_parameters() if name in muon_names]
        optimizers.append(torch.optim.Muon(params, lr=m.lr, weight_decay=m.weight_decay, momentum=m.momentum,
                                           nesterov=m.nesterov, ns_steps=m.ns_steps, adjust_lr_fn=m.adjust_lr_fn))
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["initial_lr"] = group["lr"]
    return optimizers


def set_lr(optimizers: list[torch.optim.Optimizer], factor: float) -> None:
    """Every group's LR = its peak (`initial_lr`) × the schedule's factor."""
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
