"""GPU readiness: bf16-vs-fp32 training parity, flash-vs-SDPA parity, and training throughput/MFU of an arch.

Run through `bash bench/gpu_check.sh` (it checks the environment first and never installs anything). Parts:
1. bf16 parity: the same model, batches and masks trained for a few steps in fp32 and under bf16 autocast;
   the loss curves must agree within a few per cent.
2. flash vs SDPA: `bench.flash_check` (skipped, with the reason, when flash-attn does not import).
3. throughput: `cram bench`'s training step for each micro-batch size, eager and torch.compile'd, with MFU
   against the GPU's peak from cramcli.utils.flops (or --peak-tflops).
4. the modern options (docs/recipes.md), all on: bf16 parity as in 1, and the host synchronisations per
   training step counted by torch's CUDA sync debug mode, against the budget's own step (the options must add
   none).
Prints one table and writes it as JSON (`--out`, default outputs/bench/gpu_check.json). Exit 1 if a parity
check fails or the options add a host synchronisation; exit 3 (flash_check.SKIPPED) if everything ran passed but the flash check was skipped, so a GPU
without flash-attn never reads as fully checked.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

PARITY_STEPS = 8
PARITY_TOLERANCE = 0.03  # relative loss difference per step; bf16 keeps ~3 significant digits
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


def bf16_parity(arch, train, dev) -> dict:
    """The trainer's own step (cramcli.train.step.TrainStep) in fp32 and under bf16 autocast, same batches."""
    import torch

    from cramcli import budgets
    from cramcli.data.tokenizer import CRAM_SPECIAL_IDS
    from cramcli.train.step import TrainStep, mask_batch

    curves = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        budget = budgets.TrainBudget.model_validate({**train.model_dump(), "precision": precision})
        step = TrainStep(arch, budget, dev, compile=False, tokens_per_micro_batch=64 * arch.max_seq_length,
                         special=CRAM_SPECIAL_IDS)
        if precision == "bf16":  # on a CPU too (the trainer keeps CPUs in fp32), so the tests can run this check
            step.dtype = torch.bfloat16
        gen = torch.Generator(device=dev).manual_seed(0)
        ids = torch.randint(7, arch.vocab_size, (64, arch.max_seq_length), device=dev, generator=gen)
        losses = []
        for _ in range(PARITY_STEPS):
            inputs, labels = mask_batch(ids, budget.masking, arch.vocab_size, gen, special=CRAM_SPECIAL_IDS)
            losses.append(float(step.micro_step(inputs, labels)))
            step.update(1.0)  # the peak LRs
        curves[precision] = losses
    worst = max(abs(a - b) / abs(a) for a, b in zip(curves["fp32"], curves["bf16"], strict=True))
    return {"steps": PARITY_STEPS, "fp32": curves["fp32"], "bf16": curves["bf16"], "max_rel_diff": worst,
            "tolerance": PARITY_TOLERANCE, "ok": worst <= PARITY_TOLERANCE}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="24")
    parser.add_argument("--micro-batches", default="64,128,256")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/gpu_check.json"))
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to torch; nothing to check")
        return 1
    from bench import flash_check
    from cramcli import budgets
    from cramcli.train import throughput as bench
    from cramcli.utils.device import setup_device
    from cramcli.utils.flops import arch_flops_per_token, device_peak_tflops

    dev = setup_device("cuda:0", None)
    arch, train = budgets.load("arch", args.budget), budgets.load("train", args.budget)
    name = torch.cuda.get_device_name(dev)
    peak = args.peak_tflops or device_peak_tflops(dev)
    print(f"device {name}, torch {torch.__version__}, CUDA {torch.version.cuda}, peak {peak} TFLOP/s (bf16 dense)")
    result: dict = {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda, "peak_tflops": peak}

    t0 = time.perf_counter()
    result["bf16_parity"] = parity = bf16_parity(arch, train, dev)
    print(f"[1] bf16 vs fp32 training parity over {parity['steps']} steps: max relative loss difference "
          f"{parity['max_rel_diff']:.2e} (≤ {parity['tolerance']}) {'OK' if parity['ok'] else 'FAILED'} "
          f"[{time.perf_counter() - t0:.0f} s]")
    print(f"    fp32 {' '.join(f'{x:.4f}' for x in parity['fp32'])}")
    print(f"    bf16 {' '.join(f'{x:.4f}' for x in parity['bf16'])}")

    t0 = time.perf_counter()
    print("[2] flash-attn vs SDPA:")
    flash_rc = flash_check.main(["--repeats", "10"])
    result["flash_check"] = flash_check.status(flash_rc)
    print(f"    [{time.perf_counter() - t0:.0f} s]")

    flops = arch_flops_per_token(arch, arch.max_seq_length, train.masking.rate)
    step = bench.StepBench(arch, train, dev)
    rows = []
    print(f"[3] training step, {arch.num_layers}×{arch.hidden_size} seq {arch.max_seq_length}, {step.precision}:")
    print(f"    {'micro-batch':>11} {'mode':>9} {'tokens/s':>10} {'step ms':>8} {'MFU':>6} {'peak GB':>8} "
          f"{'warm-up s':>9}")
    for compiled in (False,) if args.no_compile else (False, True):
        for size in (int(s) for s in args.micro_batches.split(",")):
            row = step.measure(size, compiled)
            if row is None:
                print(f"    {size:>11} {'compiled' if compiled else 'eager':>9}  out of memory")
                continue
            row["mfu"] = row["tokens_per_s"] * flops / (peak * 1e12) if peak else None
            rows.append(row)
            mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "n/a"
            print(f"    {size:>11} {'compiled' if compiled else 'eager':>9} {row['tokens_per_s']:>10,.0f} "
                  f"{row['step_s'] * 1e3:>8.1f} {mfu:>6} {row['peak_memory_mb'] / 1024:>8.1f} {row['warmup_s']:>9.1f}")
    result["throughput"] = rows

    t0 = time.perf_counter()
    modern_arch, modern_train = with_options(arch, train)
    options_parity = bf16_parity(modern_arch, modern_train, dev)
    syncs = {"budget": host_syncs_per_step(arch, train, dev),
             "options": host_syncs_per_step(modern_arch, modern_train, dev)}
    options_ok = options_parity["ok"] and syncs["options"] <= syncs["budget"]
    result["options"] = {"bf16_parity": options_parity, "host_syncs_per_step": syncs, "ok": options_ok}
    print(f"[4] every modern option on: bf16 parity max relative loss difference {options_parity['max_rel_diff']:.2e}"
          f" (≤ {options_parity['tolerance']}); host syncs per step {syncs['options']:g} (the budget's own step: "
          f"{syncs['budget']:g}) {'OK' if options_ok else 'FAILED'} [{time.perf_counter() - t0:.0f} s]")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"saved {args.out}")
    if not parity["ok"] or not options_ok or flash_rc not in (flash_check.PASSED, flash_check.SKIPPED):
        return 1
    return flash_rc


if __name__ == "__main__":
    sys.exit(main())
