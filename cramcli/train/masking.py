"""On-device MLM masking: v1 Bernoulli with the 80/10/10 rule, v2 an exact share of every row (recipe §2.4, §2.7)."""

from __future__ import annotations

import torch

from cramcli.budgets import MaskingBudget

IGNORE = -100


def mask_tokens(
    ids: torch.Tensor,
    masking: MaskingBudget,
    *,
    mask_id: int,
    vocab_size: int,
    special_ids: tuple[int, ...],
    generator: torch.Generator | None = None,
    row_offset: int = 0,
    total_rows: int | None = None,
    rate: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, S] token ids → (masked inputs, labels with −100 where nothing is predicted). `rate` replaces the
    budget's start rate (a scheduled rate, `schedules.masking_rate`); a Python number, so no host sync.

    `ids` may be rows [row_offset, row_offset + B) of a batch of `total_rows`: every random draw is made for the
    whole batch and sliced, so a data-parallel rank that holds only its rows gets exactly the masks one process
    masking the whole batch would."""
    rate = masking.rate if rate is None else rate
    rows, seq = ids.shape
    whole = (rows if total_rows is None else total_rows, seq)
    part = slice(row_offset, row_offset + rows)

    def uniform() -> torch.Tensor:
        return torch.rand(whole, device=ids.device, generator=generator)[part]

    if masking.scheme == "bernoulli":
        selected = uniform() < rate
        for sid in special_ids:  # v1 never masks special tokens
            selected &= ids != sid
        # Of the selected: mask_token → <mask>, then random_token of the total → a random id, rest unchanged.
        draw = uniform()
        to_mask = selected & (draw < masking.mask_token)
        to_random = selected & (draw >= masking.mask_token) & (draw < masking.mask_token + masking.random_token)
    else:
        count = round(rate * seq)
        # A random permutation per row: its first `count` positions are predicted, in order mask/random/keep.
        order = uniform().argsort(dim=1)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(seq, device=ids.device).expand(rows, seq))
        n_mask = round(masking.mask_token * count)
        n_random = round(masking.random_token * count)
        selected = rank < count
        to_mask = rank < n_mask
        to_random = (rank >= n_mask) & (rank < n_mask + n_random)
    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE))
    random_ids = torch.randint(0, vocab_size, whole, device=ids.device, generator=generator, dtype=ids.dtype)[part]
    inputs = torch.where(to_mask, torch.full_like(ids, mask_id), ids)
    inputs = torch.where(to_random, random_ids, inputs)
    return inputs, labels


def static_prediction_rate(masking: MaskingBudget, tokens: int) -> float:
    """Share of a micro-batch's `tokens` that static sparse prediction decodes (fixed shapes for torch.compile).

    A scheduled rate is sized to its highest value, so the decoded count (a shape) never changes during a run
    and a compiled model never recompiles. Exact masking selects `rate` of every row, so that share is exact.
    Bernoulli masking selects a varying count (binomial, σ = √(n·p·(1−p))); four σ of headroom means a masked
    position is almost never left out, at the cost of decoding a few unmasked rows whose −100 labels the loss
    ignores."""
    rate = max(masking.rate, masking.final_rate or 0.0)
    if masking.scheme != "bernoulli":
        return rate
    sigma = (rate * (1 - rate) / max(tokens, 1)) ** 0.5
    return min(1.0, rate + 4 * sigma)
