"""The pieces of one masked-LM training step that `cram pretrain` and `cram bench` share, so the benchmark
times exactly the step training runs: masking with the tokenizer's special ids, the autocast forward, and the
gradient update (unscale, clip, AdamW step, zero)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from cramcli.budgets import MaskingBudget
from cramcli.data.tokenizer import SpecialIds
from cramcli.train.masking import mask_tokens


def mask_batch(ids: torch.Tensor, masking: MaskingBudget, vocab_size: int, generator: torch.Generator, *,
               special: SpecialIds) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, S] token ids → (masked inputs, labels) with the run's tokenizer's `<mask>` id; v1 masking never
    selects any of its special tokens (`special_ids(tokenizer)`, wherever they sit in the vocabulary)."""
    return mask_tokens(ids, masking, mask_id=special.mask, vocab_size=vocab_size, special_ids=special.all,
                       generator=generator)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16/fp16 autocast on CUDA as the budget says; None (plain fp32) on a CPU or for `fp32`."""
    if device.type != "cuda":
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def forward_loss(forward: Callable[..., object], inputs: torch.Tensor, labels: torch.Tensor,
                 dtype: torch.dtype | None) -> torch.Tensor:
    """The MLM loss of one micro-batch, under autocast when `dtype` is set."""
    with torch.autocast(inputs.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        return forward(inputs, labels=labels).loss


def apply_gradients(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    grad_clip: float) -> None:
    """Unscale (fp16), clip the global gradient norm when `grad_clip` > 0, step, and clear the gradients."""
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
