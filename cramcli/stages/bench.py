"""Stage `bench`: time the real training step of an arch on this machine — tokens/s, step time, memory, MFU.

The step is the one `cram pretrain` runs: on-device masking, forward with sparse prediction (under bf16/fp16
autocast on CUDA as the train budget says), backward, gradient clipping and the AdamW step. On a GPU the
micro-batch is searched by doubling until memory runs out; on a CPU one sensible size (about 2k tokens) is
measured unless `--micro-batch` names one. With `--compile` each size is also measured under torch.compile
(static sparse prediction, so shapes never change).
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from rich.console import Group
from rich.table import Table

from cramcli import budgets
from cramcli.utils.console import Output
from cramcli.utils.device import enable_fast_math, resolve_device
from cramcli.utils.errors import RunError, UsageError
from cramcli.utils.flops import arch_flops_per_token, device_peak_tflops

CPU_TOKENS_PER_MICRO_BATCH = 2048
"""On a CPU the throughput hardly depends on the micro-batch once matmuls have a few thousand rows."""
GPU_MAX_MICRO_BATCH = 4096
MIN_STEPS, MIN_SECONDS, WARMUP_STEPS = 3, 4.0, 2

_ARCH_FLAGS = {"hidden": "hidden_size", "layers": "num_layers", "heads": "num_heads",
               "intermediate": "intermediate_size", "vocab": "vocab_size"}


def run(
    output: Output,
    *,
    budget: str = "24",
    arch: str | None = None,
    hidden: int | None = None,
    layers: int | None = None,
    heads: int | None = None,
    intermediate: int | None = None,
    vocab: int | None = None,
    micro_batch: int | None = None,
    threads: int | None = None,
    compile: bool = False,
    peak_tflops: float | None = None,
    device: str | None = None,
    gpu: int | None = None,
    out: Path | None = None,
) -> None:
    train = budgets.load("train", budget)
    arch_budget = _arch_with_overrides(budgets.load("arch", arch or budget), hidden=hidden, layers=layers,
                                       heads=heads, intermediate=intermediate, vocab=vocab)
    for flag, value in (("--micro-batch", micro_batch), ("--threads", threads), ("--peak-tflops", peak_tflops)):
        if value is not None and value <= 0:
            raise UsageError(f"{flag} {value}: must be positive")
    if out is not None and Path(out).is_dir():
        raise UsageError(f"--out {out}: is a folder; pass a file name for the report JSON")
    dev = resolve_device(device, gpu)
    if threads is not None:
        torch.set_num_threads(threads)
    enable_fast_math(dev)
    peak = peak_tflops or device_peak_tflops(dev)
    seq = arch_budget.max_seq_length
    flops_token = arch_flops_per_token(arch_budget, seq, train.masking.rate)

    bench = StepBench(arch_budget, train, dev)
    rows: list[dict[str, Any]] = []
    sizes = [micro_batch] if micro_batch else candidate_sizes(dev, seq, train.micro_batch_size)
    for size in sizes:
        output.info(f"measuring micro-batch {size} …")
        row = bench.measure(size, compiled=False)
        if row is None:  # out of memory: every larger size would be too
            output.info(f"  micro-batch {size}: out of memory")
            break
        rows.append(row)
    if not rows:
        raise RunError(f"not even micro-batch {sizes[0]} fits on {dev}; use a smaller arch or --micro-batch")
    if compile:  # compiling takes a while per shape: only the fastest eager size
        size = max(rows, key=lambda r: r["tokens_per_s"])["micro_batch"]
        output.info(f"measuring micro-batch {size} compiled (the first steps compile) …")
        row = bench.measure(size, compiled=True)
        if row is not None:
            rows.append(row)
    for row in rows:
        row["mfu"] = row["tokens_per_s"] * flops_token / (peak * 1e12) if peak else None

    best = max(rows, key=lambda r: r["tokens_per_s"])
    fits = [r["micro_batch"] for r in rows if not r["compiled"]]
    report = {
        "command": "bench", "device": str(dev), "device_name": _device_name(dev), "threads": torch.get_num_threads(),
        "precision": bench.precision, "budget": budget,
        "arch": {"layout": arch_budget.layout, "hidden": arch_budget.hidden_size, "layers": arch_budget.num_layers,
                 "heads": arch_budget.num_heads, "intermediate": arch_budget.intermediate_size,
                 "vocab": arch_budget.vocab_size, "seq_len": seq},
        "flops_per_token": flops_token, "peak_tflops": peak, "measurements": rows,
        "largest_micro_batch": max(fits) if fits else None, "micro_batch": best["micro_batch"],
        "tokens_per_s": best["tokens_per_s"], "mfu": best["mfu"], "budget_hours": train.hours,
        "projected_tokens": best["tokens_per_s"] * train.hours * 3600,
        "pretrain_hint": _hint(budget, best["micro_batch"], train.batch_size),
    }
    output.report(report, _render(report), Path(out) if out is not None else None)


def _arch_with_overrides(arch: budgets.ArchBudget, **flags: int | None) -> budgets.ArchBudget:
    updates = {_ARCH_FLAGS[flag]: value for flag, value in flags.items() if value is not None}
    if not updates:
        return arch
    try:
        return budgets.ArchBudget.model_validate({**arch.model_dump(), **updates})
    except ValidationError as exc:
        given = " ".join(f"--{flag} {value}" for flag, value in flags.items() if value is not None)
        raise UsageError(*(f"{given}: {budgets.format_error(e)}" for e in exc.errors())) from None


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
        return self.train.precision if self.dev.type == "cuda" else "fp32"

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
        from cramcli.model import CrammedBertConfig, CrammedBertForMaskedLM
        from cramcli.train.masking import static_prediction_rate
        from cramcli.train.optim import make_optimizer
        from cramcli.train.step import apply_gradients, autocast_dtype, forward_loss, mask_batch

        torch.manual_seed(0)
        rate = static_prediction_rate(self.train.masking, micro_batch * self.arch.max_seq_length)
        overrides = {"sparse_prediction": "static", "sparse_rate": rate} if compiled else {}
        config = CrammedBertConfig.from_arch(self.arch, **overrides)
        model = CrammedBertForMaskedLM(config).to(self.dev)
        model.eval()  # pretraining runs without dropout (recipe §2.6)
        optimizer = make_optimizer(model, self.train.optimizer, self.dev)
        forward = torch.compile(model) if compiled else model
        dtype = autocast_dtype(self.train.precision, self.dev)
        scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        gen = torch.Generator(device=self.dev).manual_seed(0)
        ids = torch.randint(7, self.arch.vocab_size, (micro_batch, self.arch.max_seq_length), device=self.dev,
                            generator=gen)

        def step() -> torch.Tensor:
            inputs, labels = mask_batch(ids, self.train.masking, self.arch.vocab_size, gen, special=CRAM_SPECIAL_IDS)
            loss = forward_loss(forward, inputs, labels, dtype)
            scaler.scale(loss).backward()
            apply_gradients(model, optimizer, scaler, self.train.grad_clip)
            return loss.detach()

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


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    import platform

    return platform.processor() or platform.machine()


def _hint(budget: str, micro_batch: int, batch_size: int) -> str:
    # pretrain needs batch_size to be a multiple of the micro-batch: take the largest divisor not above it.
    fitting = max(m for m in range(1, micro_batch + 1) if batch_size % m == 0)
    return f"cram pretrain --budget {budget} --micro-batch-size {fitting}"


def _render(report: dict[str, Any]) -> Group:
    a = report["arch"]
    title = (f"cram bench — {a['layers']}×{a['hidden']} ({a['heads']} heads, FFN {a['intermediate']}, vocab "
             f"{a['vocab']}, seq {a['seq_len']}) on {report['device']} ({report['device_name']}), "
             f"{report['precision']}, {report['threads']} threads")
    table = Table("micro-batch", "mode", "step", "tokens/s", "MFU", "peak memory", title=title)
    for r in report["measurements"]:
        table.add_row(str(r["micro_batch"]), "compiled" if r["compiled"] else "eager", f"{r['step_s'] * 1e3:.1f} ms",
                      f"{r['tokens_per_s']:,.0f}", f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a",
                      f"{r['peak_memory_mb']:,.0f} MB")
    lines = [table,
             f"best: micro-batch {report['micro_batch']} at {report['tokens_per_s']:,.0f} tokens/s → "
             f"{report['projected_tokens'] / 1e9:.3g} B tokens in the {report['budget_hours']:g} h budget",
             f"use it: [bold]{report['pretrain_hint']}[/]"]
    if report["peak_tflops"] is None:
        lines.append("MFU: n/a (peak unknown for this device; pass --peak-tflops)")
    return Group(*lines)
