"""`cram compare`: several recipes (train + arch budgets) trained on the same prepared data for the same wall
clock, one at a time with the same thread count, `repeats` times each with seeds 0, 1, ..., every run scored on
the same held-out rows at the same points of training time (multiples of one `eval_every_minutes`, plus the end).

A recipe is named `TRAIN[:ARCH]`, each part a preset name or a JSON file (`v2`, `v2:mine.json`,
`runs/train.json:runs/arch.json`); without `:ARCH` the arch has the train budget's name, as in `cram pretrain`.
Every run ("arm") lives in `arms/<recipe>_seed<N>/` of the compare folder with its `arm.json` result, keyed on
its settings: a killed compare run again reuses the arms already finished and retrains the rest.
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from cramcli import budgets
from cramcli.data.prepared import PreparedData, open_for_training
from cramcli.train.dashboard import Dashboard
from cramcli.train.metrics import heldout_rows, training_rows
from cramcli.train.trainer import Trainer
from cramcli.utils import run_folder
from cramcli.utils.atomic import write_json
from cramcli.utils.errors import UsageError
from cramcli.utils.jsonfile import read_object_or_none

ARM_FILE = "arm.json"


@dataclass(frozen=True)
class Recipe:
    label: str
    """As typed after --recipe."""
    name: str
    """Short: the budgets' names (`v2`, `mine` for mine.json), `TRAIN:ARCH` when an arch was named."""
    train: budgets.TrainBudget
    arch: budgets.ArchBudget


def parse_recipe(spec: str, minutes: float, eval_every_minutes: float) -> Recipe:
    """`TRAIN[:ARCH]` → the budgets, with the compare's time and evaluation cadence laid over the train budget."""
    train_name, _, arch_name = spec.partition(":")
    if not train_name:
        raise UsageError(f"--recipe {spec!r}: name a train budget, e.g. --recipe v2 or --recipe train.json:arch.json")
    flags = {"hours": ("--minutes", minutes / 60), "eval_every_minutes": ("--eval-every-minutes", eval_every_minutes),
             "checkpoint_every_minutes": ("--minutes", 1e6)}  # an arm is rerun whole, never resumed midway
    try:
        train = budgets.resolve("train", train_name, flags).budget
        arch = budgets.resolve("arch", arch_name or train_name).budget
    except UsageError as exc:
        raise UsageError(f"--recipe {spec}: {exc.lines[0].partition(': ')[2] or exc.lines[0]}") from None
    name = budgets.label(train_name) + (f":{budgets.label(arch_name)}" if arch_name else "")
    return Recipe(spec, name, train, arch)


def check_recipes(recipes: list[Recipe], data: PreparedData) -> None:
    """One-line errors for what would make the comparison unfair or impossible."""
    if len({r.label for r in recipes}) != len(recipes):
        raise UsageError("--recipe: the same recipe is named twice; name each once (use --repeats for more runs)")
    vocab = {r.arch.vocab_size for r in recipes}
    if len(vocab) > 1:
        sizes = ", ".join(f"{r.label} {r.arch.vocab_size}" for r in recipes)
        raise UsageError(f"--recipe: the arch budgets have different vocab_size ({sizes}); recipes are compared on "
                         "one prepared data set and its tokenizer, so give them the same vocab_size")
    for r in recipes:
        if r.train.micro_batch_size > data.num_rows:
            raise UsageError(f"--recipe {r.label}: micro_batch_size {r.train.micro_batch_size} is more than the "
                             f"{data.num_rows} rows of {data.path}; prepare more data or lower it in the budget")
    if data.heldout_rows() is None:
        raise UsageError(f"{data.path}: no held-out split to score the recipes on; re-run `cram prepare-data` with "
                         "validation.share > 0 in the data budget (the default is 0.005)")


def distinct_names(recipes: list[Recipe]) -> list[Recipe]:
    """The short names, unless two recipes would share one (`a/train.json`, `b/train.json`): then as typed."""
    if len({r.name for r in recipes}) == len(recipes):
        return recipes
    return [replace(r, name=r.label) for r in recipes]


