"""What one micro-step feeds the model: this rank's rows of the global micro-batch, read on the host, page-locked,
copied to the device without waiting, and masked there. `cram pretrain` and `cram bench` both run it, so a
benchmark pays for the same host work a run does."""

from __future__ import annotations

import torch

from cramcli.budgets import MaskingBudget
from cramcli.data.tokenizer import SpecialIds
from cramcli.train.data_cursor import DataCursor
from cramcli.train.step import mask_batch


class BatchFeed:
    def __init__(self, cursor: DataCursor, masking: MaskingBudget, vocab_size: int, special: SpecialIds,
                 device: torch.device, *, micro_batch_size: int, rank: int = 0, world: int = 1, seed: int = 0) -> None:
        self.cursor, self.masking, self.vocab_size, self.special = cursor, masking, vocab_size, special
        self.device, self.seed = device, seed
        self.rows, self.offset, self.total = micro_batch_size, rank * micro_batch_size, world * micro_batch_size

    def next(self, micro_step: int, rate: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked inputs, labels) of this rank's rows for global micro-step `micro_step`; `rate`: a scheduled
        masking rate instead of the budget's."""
        ids = torch.from_numpy(self.cursor.next_rows(self.offset, self.rows))
        if self.device.type == "cuda":  # page-locked (torch's caching host allocator): the copy overlaps compute
            ids = ids.pin_memory()
        ids = ids.to(self.device, non_blocking=True)
        # A generator keyed to the micro-step, drawing for the whole global micro-batch: any number of ranks
        # (and a resumed run) sees exactly the masks one process would.
        gen = torch.Generator(device=self.device).manual_seed(self.seed * 1_000_003 + micro_step)
        return mask_batch(ids, self.masking, self.vocab_size, gen, special=self.special, rate=rate,
                          row_offset=self.offset, total_rows=self.total)
