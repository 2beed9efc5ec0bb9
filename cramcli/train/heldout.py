"""Held-out evaluation with one fixed protocol, so any two recipes trained on the same prepared data are scored
on exactly the same masked tokens: 15 % of each row's non-special tokens (rounded), 80 % of them replaced by
`<mask>`, 10 % by a random id, 10 % kept, positions and replacements drawn once from a fixed seed. It ignores the
train budget's `masking` (rate, scheme, shares), which a recipe may change.

Every masked position is scored (no sparse-prediction cap), in eval mode (dropout off), without gradients. The
masked rows live on the device from the start; the loss and accuracy sums stay there and are read once per
evaluation (one host sync). Under DDP each rank scores every world-th row and the sums are all-reduced.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cramcli.data.tokenizer import SpecialIds

RATE = 0.15
MASK_SHARE, RANDOM_SHARE = 0.8, 0.1
SEED = 20_231
"""The protocol's seed: fixed, never the run's `--seed`, so repeats of a recipe score the same positions."""


def _round(x: np.ndarray) -> np.ndarray:
    return np.floor(x + 0.5).astype(np.int64)  # half up, not NumPy's half-to-even


def fixed_masks(rows: np.ndarray, special: SpecialIds, vocab_size: int,
                seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """[N, S] token ids → (masked inputs, labels with −100 where nothing is scored), the protocol above."""
    rng = np.random.default_rng(seed)
    is_special = np.isin(rows, np.asarray(special.all, dtype=rows.dtype))
    keys = rng.random(rows.shape)
    keys[is_special] = np.inf  # special tokens sort last: never chosen
    rank = np.empty_like(rows)
    np.put_along_axis(rank, np.argsort(keys, axis=1, kind="stable"), np.arange(rows.shape[1])[None, :], axis=1)
    count = _round(RATE * (~is_special).sum(axis=1))[:, None]
    n_mask, n_random = _round(MASK_SHARE * count), _round(RANDOM_SHARE * count)
    selected = rank < count
    inputs = np.where(rank < n_mask, special.mask, rows)
    random_ids = rng.integers(0, vocab_size, size=rows.shape)
    inputs = np.where((rank >= n_mask) & (rank < n_mask + n_random), random_ids, inputs)
    return inputs, np.where(selected, rows, -100)


class HeldOutEval:
    """The held-out rows, masked once, as device batches of (inputs, flat masked positions, their targets)."""

    def __init__(self, rows: np.ndarray, special: SpecialIds, vocab_size: int, device: torch.device, *,
                 batch_size: int, rank: int = 0, world: int = 1) -> None:
        inputs, labels = fixed_masks(rows, special, vocab_size)
        self.rows, self.tokens = len(rows), int((labels >= 0).sum())
        self.device, self.world = device, world
        self.batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        inputs, labels = inputs[rank::world], labels[rank::world]  # this rank's share
        for start in range(0, len(inputs), batch_size):
            flat = labels[start : start + batch_size].reshape(-1)
            positions = np.flatnonzero(flat >= 0)
            self.batches.append((torch.from_numpy(inputs[start : start + batch_size]).to(device),
                                 torch.from_numpy(positions).to(device), torch.from_numpy(flat[positions]).to(device)))

    @torch.no_grad()
    def evaluate(self, model: Any, dtype: torch.dtype | None) -> dict[str, float]:
        """Held-out MLM loss (mean cross-entropy, nats) and accuracy over every scored token of every rank."""
        was_training = model.training
        model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss sum, correct, count
        try:
            for inputs, positions, targets in self.batches:
                with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    logits = model.logits_at(inputs, positions).float()
                sums[0] += F.cross_entropy(logits, targets, reduction="sum")
                sums[1] += (logits.argmax(dim=-1) == targets).sum()
                sums[2] += targets.numel()
        finally:
            model.train(was_training)
        if self.world > 1:
            torch.distributed.all_reduce(sums)
        loss, correct, count = sums.tolist()  # the one host sync of an evaluation
        return {"heldout_loss": loss / max(count, 1), "heldout_accuracy": correct / max(count, 1)}