def open_data(data: Path | None, recipes: list[Recipe], warn: Callable[[str], object]) -> PreparedData:
    """The prepared data every arm trains on (`--data`, else what prepare-data wrote for the first recipe's
    train budget name), its shards verified once, checked against every arch."""
    first = budgets.label(recipes[0].label.partition(":")[0])
    prepared = open_for_training(data, first, recipes[0].arch, warn=warn)
    for recipe in recipes[1:]:
        open_for_training(prepared.path, first, recipe.arch, verify=False, warn=lambda _: None)
    return prepared


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[-60:] or "recipe"


class Comparison:
    """Runs (or reuses) every arm, in order: repeat 0 of every recipe, then repeat 1, ... (so a stopped compare
    has one full round early)."""

    def __init__(self, recipes: list[Recipe], data: PreparedData, out: Path, *, repeats: int, threads: int,
                 device: torch.device) -> None:
        self.recipes, self.data, self.out = recipes, data, Path(out)
        self.repeats, self.threads, self.device = repeats, threads, device

    def arm_dir(self, index: int, seed: int) -> Path:
        return self.out / "arms" / f"{index:02d}-{slug(self.recipes[index].name)}_seed{seed}"

    def settings(self, recipe: Recipe, seed: int) -> dict[str, Any]:
        return {"train": recipe.train.model_dump(mode="json"), "arch": recipe.arch.model_dump(mode="json"),
                "data": self.data.manifest.get("content_hash"), "seed": seed, "threads": self.threads,
                "device": self.device.type}

    def run(self, announce: Callable[[str], None], dashboard: Callable[[], Dashboard]) -> list[list[dict[str, Any]]]:
        """Every arm's result, [recipe][repeat]; stops (KeyboardInterrupt) when an arm was stopped by a signal."""
        results: list[list[dict[str, Any]]] = [[] for _ in self.recipes]
        total = len(self.recipes) * self.repeats
        for seed in range(self.repeats):
            for index, recipe in enumerate(self.recipes):
                number = seed * len(self.recipes) + index + 1
                folder, key = self.arm_dir(index, seed), run_folder.fingerprint(self.settings(recipe, seed))
                done = _finished(folder, key)
                if done is not None:
                    announce(f"arm {number}/{total}: {recipe.name}, seed {seed} — reused (finished earlier)")
                    results[index].append(done)
                    continue
                announce(f"arm {number}/{total}: {recipe.name}, seed {seed} — training "
                         f"{recipe.train.hours * 60:g} min on {self.threads} thread(s)")
                results[index].append(self._train(recipe, seed, folder, key, dashboard()))
        return results

    def _train(self, recipe: Recipe, seed: int, folder: Path, key: str, dash: Dashboard) -> dict[str, Any]:
        with run_folder.open_folder(folder, command="compare-arm", settings_fingerprint=key, force=True):
            trainer = Trainer(recipe.train, recipe.arch, self.data, folder, device=self.device, seed=seed,
                              config_key=key, dashboard=dash)
            reason = trainer.run()
            if reason.startswith("signal"):
                raise KeyboardInterrupt
            rows = trainer.progress.log.rows
            trained = trainer.clock.elapsed()
            result = {"recipe": recipe.label, "seed": seed, "settings_key": key, "stop_reason": reason,
                      "training_s": trained, "tokens": trainer.progress.tokens,
                      "tokens_per_s": trainer.progress.tokens / trained if trained > 0 else None,
                      "eval_s": trainer.progress.eval_seconds,
                      "final_train_loss": training_rows(rows)[-1]["loss"] if training_rows(rows) else None,
                      "curve": [{"due_s": r["due_s"], "elapsed_s": r["elapsed_s"], "tokens": r["tokens"],
                                 "heldout_loss": r["heldout_loss"], "heldout_accuracy": r["heldout_accuracy"]}
                                for r in heldout_rows(rows)]}
            # Checkpoints are not needed once the arm is done (an arm is rerun whole): keep the folder small.
            shutil.rmtree(folder / "checkpoints", ignore_errors=True)
            write_json(folder / ARM_FILE, result)  # written last: its presence marks the arm finished
        return result


def _finished(folder: Path, key: str) -> dict[str, Any] | None:
    marker = run_folder.read_marker(folder)
    result = read_object_or_none(folder / ARM_FILE)
    return result if marker and result and result.get("settings_key") == key else None


# ----------------------------------------------------------------------------------------------------------
# summarising


