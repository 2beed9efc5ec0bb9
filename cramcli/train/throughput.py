"""Timing the real training step (`TrainStep`, the one `cram pretrain` runs) for one micro-batch size: tokens/s,
step time, peak memory. Used by `cram bench` and `bench/gpu_check.py`."""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from typing import Any

import torch

from cramcli import budgets
from cramcli.utils.device import resolve_precision
from cramcli.utils.errors import RunError

CPU_TOKENS_PER_MICRO_BATCH = 2048
"""On a CPU the throughput hardly depends on the micro-batch once matmuls have a few thousand rows."""
GPU_MAX_MICRO_BATCH = 4096
MIN_STEPS, MIN_SECONDS, WARMUP_STEPS = 3, 4.0, 2


def candidate_sizes(dev: torch.device, seq: int, budget_micro_batch: int) -> list[int]:
    """GPU: powers of two from 8 up (the search stops at the first that does not fit). CPU: one size."""
    if dev.type == "cuda":
        sizes, size = [], 8
        while size <= GPU_MAX_MICRO_BATCH:
            sizes.append(size)
            size *= 2
        return sizes
    return [max(1, min(budget_micro_batch, CPU_TOKENS_PER_MICRO_BATCH // seq))]


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
        """Time whole training steps of one micro-batch; None when it does not fit in GPU memory."""
        try:
            return self._measure(micro_batch, compiled)
        except torch.cuda.OutOfMemoryError:
            return None
        finally:
            if self.dev.type == "cuda":
                torch.cuda.empty_cache()

    def _measure(self, micro_batch: int, compiled: bool) -> dict[str, Any]:
        from cramcli.data.tokenizer import CRAM_SPECIAL_IDS
        from cramcli.train.step import TrainStep, mask_batch

        torch.manual_seed(0)
        train_step = TrainStep(self.arch, self.train, self.dev, compile=compiled,
                               tokens_per_micro_batch=micro_batch * self.arch.max_seq_length, special=CRAM_SPECIAL_IDS)
        gen = torch.Generator(device=self.dev).manual_seed(0)
        ids = torch.randint(7, self.arch.vocab_size, (micro_batch, self.arch.max_seq_length), device=self.dev,
                            generator=gen)

        def step() -> torch.Tensor:
            inputs, labels = mask_batch(ids, self.train.masking, self.arch.vocab_size, gen, special=CRAM_SPECIAL_IDS)
            loss = train_step.micro_step(inputs, labels)
            train_step.update(1.0)  # the peak LRs
            return loss

        if self.dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.dev)
        t0 = time.perf_counter()
        for _ in range(WARMUP_STEPS):
            step()
        self._sync()
        warmup = time.perf_counter() - t0
        steps, start = 0, time.perf_counter()
        while steps < MIN_STEPS or time.perf_counter() - start < MIN_SECONDS:
            loss = step()
            steps += 1
            if steps % 4 == 0 or steps >= MIN_STEPS:
                self._sync()
        self._sync()
        seconds = time.perf_counter() - start
        if not torch.isfinite(loss):
            raise RunError(f"micro-batch {micro_batch}: the loss is {float(loss)}; the arch or precision is unstable")
        tokens = steps * micro_batch * self.arch.max_seq_length
        if self.dev.type == "cuda":
            peak_mb = torch.cuda.max_memory_allocated(self.dev) / 2**20
        else:
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS, in KiB
        return {"micro_batch": micro_batch, "compiled": compiled, "steps": steps, "step_s": seconds / steps,
                "tokens_per_s": tokens / seconds, "peak_memory_mb": peak_mb, "warmup_s": warmup,
                "loss": float(loss)}

    def _sync(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
