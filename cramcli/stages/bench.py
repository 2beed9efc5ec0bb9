"""Stage `bench`: time the real training loop of an arch on this machine — tokens/s, step time, memory, MFU.

The loop is the one `cram pretrain` runs (train/throughput.py): host rows pinned and copied to the device,
on-device masking, forward with sparse prediction (under bf16/fp16 autocast on CUDA as the train budget says)
and backward with gradient accumulation over the budget's batch, and per batch the gradient clipping and AdamW
step. On a GPU the
micro-batch is searched by doubling until memory runs out; on a CPU one sensible size (about 2k tokens) is
measured unless `--micro-batch` names one. With `--compile` each size is also measured under torch.compile
(static sparse prediction, so shapes never change).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Group
from rich.table import Table

from cramcli.stages import options
from cramcli.stages.common import load_budget
from cramcli.utils.console import Output
from cramcli.utils.errors import RunError, UsageError


def run(
    output: Output,
    *,
    budget: Annotated[str, typer.Option("--budget", "-b", help="Train/arch preset or train budget JSON file.")] = "24",
    arch: options.ArchBudget = None,
    hidden: Annotated[Optional[int], typer.Option("--hidden", help="Override hidden size.")] = None,
    layers: Annotated[Optional[int], typer.Option("--layers", help="Override number of layers.")] = None,
    heads: Annotated[Optional[int], typer.Option("--heads", help="Override attention heads.")] = None,
    intermediate: Annotated[Optional[int], typer.Option("--intermediate", help="Override FFN intermediate size.")] = None,
    vocab: Annotated[Optional[int], typer.Option("--vocab", help="Override vocabulary size.")] = None,
    micro_batch: Annotated[Optional[int], typer.Option("--micro-batch", help="Measure this micro-batch instead of searching.")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="CPU threads (default: torch's).")] = None,
    compile: Annotated[bool, typer.Option("--compile/--no-compile", help="Also measure torch.compile.")] = False,
    peak_tflops: options.PeakTflops = None,
    device: options.Device = None,
    gpu: options.Gpu = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Also save the report JSON here.")] = None,
) -> None:
    """Measure the real training step: largest micro-batch that fits, tokens/s, memory, MFU."""
    import torch

    from cramcli.train.throughput import StepBench, candidate_sizes
    from cramcli.utils.device import device_name, setup_device
    from cramcli.utils.flops import arch_flops_per_token, device_peak_tflops

    train = load_budget(output, "train", budget).budget
    arch_budget = load_budget(output, "arch", arch or budget, {
        "hidden_size": ("--hidden", hidden), "num_layers": ("--layers", layers), "num_heads": ("--heads", heads),
        "intermediate_size": ("--intermediate", intermediate), "vocab_size": ("--vocab", vocab)}).budget
    for flag, value in (("--micro-batch", micro_batch), ("--threads", threads), ("--peak-tflops", peak_tflops)):
        if value is not None and value <= 0:
            raise UsageError(f"{flag} {value}: must be positive")
    if out is not None and Path(out).is_dir():
        raise UsageError(f"--out {out}: is a folder; pass a file name for the report JSON")
    dev = setup_device(device, gpu)
    if threads is not None:
        torch.set_num_threads(threads)
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
        "command": "bench", "device": str(dev), "device_name": device_name(dev), "threads": torch.get_num_threads(),
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
