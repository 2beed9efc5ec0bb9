"""Pretraining step throughput on CPU, side by side in one run: cram vs the original's step vs `transformers` BERT.

Every side trains the same arch (default: the issue's h256 / 4 layers / 4 heads / FFN 1024 / vocab 32768 /
seq 128; `--large` adds the 24-hour 16×768) on the same random rows with the same step: masking, forward,
backward, gradient clipping (0.5) and an AdamW step, with 2 threads, dropout off.
- cram: `cram bench`'s StepBench — the very loop `cram pretrain` runs, with its CPU setup (here with a batch of
  one micro-batch, so it too steps the optimizer after every micro-batch).
- reference: bench/reference_model.py — the original cramming step written plainly (same math, its layout,
  AdamW without foreach as in the recipe).
- hf: `transformers.BertForMaskedLM` of the same sizes (post-LN, biases, dense prediction: its usual step).
Each side runs in its own spawned process (so peak RSS is its own), twice in alternating order; the faster
of the two runs counts, which damps the noise of a shared machine. Results go to outputs/bench/pretrain.json.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

THREADS, WARMUP = 2, 2
ARCHS = {
    "h256": {"num_layers": 4, "hidden_size": 256, "num_heads": 4, "intermediate_size": 1024, "micro_batch": 32,
             "steps": 8},
    "c5-16x768": {"num_layers": 16, "hidden_size": 768, "num_heads": 12, "intermediate_size": 3072, "micro_batch": 16,
                  "steps": 3},
}
RESULTS = Path("outputs/bench/pretrain.json")


def _arch(name: str):
    from cramcli import budgets

    sizes = {k: v for k, v in ARCHS[name].items() if k not in ("micro_batch", "steps")}
    return budgets.ArchBudget.model_validate({**budgets.load("arch", "24").model_dump(), **sizes})


def _train(side: str, arch_name: str, queue: mp.Queue) -> None:
    import torch

    torch.set_num_threads(THREADS)
    from cramcli import budgets

    arch, train = _arch(arch_name), budgets.load("train", "24")
    batch, steps = ARCHS[arch_name]["micro_batch"], ARCHS[arch_name]["steps"]
    if side == "cram":
        from cramcli.train import throughput as bench
        from cramcli.utils.cpu import keep_freed_memory

        keep_freed_memory()  # what `cram bench` / `cram pretrain` do on a CPU
        bench.WARMUP_STEPS, bench.MIN_STEPS, bench.MIN_SECONDS = WARMUP, steps, 0.0
        # a batch of one micro-batch: an optimizer step per micro-step, as the other sides run
        whole = budgets.TrainBudget.model_validate({**train.model_dump(), "batch_size": batch,
                                                    "micro_batch_size": batch})
        row = bench.StepBench(arch, whole, torch.device("cpu")).measure(batch, compiled=False)
        queue.put({"tokens_per_s": row["tokens_per_s"], "step_s": row["step_s"],
                   "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
        return
    from cramcli.data.tokenizer import CRAM_SPECIAL_IDS
    from cramcli.train.optim import param_groups
    from cramcli.train.step import mask_batch

    torch.manual_seed(0)
    if side == "reference":
        from bench.reference_model import ReferenceMLM

        model = ReferenceMLM(arch)
        foreach = False  # the recipe's AdamW: no foreach
    else:
        from transformers import BertConfig, BertForMaskedLM

        model = BertForMaskedLM(BertConfig(
            vocab_size=arch.vocab_size, hidden_size=arch.hidden_size, num_hidden_layers=arch.num_layers,
            num_attention_heads=arch.num_heads, intermediate_size=arch.intermediate_size,
            max_position_embeddings=arch.max_seq_length, attn_implementation="sdpa"))
        foreach = None  # torch's default, what the HF Trainer uses
    model.eval()
    opt = train.optimizer
    optimizer = torch.optim.AdamW(param_groups(model, opt.no_decay, opt.weight_decay), lr=opt.lr,
                                  betas=tuple(opt.betas), eps=opt.eps, foreach=foreach)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(7, arch.vocab_size, (batch, arch.max_seq_length), generator=gen)
    start = 0.0
    for step in range(WARMUP + steps):
        if step == WARMUP:
            start = time.perf_counter()
        inputs, labels = mask_batch(ids, train.masking, arch.vocab_size, gen, special=CRAM_SPECIAL_IDS)
        model(input_ids=inputs, labels=labels).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - start
    queue.put({"tokens_per_s": steps * ids.numel() / seconds, "step_s": seconds / steps,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def _measure(side: str, arch_name: str) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_train, args=(side, arch_name, queue))
    proc.start()
    result = queue.get(timeout=1800)
    proc.join()
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        from cramcli.train import throughput  # noqa: F401
    except ImportError:
        print("pretrain bench: skipped (cramcli is not installed)")
        return 0
    sides = ("cram", "reference", "hf")
    results: dict[str, dict] = {}
    for arch_name in ["h256"] + (["c5-16x768"] if "--large" in argv else []):
        runs: dict[str, list[dict]] = {s: [] for s in sides}
        for order in (sides, sides[::-1]):
            for side in order:
                runs[side].append(_measure(side, arch_name))
        best = {s: max(r, key=lambda row: row["tokens_per_s"]) for s, r in runs.items()}
        cfg = ARCHS[arch_name]
        print(f"pretrain step bench (CPU, {THREADS} threads, {arch_name}: {cfg['num_layers']} layers × "
              f"{cfg['hidden_size']}, {cfg['num_heads']} heads, FFN {cfg['intermediate_size']}, vocab 32768, "
              f"seq 128, micro-batch {cfg['micro_batch']}; best of 2 runs):")
        for side in sides:
            row = best[side]
            print(f"  {side:9s} {row['tokens_per_s']:9.0f} tokens/s  {row['step_s'] * 1e3:8.0f} ms/step  "
                  f"peak RSS {row['peak_rss_mb']:7.0f} MB   (runs: "
                  + ", ".join(f"{r['tokens_per_s']:.0f}" for r in runs[side]) + ")")
        ratios = {f"cram/{s}": best["cram"]["tokens_per_s"] / best[s]["tokens_per_s"] for s in sides[1:]}
        print("  ratios: " + ", ".join(f"{k} {v:.2f}×" for k, v in ratios.items()))
        results[arch_name] = {"arch": cfg, "threads": THREADS, "best": best, "runs": runs, "ratios": ratios}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"  saved {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
