"""GPU readiness: mixed-precision training parity, flash-vs-SDPA parity, and throughput/MFU of the training loop.

Run through `bash bench/gpu_check.sh` (it checks the environment first and runs the stages end to end too). Parts:
1. precision parity (bench/parity.py): the trainer's step in fp32 against bf16, and against fp16 with the loss
   scaler, on rows of the embedded corpus: per-step loss, gradient norm and per-tensor gradient norms.
2. flash vs SDPA: `bench.flash_check` (skipped, with the reason, when flash-attn does not import).
3. throughput: `cram bench`'s measurement (the trainer's own loop) for each arch and micro-batch size, eager and
   torch.compile'd, with MFU against the GPU's peak from cramcli.utils.flops (or --peak-tflops).
4. the modern options (docs/recipes.md), all on: bf16 parity as in 1, and the host synchronisations per
   training step counted by torch's CUDA sync debug mode, against the budget's own step (the options must add
   none).
The JSON (`--out`, default outputs/bench/gpu_check.json) is rewritten after every part, so a run stopped at its
time limit keeps what it measured. Exit 1 if a parity check fails or the options add a host synchronisation;
exit 3 (flash_check.SKIPPED) if everything that ran passed but the flash check was skipped, so a GPU without
flash-attn never reads as fully checked.
`--quick` shrinks every arch and count so the whole script runs on a CPU in a minute (a dry run, not a check).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

QUICK_ARCH = {"num_layers": 2, "hidden_size": 64, "num_heads": 2, "intermediate_size": 128, "vocab_size": 32768,
              "max_seq_length": 32}
"""--quick: every arch shrunk to this (the 32768-word decoder kept: it is where fp16 gradients underflow)."""
SYNC_STEPS = 4
# Every modern option on (docs/recipes.md); the masking rate rises to 0.4 over the budget.
OPTIONS_ARCH = {"position_embedding": "rotary", "qk_norm": "rms", "activation": "relu2", "glu": False,
                "zero_init_residual": True, "tie_decoder": False}


def with_options(arch, train) -> tuple:
    """The arch and train budgets with every modern option on (Muon, a scheduled masking rate, the arch ones)."""
    from cramcli import budgets

    fields = train.model_dump()
    fields["optimizer"]["name"] = "muon"
    fields["masking"]["final_rate"] = 0.4
    fields["schedule"].update(name="budget-wsd", warmup=0.05, cooldown=0.3, decay="1-sqrt")
    return (budgets.ArchBudget.model_validate({**arch.model_dump(), **OPTIONS_ARCH}),
            budgets.TrainBudget.model_validate(fields))


def host_syncs_per_step(arch, train, dev) -> float | None:
    """Host synchronisations per training step (a micro-step and an optimizer step, under the budget's
    precision and a moving masking rate), counted by torch's CUDA sync debug mode; None off CUDA."""
    import warnings

    import torch

    from cramcli.data.tokenizer import CRAM_SPECIAL_IDS
    from cramcli.train.schedules import masking_rate
    from cramcli.train.step import TrainStep, mask_batch

    if dev.type != "cuda":
        return None
    torch.manual_seed(0)
    step = TrainStep(arch, train, dev, compile=False, tokens_per_micro_batch=64 * arch.max_seq_length,
                     special=CRAM_SPECIAL_IDS)
    gen = torch.Generator(device=dev).manual_seed(0)
    ids = torch.randint(7, arch.vocab_size, (64, arch.max_seq_length), device=dev, generator=gen)

    def one(x: float) -> None:
        inputs, labels = mask_batch(ids, train.masking, arch.vocab_size, gen, special=CRAM_SPECIAL_IDS,
                                    rate=masking_rate(train.masking, x))
        step.micro_step(inputs, labels)
        step.update(1.0)

    one(0.0)  # lazy optimizer state outside the count
    torch.cuda.synchronize(dev)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for i in range(SYNC_STEPS):
                one((i + 1) / (SYNC_STEPS + 1))
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize(dev)
    return sum("synchroniz" in str(w.message).lower() for w in caught) / SYNC_STEPS


