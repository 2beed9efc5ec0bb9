"""The cost of each modern recipe option (docs/recipes.md): the training step of v2 and of v2 with one option on.

Same dimensions for all (default: 4 layers, hidden 256, 4 heads, intermediate 1024, seq 128, vocab 8192), the
very step `cram pretrain` runs (`TrainStep`: masking, forward, backward, clipping, optimizer step), eager, fp32,
on the CPU. It counts CPU seconds of this process (`time.process_time`, one thread) rather than wall clock, and
keeps the best of several interleaved rounds, so other processes on a shared machine disturb it little; the
`zero init` row computes exactly what v2 computes and so shows the remaining noise. The optimizer step is timed
apart: `cram bench` steps the optimizer after every micro-step, training after each batch of
`--accumulation` micro-steps. Results: a table, and JSON under outputs/bench/options.json.

    python3 -m bench.options_bench [--micro-batch 16] [--rounds 4] [--accumulation 4]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from bench.recipe_budgets import DIMENSIONS, merge
from cramcli import budgets
from cramcli.data.tokenizer import CRAM_SPECIAL_IDS
from cramcli.train.step import TrainStep, mask_batch

RESULTS = Path("outputs/bench/options.json")
ALL_ARCH = {"position_embedding": "rotary", "qk_norm": "rms", "activation": "relu2", "glu": False,
            "zero_init_residual": True, "tie_decoder": False}
# name → (arch fields, train fields) laid over v2.
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "v2": ({}, {}),
    "rotary": ({"position_embedding": "rotary"}, {}),
    "qk_norm rms": ({"qk_norm": "rms"}, {}),
    "qk_norm layer": ({"qk_norm": "layer"}, {}),
    "relu2 (gated)": ({"activation": "relu2"}, {}),
    "relu2, no glu": ({"activation": "relu2", "glu": False}, {}),
    "zero init": ({"zero_init_residual": True}, {}),
    "untied decoder": ({"tie_decoder": False}, {}),
    "masking 0.4→0.15": ({}, {"masking": {"rate": 0.4, "final_rate": 0.15}}),
    "muon": ({}, {"optimizer": {"name": "muon"}}),
    "all arch options": (ALL_ARCH, {}),
}


class _Step:
    def __init__(self, arch: dict[str, Any], train: dict[str, Any], micro_batch: int) -> None:
        torch.manual_seed(0)
        base_arch = budgets.load("arch", "v2").model_dump()
        base_train = budgets.load("train", "v2").model_dump() | {"compile": False, "precision": "fp32"}
        self.arch = budgets.ArchBudget.model_validate(merge(base_arch, {**DIMENSIONS, **arch}))
        self.train = budgets.TrainBudget.model_validate(merge(base_train, train))
        seq = self.arch.max_seq_length
        self.step = TrainStep(self.arch, self.train, torch.device("cpu"), tokens_per_micro_batch=micro_batch * seq,
                              special=CRAM_SPECIAL_IDS)
        self.gen = torch.Generator().manual_seed(0)
        self.ids = torch.randint(7, self.arch.vocab_size, (micro_batch, seq), generator=self.gen)

    def timed(self, steps: int) -> tuple[float, float]:
        """CPU seconds per micro-step (masking, forward, backward) and per optimizer step."""
        micro = update = 0.0
        for _ in range(steps):
            t0 = time.process_time()
            inputs, labels = mask_batch(self.ids, self.train.masking, self.arch.vocab_size, self.gen,
                                        special=CRAM_SPECIAL_IDS)
            self.step.micro_step(inputs, labels)
            t1 = time.process_time()
            self.step.update(1.0)
            micro, update = micro + t1 - t0, update + time.process_time() - t1
        return micro / steps, update / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--micro-batch", type=int, default=16, help="sequences per micro-step (16 = 2048 tokens)")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds; the best counts")
    parser.add_argument("--steps", type=int, default=2, help="steps per variant and round")
    parser.add_argument("--accumulation", type=int, default=4, help="micro-steps per optimizer step in training")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    steps = {name: _Step(arch, train, args.micro_batch) for name, (arch, train) in VARIANTS.items()}
    for step in steps.values():
        step.timed(1)  # warm-up
    best = {name: [float("inf"), float("inf")] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            micro, update = step.timed(args.steps)
            best[name] = [min(best[name][0], micro), min(best[name][1], update)]
    tokens, acc = args.micro_batch * DIMENSIONS["max_seq_length"], args.accumulation
    v2_micro, v2_update = best["v2"]
    rows = {name: {"micro_step_cpu_s": round(micro, 4), "optimizer_step_cpu_s": round(update, 4),
                   "tokens_per_cpu_s": round(tokens / (micro + update)),
                   "vs_v2_optimizer_every_micro_step": round((v2_micro + v2_update) / (micro + update), 3),
                   f"vs_v2_optimizer_every_{acc}_micro_steps": round((acc * v2_micro + v2_update)
                                                                     / (acc * micro + update), 3)}
            for name, (micro, update) in best.items()}
    print(f"{'variant':20s} {'micro s':>8s} {'optim s':>8s} {'tok/cpu-s':>10s} {'vs v2':>6s} {f'vs v2 (acc {acc})':>14s}")
    for name, row in rows.items():
        values = list(row.values())
        print(f"{name:20s} {values[0]:8.4f} {values[1]:8.4f} {values[2]:10d} {values[3]:6.3f} {values[4]:14.3f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"dimensions": DIMENSIONS, "micro_batch": args.micro_batch,
                                   "rounds": args.rounds, "steps": args.steps, "variants": rows}, indent=1) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
