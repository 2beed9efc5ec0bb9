"""The GLUE-sane protocol over trials: every (task, trial) fine-tuned once, saved as it finishes, reused on a rerun
only when it was made from the same weights, settings and data; medians and spread per task; `results.json`.

Layout of the results folder: `trials/<task>_<n>.json` (one per finished fine-tuning), `results.json`,
`hparams.json`, `glue.png` (medians and spread) and the stage's `report.json`.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console, Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from tokenizers import Tokenizer

from cramcli.budgets import GlueBudget
from cramcli.data.tokenizer import SpecialIds
from cramcli.glue import finetune as ft
from cramcli.glue.loaders import TaskData, load_task
from cramcli.glue.metrics import CARD_COLUMNS, WNLI_COLUMN, card_average, card_numbers, median_and_range
from cramcli.glue.tasks import ORIGINAL_ORDER, Task
from cramcli.utils import atomic, run_folder
from cramcli.utils.device import Precision
from cramcli.utils.digest import weights_sha256
from cramcli.utils.errors import UsageError
from cramcli.utils.plots import glue_png


@dataclass
class GlueSettings:
    """Everything a GLUE run depends on besides the weights (those are keyed by their hash)."""

    budget: GlueBudget
    tasks: list[Task]
    glue_dir: Path | None
    max_train_examples: int | None
    max_eval_examples: int | None
    legacy_attention_mask: bool
    seed: int

    def record(self) -> dict[str, Any]:
        """The settings as written to hparams.json."""
        return {"budget": self.budget.model_dump(mode="json"), "seed": self.seed,
                "max_train_examples": self.max_train_examples, "max_eval_examples": self.max_eval_examples,
                "legacy_attention_mask": self.legacy_attention_mask}

    def comparable(self) -> dict[str, Any]:
        """What must match to reuse trials; the trial count may grow (seeds depend on the index only)."""
        record = self.record()
        return {**record, "budget": {k: v for k, v in record["budget"].items() if k != "trials"}}


def trial_seed(seed: int, task: str, trial: int) -> int:
    """Distinct, reproducible seed per (task, trial) from --seed."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{task}:{trial}".encode()).digest()[:4], "big") % 2**31


@dataclass
class GlueModel:
    """The checkpoint to fine-tune with its own tokenizer and special ids, checked before anything is written."""

    checkpoint: Path
    tokenizer: Tokenizer
    special: SpecialIds

    @classmethod
    def open(cls, checkpoint: Path, max_length: int) -> GlueModel:
        tok = ft.load_glue_tokenizer(checkpoint, max_length)
        return cls(checkpoint, tok, ft.glue_special_ids(checkpoint, tok))


def run_glue(model: GlueModel, settings: GlueSettings, out: Path, *, device: torch.device, precision: Precision,
             console: Console, quiet: bool) -> dict[str, Any]:
    """Fine-tune every task `trials` times (finished trials of the same weights, settings and data are kept), then
    write `results.json` and `glue.png` into `out`; returns the results document."""
    from cramcli.model.checkpoint import load_pretrained  # looked up per call: tests stand a tiny model in

    cfg, checkpoint, tok, special = settings.budget, model.checkpoint, model.tokenizer, model.special
    digest = weights_sha256(checkpoint)
    overrides = ft.model_overrides(cfg, settings.legacy_attention_mask)
    # `first-task` warmup: the first task in the original's order sets every task's warmup step count.
    first = min(settings.tasks, key=lambda t: ORIGINAL_ORDER.index(t.name))
    loaded = {first.name: load_task(first, settings.glue_dir)}
    first_n = len(_subset(loaded[first.name].train, settings.max_train_examples, settings.seed))
    results: dict[str, Any] = {}
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, transient=False, disable=quiet)
    with progress:
        bar_tasks = progress.add_task("tasks", total=len(settings.tasks))
        for task in settings.tasks:
            seeds = [trial_seed(settings.seed, task.name, i) for i in range(cfg.trials)]
            data = loaded.pop(task.name, None) or load_task(task, settings.glue_dir)
            train_ex = _subset(data.train, settings.max_train_examples, settings.seed)
            dev_ex = {s: ex[:settings.max_eval_examples] if settings.max_eval_examples else ex
                      for s, ex in data.dev.items()}
            warmup = ft.warmup_steps(cfg, len(train_ex), first_n)
            key = run_folder.fingerprint({"weights_sha256": digest, "settings": settings.comparable(),
                                          "task": task.name, "data": _data_digest(train_ex, dev_ex)})
            done = {i: _read_trial(out, task, i, warmup, key) for i in range(cfg.trials)}
            todo = [i for i, r in done.items() if r is None]
            if todo:
                enc_train = ft.encode(tok, train_ex, special.pad)
                enc_dev = {s: ft.encode(tok, ex, special.pad) for s, ex in dev_ex.items()}
            bar_trials = progress.add_task(f"  {task.name} trials", total=cfg.trials, completed=cfg.trials - len(todo))
            for i in todo:
                t0 = time.perf_counter()
                ft.seed_everything(seeds[i])
                net = load_pretrained(checkpoint, head="cls", num_labels=task.num_labels, **overrides).to(device)
                bar_epoch = progress.add_task(f"    {task.name} trial {i + 1} epoch 1", total=None)

                def on_step(epoch: int, step: int, per_epoch: int, loss: float, _bar: Any = bar_epoch,
                            _name: str = f"{task.name} trial {i + 1}") -> None:
                    progress.update(_bar, total=per_epoch, completed=step + 1,
                                    description=f"    {_name} epoch {epoch + 1}/{cfg.epochs} loss {loss:.3f}")

                metrics = ft.run_trial(net, task, enc_train, enc_dev, cfg, epochs=cfg.epochs, seed=seeds[i],
                                       device=device, warmup=warmup, on_step=on_step)
                progress.remove_task(bar_epoch)
                done[i] = {"task": task.name, "trial": i, "seed": seeds[i], "metrics": metrics,
                           "card": card_numbers(task.name, metrics), "steps": ft.trial_steps(len(train_ex), cfg),
                           "warmup_steps": warmup, "precision": precision.name, "key": key,
                           "weights_sha256": digest, "seconds": round(time.perf_counter() - t0, 2)}
                atomic.write_json(_trial_path(out, task, i), done[i])
                progress.advance(bar_trials)
                del net
            results[task.name] = _task_result(data, len(train_ex), dev_ex, [done[i] for i in range(cfg.trials)])
            progress.advance(bar_tasks)

    medians = {col: r["median"][col] for r in results.values() for col in r["median"]}
    average, complete = card_average(medians)
    # The summary is what people read: 2 decimals. `tasks` keeps every raw number for scripts.
    summary = {"columns": {c: round(v, 2) for c, v in medians.items()},
               "average": round(average, 2) if medians else None, "average_complete": complete,
               "average_of": sum(1 for c, *_ in CARD_COLUMNS if c in medians)}
    doc = {"checkpoint": str(checkpoint), "checkpoint_path": str(checkpoint.resolve()), "weights_sha256": digest,
           "protocol": cfg.protocol, "trials": cfg.trials, "seed": settings.seed, "precision": precision.name,
           "warmup_mode": cfg.warmup_mode,
           "special_ids": {"pad": special.pad, "cls": special.cls, "sep": special.sep, "mask": special.mask},
           "summary": summary, "tasks": results}
    atomic.write_json(out / "results.json", doc)
    columns = [c for c, *_ in (*CARD_COLUMNS, WNLI_COLUMN)]
    atomic.write_bytes(out / "glue.png", glue_png(
        results, columns, f"GLUE dev, median of {cfg.trials} trial(s), {cfg.protocol} protocol"))
    return doc