def _archs(names: list[str], quick: bool) -> dict[str, Any]:
    from cramcli import budgets

    archs = {}
    for name in names:
        arch = budgets.load("arch", name)
        if quick:
            arch = budgets.ArchBudget.model_validate({**arch.model_dump(), **QUICK_ARCH})
        archs[name] = arch
    return archs


def environment(dev: Any) -> dict[str, Any]:
    import platform

    import torch

    from cramcli.model.attention import flash_available

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
                           "device": str(dev), "cpu_count": os.cpu_count()}
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        env.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                   memory_gib=round(props.total_memory / 2**30, 1), multiprocessors=props.multi_processor_count,
                   bf16_supported=torch.cuda.is_bf16_supported())
    env["flash_attn"] = "available" if dev.type == "cuda" and flash_available() else "flash-attn unavailable"
    for package in ("transformers", "tokenizers", "pydantic", "typer", "rich", "numpy", "safetensors", "datasets",
                    "triton"):
        try:
            env[package] = metadata.version(package)
        except metadata.PackageNotFoundError:  # a missing package is a finding here, not an error
            env[package] = None
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="24,v2", help="arch presets to measure")
    parser.add_argument("--micro-batches", default="128,256,512")
    parser.add_argument("--parts", default="parity,flash,throughput,options", help="which parts to run")
    parser.add_argument("--modes", default="eager,compiled", help="throughput modes: eager, compiled or both")
    parser.add_argument("--seconds", type=float, default=None, help="least seconds each throughput row is timed")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--quick", action="store_true", help="tiny archs and counts: a CPU dry run of the script")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/gpu_check.json"))
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available() and not args.quick:
        print("gpu_check: no CUDA device visible to torch; nothing to check (--quick dry-runs it on the CPU)")
        return 1
    from bench import flash_check, parity
    from cramcli import budgets
    from cramcli.train import throughput as bench
    from cramcli.utils.device import setup_device
    from cramcli.utils.flops import arch_flops_per_token, device_peak_tflops

    dev = setup_device("cuda:0" if torch.cuda.is_available() else "cpu", None)
    archs = _archs(args.archs.split(","), args.quick)
    sizes = [4] if args.quick else [int(s) for s in args.micro_batches.split(",")]
    parts, modes = args.parts.split(","), args.modes.split(",")
    if args.seconds is not None:
        bench.MIN_SECONDS = args.seconds
    if args.quick:
        bench.MIN_STEPS, bench.MIN_SECONDS, bench.WARMUP_STEPS = 2, 0.0, 1
    peak = args.peak_tflops or device_peak_tflops(dev)
    result: dict[str, Any] = {"quick": args.quick, "environment": environment(dev), "peak_tflops": peak}
    env = result["environment"]
    print(f"device {env.get('device_name', dev)}, torch {env['torch']}, CUDA {env['cuda']}, peak {peak} TFLOP/s "
          f"(bf16 dense), {env['flash_attn']}")

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))

    save()
    arch, train = archs[next(iter(archs))], budgets.load("train", next(iter(archs)))
    result["parity"] = {}
    for precision in ("bf16", "fp16") if "parity" in parts else ():
        t0 = time.perf_counter()
        steps, rows = (2, 16) if args.quick else (parity.PARITY_STEPS, parity.PARITY_ROWS)
        check = parity.precision_parity(arch, train, dev, precision, steps=steps, rows=rows)
        check["seconds"] = time.perf_counter() - t0
        result["parity"][precision] = check
        print(f"[1] {precision} vs fp32 over {check['steps']} steps on text: loss {check['max_rel_loss_diff']:.1e} "
              f"(≤ {parity.LOSS_TOLERANCE}), grad norm {check['max_rel_grad_norm_diff']:.1e} "
              f"(≤ {parity.GRAD_NORM_TOLERANCE}), worst tensor {check['max_rel_tensor_grad_norm_diff']:.1e} "
              f"(≤ {parity.TENSOR_GRAD_NORM_TOLERANCE}, {check['worst_tensor']}) "
              f"{'OK' if check['ok'] else 'FAILED'} [{check['seconds']:.0f} s]")
        save()
    parity_ok = all(c["ok"] for c in result["parity"].values())

    flash_rc = flash_check.PASSED
    if "flash" in parts:
        t0 = time.perf_counter()
        print("[2] flash-attn vs SDPA:")
        flash_rc = flash_check.main(["--repeats", "10"])
        result["flash_check"] = flash_check.status(flash_rc)
        print(f"    [{time.perf_counter() - t0:.0f} s]")
        save()

    result["throughput"] = rows_out = []
    if "throughput" in parts:
        print(f"[3] training loop (host copy, masking, accumulation, update amortised), "
              f"{bench.StepBench(arch, train, dev).precision}:")
        print(f"    {'arch':>5} {'micro-batch':>11} {'mode':>9} {'tokens/s':>10} {'step ms':>8} {'MFU':>6} "
              f"{'peak GB':>8} {'warm-up s':>9}")
    for compiled in [mode == "compiled" for mode in modes] if "throughput" in parts else []:
        for name, arch in archs.items():
            train = budgets.load("train", name)
            flops = arch_flops_per_token(arch, arch.max_seq_length, train.masking.rate)
            step = bench.StepBench(arch, train, dev)
            for size in sizes:
                mode = "compiled" if compiled else "eager"
                row = step.measure(size, compiled)
                if row is None:
                    print(f"    {name:>5} {size:>11} {mode:>9}  out of memory")
                    rows_out.append({"arch": name, "micro_batch": size, "compiled": compiled, "oom": True})
                    continue
                row.update(arch=name, seq=arch.max_seq_length, flops_per_token=flops,
                           mfu=row["tokens_per_s"] * flops / (peak * 1e12) if peak else None)
                rows_out.append(row)
                mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "n/a"
                print(f"    {name:>5} {size:>11} {mode:>9} {row['tokens_per_s']:>10,.0f} {row['step_s'] * 1e3:>8.1f} "
                      f"{mfu:>6} {row['peak_memory_mb'] / 1024:>8.1f} {row['warmup_s']:>9.1f}")
                save()
    options_ok = True
    if "options" in parts:
        t0 = time.perf_counter()
        arch, train = archs[next(iter(archs))], budgets.load("train", next(iter(archs)))
        modern_arch, modern_train = with_options(arch, train)
        steps, rows = (2, 16) if args.quick else (parity.PARITY_STEPS, parity.PARITY_ROWS)
        options_parity = parity.precision_parity(modern_arch, modern_train, dev, "bf16", steps=steps, rows=rows)
        syncs = {"budget": host_syncs_per_step(arch, train, dev),
                 "options": host_syncs_per_step(modern_arch, modern_train, dev)}
        counted = syncs["budget"] is not None and syncs["options"] is not None
        options_ok = options_parity["ok"] and (not counted or syncs["options"] <= syncs["budget"])
        result["options"] = {"bf16_parity": options_parity, "host_syncs_per_step": syncs, "ok": options_ok}
        print(f"[4] every modern option on: bf16 parity on text: loss {options_parity['max_rel_loss_diff']:.1e}, "
              f"worst tensor {options_parity['max_rel_tensor_grad_norm_diff']:.1e}; host syncs per step "
              f"{syncs['options']} (the budget's own step: {syncs['budget']}) {'OK' if options_ok else 'FAILED'} "
              f"[{time.perf_counter() - t0:.0f} s]")
    save()
    print(f"saved {args.out}")
    if not parity_ok or not options_ok or flash_rc not in (flash_check.PASSED, flash_check.SKIPPED):
        return 1
    return flash_rc


if __name__ == "__main__":
    sys.exit(main())