def points(minutes: float, eval_every_minutes: float) -> list[float]:
    """The common evaluation times in seconds: every multiple of eval_every inside the budget, then the end."""
    end = minutes * 60
    step = eval_every_minutes * 60
    times = [k * step for k in range(1, math.ceil(end / step))] if step > 0 else []
    return [t for t in times if t < end - 1e-9] + [end]


def loss_at(curve: list[dict[str, Any]], due_s: float, end: float) -> float | None:
    """The held-out loss an arm logged for `due_s` (the end: its final evaluation)."""
    if due_s >= end - 1e-9:
        return curve[-1]["heldout_loss"] if curve else None
    for row in curve[:-1]:
        if abs(row["due_s"] - due_s) < 1e-6:
            return row["heldout_loss"]
    return None


def time_to_reach(curve: list[dict[str, Any]], target: float, end: float) -> float | None:
    """Training seconds until the held-out loss first falls to `target`, linearly interpolated between
    evaluations (from the start at its first evaluation's loss); None when never reached."""
    previous: tuple[float, float] | None = None
    for i, row in enumerate(curve):
        t = end if i == len(curve) - 1 else row["due_s"]
        loss = row["heldout_loss"]
        if loss <= target:
            if previous is None or previous[1] == loss:
                return t
            t0, l0 = previous
            return t0 + (l0 - target) / (l0 - loss) * (t - t0)
        previous = (t, loss)
    return None


def _stats(values: list[float | None]) -> dict[str, Any]:
    """Mean and spread (half the range: the mean ± spread covers every repeat) over the repeats that have a value."""
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "spread": None, "n": 0}
    return {"mean": sum(present) / len(present), "spread": (max(present) - min(present)) / 2, "n": len(present),
            "values": present}


def summarise(recipes: list[Recipe], results: list[list[dict[str, Any]]], minutes: float,
              eval_every_minutes: float) -> dict[str, Any]:
    """The comparison as numbers: per recipe the held-out loss at every common time (mean ± spread over the
    repeats), tokens seen, tokens/s, the time to reach the first recipe's final loss; and a verdict per recipe
    against the first that names a winner only when the gap is larger than both spreads together."""
    end = minutes * 60
    times = points(minutes, eval_every_minutes)
    rows = []
    for recipe, arms in zip(recipes, results, strict=True):
        rows.append({"recipe": recipe.label, "name": recipe.name,
                     "loss": {f"{t:g}": _stats([loss_at(a["curve"], t, end) for a in arms]) for t in times},
                     "accuracy": _stats([a["curve"][-1]["heldout_accuracy"] if a["curve"] else None for a in arms]),
                     "tokens": _stats([a["tokens"] for a in arms]),
                     "tokens_per_s": _stats([a["tokens_per_s"] for a in arms]),
                     "eval_s": _stats([a["eval_s"] for a in arms])})
    final = f"{end:g}"
    target = rows[0]["loss"][final]["mean"]
    for row, arms in zip(rows, results, strict=True):
        reach = [time_to_reach(a["curve"], target, end) for a in arms] if target is not None else []
        row["time_to_first_final_s"] = _stats(reach)
        row["reached_first_final"] = f"{sum(r is not None for r in reach)}/{len(arms)}"
        row["verdict"] = verdict(rows[0], row, final)
    return {"minutes": minutes, "eval_every_minutes": eval_every_minutes, "times_s": times, "recipes": rows,
            "baseline": rows[0]["name"]}


def verdict(base: dict[str, Any], row: dict[str, Any], final: str) -> str:
    if row is base:
        return "baseline"
    a, b = base["loss"][final], row["loss"][final]
    if a["mean"] is None or b["mean"] is None:
        return "no final held-out loss"
    gap = b["mean"] - a["mean"]
    noise = (a["spread"] or 0.0) + (b["spread"] or 0.0)
    if min(a["n"], b["n"]) < 2:
        return f"{gap:+.4f} nats vs {base['name']} at the end; one repeat, so no spread to judge it by (--repeats 2+)"
    if abs(gap) <= noise:
        return f"{gap:+.4f} nats vs {base['name']} at the end: inside the spread (±{noise:.4f}), no winner"
    better = "lower (better)" if gap < 0 else "higher (worse)"
    return f"{gap:+.4f} nats vs {base['name']} at the end: {better}, beyond the spread (±{noise:.4f})"