def _data_digest(train: list, dev: dict[str, list]) -> str:
    """The examples a trial trains and is measured on (other files, limits or subsets give another digest)."""
    return run_folder.fingerprint({"train": train, "dev": dev})


def _trial_path(out: Path, task: Task, trial: int) -> Path:
    return out / "trials" / f"{task.name}_{trial}.json"


def _read_trial(out: Path, task: Task, trial: int, warmup: int, key: str) -> dict[str, Any] | None:
    """A finished trial of these weights, settings and data (None: train it, replacing an outdated one), when
    it used this run's warmup (under `first-task` that depends on the tasks run)."""
    path = _trial_path(out, task, trial)
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    if record.get("key") != key:
        return None  # other weights (e.g. a resumed pretraining's new final/), settings or data: rerun
    if record.get("warmup_steps", warmup) != warmup:
        raise UsageError(f"{path}: trained with {record['warmup_steps']} warmup steps, this run gives {task.name} "
                         f"{warmup} (another --tasks set under warmup_mode first-task); pass --force or another --out")
    return record


def _subset(examples: list, limit: int | None, seed: int) -> list:
    """A seeded random subset (GLUE train files are often ordered, so the first rows would be biased)."""
    if limit is None or limit >= len(examples):
        return examples
    return random.Random(seed).sample(examples, limit)


def _task_result(data: TaskData, n_train: int, dev: dict[str, list], trials: list[dict]) -> dict[str, Any]:
    columns = list(trials[0]["card"])
    stats = {col: median_and_range([t["card"][col] for t in trials]) for col in columns}
    return {
        "source": data.source, "files": data.files,
        "train_examples_read": len(data.train), "train_examples_used": n_train,
        "dev_examples": {s: len(ex) for s, ex in dev.items()},
        "seeds": [t["seed"] for t in trials], "trials": trials,
        "median": {c: s[0] for c, s in stats.items()},
        "min": {c: s[1] for c, s in stats.items()}, "max": {c: s[2] for c, s in stats.items()},
    }


def render(results: dict[str, Any], summary: dict[str, Any]) -> Group:
    """The table people read: medians ×100, min–max below, and what the average is over."""
    cols = [c for c, *_ in (*CARD_COLUMNS, WNLI_COLUMN) if c in summary["columns"]]
    table = Table(title="GLUE dev (median over trials, ×100)")
    for c in [*cols, "Avg"]:
        table.add_column(c, justify="right")
    spread = {c: (r["min"][c], r["max"][c]) for r in results.values() for c in r["min"]}
    avg = "—" if summary["average"] is None else f"{summary['average']:.1f}"
    table.add_row(*(f"{summary['columns'][c]:.1f}" for c in cols), avg)
    table.add_row(*(f"[dim]{spread[c][0]:.1f}–{spread[c][1]:.1f}[/]" for c in cols), "", end_section=True)
    note = ("average of all 9 numbers (MNLI counted twice, as on the model card)" if summary["average_complete"]
            else f"partial average over {summary['average_of']} numbers (not comparable to the card's)")
    return Group(table, Text(f"second row: min–max over trials; Avg: {note}", style="dim"))
