"""The `modern` preset (docs/recipes.md): v2 with the options that paid in `cram compare`, at v2's sizes; and the
comparison budgets `bench/recipe_budgets.py` writes, which must show every one of its changes alone on v2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import recipe_budgets
from cramcli import budgets

SIZES = ("num_layers", "hidden_size", "num_heads", "intermediate_size", "vocab_size", "max_seq_length")


def _differences(a: Any, b: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Dotted field → (a's value, b's value) wherever two budget dumps differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: dict[str, tuple[Any, Any]] = {}
        for key in a.keys() | b.keys():
            out |= _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return {} if a == b else {prefix.rstrip("."): (a, b)}


def _dump(kind: str, name: str) -> dict[str, Any]:
    return budgets.load(kind, name).model_dump(mode="json")


def test_modern_changes_what_v2_layers_do_not_their_size_nor_the_data_or_glue() -> None:
    assert "modern" in budgets.preset_names()
    arch = _differences(_dump("arch", "v2"), _dump("arch", "modern"))
    assert not set(arch) & set(SIZES)
    assert arch == {"position_embedding": ("scaled-sinusoidal", "rotary"), "qk_norm": ("none", "layer")}
    assert _differences(_dump("data", "v2"), _dump("data", "modern")) == {}
    assert _differences(_dump("glue", "v2"), _dump("glue", "modern")) == {}


def test_modern_training_is_v2_with_the_documented_changes_and_full_size_for_a_gpu_day() -> None:
    changed = _differences(_dump("train", "v2"), _dump("train", "modern"))
    assert set(changed) == {"optimizer.name", "optimizer.lr", "optimizer.muon.lr", "optimizer.muon.adjust_lr_fn",
                            "schedule.name", "schedule.warmup", "schedule.cooldown", "batch_ramp"}
    modern = budgets.load("train", "modern")
    assert (modern.hours, modern.batch_size, modern.precision, modern.compile) == (24.0, 8192, "bf16", True)
    assert modern.batch_ramp >= 1  # keyed to micro-steps (tokens), not to the share of the budget


def test_every_change_of_the_preset_is_compared_alone_on_v2(tmp_path: Path) -> None:
    files = recipe_budgets.files(str(tmp_path / "corpus"))
    v2_train, v2_arch = files["v2.json"], files["v2-small.json"]
    modern_train = _differences(v2_train, files["modern.json"])
    modern_arch = _differences(v2_arch, files["modern-small.json"])
    alone = {name: _differences(v2_train, files[f"{name}.json"]) for name in recipe_budgets.TRAIN_OPTIONS}
    alone |= {name: _differences(v2_arch, files[f"{name}.json"]) for name in recipe_budgets.ARCH_OPTIONS}
    covered: dict[str, Any] = {}
    for diff in alone.values():
        assert diff, "an ablation file that changes nothing"
        covered |= diff
    for field, (_, value) in {**modern_train, **modern_arch}.items():
        assert field in covered and covered[field][1] == value, f"the preset's {field} is not compared alone"


def test_comparison_budgets_share_one_size_and_run_eagerly(tmp_path: Path) -> None:
    files = recipe_budgets.files("corpus")
    arches = [b for name, b in files.items() if "num_layers" in b]
    assert len(arches) == 2 + len(recipe_budgets.ARCH_OPTIONS)
    assert {tuple(a[k] for k in SIZES) for a in arches} == {(4, 256, 4, 1024, 8192, 128)}
    trains = [b for b in files.values() if "optimizer" in b]
    assert trains and all(not t["compile"] for t in trains)
    assert files["data.json"]["tokenizer"]["vocab_size"] == 8192 and files["data.json"]["validation"]["share"] > 0
    for name, budget in files.items():  # what main() writes is what the CLI reads
        (tmp_path / name).write_text(json.dumps(budget))
    assert budgets.load("train", str(tmp_path / "modern.json")).optimizer.name == "muon"
