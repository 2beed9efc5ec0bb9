"""Budget files for comparing recipes on a CPU (docs/recipes.md): the `v2` and `modern` presets and each modern
option alone on v2, all at one small size, written from the presets themselves so they cannot drift from them.

Every recipe gets the same dimensions (4 layers, hidden 256, 4 heads, intermediate 1024, vocabulary 8192,
sequence 128) and `compile: false` (inductor's compile time on a CPU would eat minutes of a few-minute budget);
everything else is the preset's. Also writes `data.json`: v2's data budget for the Wikipedia sample at that
vocabulary, with a held-out split of about 40 documents capped at 512 rows.

    python3 -m bench.recipe_budgets [--out outputs/recipes] [--source ../shared/data/corpus/enwiki-2015-sample]

Then, e.g.: `cram compare -r outputs/recipes/v2.json:outputs/recipes/v2-small.json
-r outputs/recipes/modern.json:outputs/recipes/modern-small.json --minutes 6 --repeats 2 --threads 2
--data outputs/data/wiki8k` (the full list of commands is in docs/recipes.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cramcli import budgets

DIMENSIONS = {"num_layers": 4, "hidden_size": 256, "num_heads": 4, "intermediate_size": 1024, "vocab_size": 8192,
              "max_seq_length": 128}
# Each modern option alone, laid over v2: train file name → train fields; arch file name → arch fields.
TRAIN_OPTIONS: dict[str, dict[str, Any]] = {
    "token-ramp": {"batch_ramp": 300_000},
    "wsd": {"schedule": {"name": "budget-wsd", "warmup": 0.05, "cooldown": 0.3, "decay": "linear"}},
    "lr2e-3": {"optimizer": {"lr": 0.002}},
    "muon": {"optimizer": {"name": "muon", "muon": {"lr": 0.02, "adjust_lr_fn": "original"}}},
    "mask40": {"masking": {"rate": 0.4}},
}
ARCH_OPTIONS: dict[str, dict[str, Any]] = {
    "rotary": {"position_embedding": "rotary"},
    "qk-norm": {"qk_norm": "layer"},
    "relu2": {"activation": "relu2"},
    "zero-init": {"zero_init_residual": True},
    "untied": {"tie_decoder": False},
}


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    return {k: merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
            for k, v in {**base, **over}.items()}


def files(source: str) -> dict[str, dict[str, Any]]:
    """File name → validated budget (as JSON) for every recipe part."""
    out: dict[str, dict[str, Any]] = {}
    for preset in ("v2", "modern"):
        out[f"{preset}.json"] = merge(budgets.load("train", preset).model_dump(mode="json"), {"compile": False})
        out[f"{preset}-small.json"] = merge(budgets.load("arch", preset).model_dump(mode="json"), DIMENSIONS)
    for name, fields in TRAIN_OPTIONS.items():
        out[f"{name}.json"] = merge(out["v2.json"], fields)
    for name, fields in ARCH_OPTIONS.items():
        out[f"{name}.json"] = merge(out["v2-small.json"], fields)
    data = budgets.load("data", "v2").model_dump(mode="json")
    out["data.json"] = merge(data, {"source": source, "max_documents": 100_000, "tokenizer": {"vocab_size": 8192},
                                    "validation": {"share": 0.02, "max_rows": 512}})
    kinds = {"data.json": budgets.DataBudget} | {n: budgets.ArchBudget for n in out if n.endswith("small.json")}
    kinds |= {f"{n}.json": budgets.ArchBudget for n in ARCH_OPTIONS}
    for name, budget in out.items():
        kinds.get(name, budgets.TrainBudget).model_validate(budget)  # each file is a valid budget of its kind
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/recipes"))
    parser.add_argument("--source", default="../shared/data/corpus/enwiki-2015-sample")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    written = files(args.source)
    for name, budget in written.items():
        (args.out / name).write_text(json.dumps(budget, indent=2) + "\n")
    print(f"wrote {len(written)} budget files to {args.out}")


if __name__ == "__main__":
    main()
