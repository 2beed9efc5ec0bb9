"""Timing the trainer's own loop (`BatchFeed` and `TrainStep`, what `cram pretrain` runs) for one micro-batch size:
tokens/s, time per micro-batch, peak memory. Used by `cram bench` and `bench/gpu_check.py`."""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cramcli import budgets
from cramcli.utils.device import resolve_precision
from cramcli.utils.errors import RunError

CPU_TOKENS_PER_MICRO_BATCH = 2048
"""On a CPU the throughput hardly depends on the micro-batch once matmuls have a few thousand rows."""
GPU_MAX_MICRO_BATCH = 4096
MIN_STEPS, MIN_SECONDS, WARMUP_STEPS = 3, 4.0, 2
HOST_MICRO_BATCHES = 4
"""Distinct host rows the bench cycles through, in micro-batches."""


def candidate_sizes(dev: torch.device, seq: int, budget_micro_batch: int) -> list[int]:
    """GPU: powers of two from 8 up (the search stops at the first that does not fit). CPU: one size."""
    if dev.type == "cuda":
        sizes, size = [], 8
        while size <= GPU_MAX_MICRO_BATCH:
            sizes.append(size)
            size *= 2
        return sizes
    return [max(1, min(budget_micro_batch, CPU_TOKENS_PER_MICRO_BATCH // seq))]


class RandomRows:
    """Token rows held on the host, standing in for a prepared-data folder (the bench needs no corpus): the
    trainer's cursor reads them, and each read copies its rows as a read of a prepared folder does."""

    def __init__(self, vocab_size: int, seq_length: int, num_rows: int) -> None:
        self.path = Path("<random rows>")
        self.num_rows = num_rows
        self._data = np.random.default_rng(0).integers(7, vocab_size, (num_rows, seq_length), dtype=np.int64)

    def rows(self, start: int, count: int) -> np.ndarray:
        return self._data[start:start + count].copy()


@dataclass
class StepBench:
    arch: budgets.ArchBudget
    train: budgets.TrainBudget
    dev: torch.device

    @property
    def precision(self) -> str:
        """What the step computes in (the one precision rule, utils/device.py)."""
        return resolve_precision(self.train.precision, self.dev).name

    def measure(self, micro_batch: int, compiled: bool) -> dict[str, Any] | None:
        """Time the training loop at one micro-batch; None when it does not fit in GPU memory."""
        try:
            return self._measure(micro_batch, compiled)
        except torch.cuda.OutOfMemoryError:
            return None
        finally:
            if self.dev.type == "cuda":
                torch.cuda.empty_cache()

    def _measure(self, micro_batch: int, compiled: bool) -> dict[str, Any]:
        """The trainer's loop at the budget's full batch: each micro-step reads host rows, pins and copies them,
        masks them on the device, and runs forward and backward with gradient accumulation (`BatchFeed` and
        `TrainStep`, as `cram pretrain`); every `accumulation` micro-steps the optimizer steps. Micro-steps are
        timed back to back, then one update on their gradients; a micro-batch costs one micro-step plus
        1/accumulation of an update, as in a run (a CPU would need minutes for the 32 or more micro-steps of
        one whole batch)."""
        from cramcli.data.tokenizer import CRAM_SPECIAL_IDS
        from cramcli.train.data_cursor import DataCursor
        from cramcli.train.feed import BatchFeed
        from cramcli.train.step import TrainStep

        torch.manual_seed(0)
        seq = self.arch.max_seq_length
        accumulation = max(1, -(-self.train.batch_size // micro_batch))
        train_step = TrainStep(self.arch, self.train, self.dev, compile=compiled,
                               tokens_per_micro_batch=micro_batch * seq, special=CRAM_SPECIAL_IDS)
        rows = RandomRows(self.arch.vocab_size, seq, micro_batch * HOST_MICRO_BATCHES)
        feed = BatchFeed(DataCursor(rows, micro_batch), self.train.masking, self.arch.vocab_size, CRAM_SPECIAL_IDS,
                         self.dev, micro_batch_size=micro_batch)
        done = 0

        def micro_step() -> torch.Tensor:
            nonlocal done
            inputs, labels = feed.next(done)
            done += 1
            return train_step.micro_step(inputs, labels, accumulation, sync=True)

        if self.dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.dev)
        t0 = time.perf_counter()
        for _ in range(WARMUP_STEPS):
            micro_step()
        train_step.update(1.0)  # the peak LRs; the first update also creates the optimizer state
        self._sync()
        warmup = time.perf_counter() - t0
        steps, start = 0, time.perf_counter()
        while steps < MIN_STEPS or time.perf_counter() - start < MIN_SECONDS:
            loss = micro_step()
            steps += 1
            if steps % 4 == 0 or steps >= MIN_STEPS:
                self._sync()
        self._sync()
        micro_s = (time.perf_counter() - start) / steps
        start = time.perf_counter()
        train_step.update(1.0)
        self._sync()
        update_s = time.perf_counter() - start
        if not torch.isfinite(loss):
            raise RunError(f"micro-batch {micro_batch}: the loss is {float(loss)}; the arch or precision is unstable")
        step_s = micro_s + update_s / accumulation
        if self.dev.type == "cuda":
            peak_mb = torch.cuda.max_memory_allocated(self.dev) / 2**20
        else:
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS, in KiB
        return {"micro_batch": micro_batch, "compiled": compiled, "steps": steps, "accumulation": accumulation,
                "micro_step_s": micro_s, "update_s": update_s, "step_s": step_s,
                "tokens_per_s": micro_batch * seq / step_s, "peak_memory_mb": peak_mb, "warmup_s": warmup,
                "loss": float(loss)}

    def _sync(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
