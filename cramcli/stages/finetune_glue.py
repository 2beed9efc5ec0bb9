"""Stage `finetune_glue` (alias `glue`): the GLUE-sane protocol over trials, medians and the model card's table.

Layout of `--out` (default `<model>/glue`): `trials/<task>_<n>.json` (one per finished fine-tuning, written as
it completes, so a rerun resumes), `results.json`, `hparams.json`, `report.json`, `glue.png` (medians and spread).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from cramcli.glue.loaders import TaskData, load_task
from cramcli.glue.metrics import CARD_COLUMNS, WNLI_COLUMN, card_average, card_numbers, median_and_range
from cramcli.glue.tasks import ORIGINAL_ORDER, Task, parse_tasks
from cramcli.stages import options
from cramcli.stages.common import load_budget
from cramcli.utils import atomic, run_folder
from cramcli.utils.console import Output
from cramcli.utils.digest import weights_sha256
from cramcli.utils.errors import UsageError
from cramcli.utils.plots import glue_png


def run(
    output: Output,
    *,
    model: Annotated[Path, typer.Option("--model", "-m", help="A cram run folder or an HF-style checkpoint folder.")],
    budget: Annotated[str, typer.Option("--budget", "-b", help="GLUE budget: preset name (24 = GLUE-sane, demo) or JSON file.")] = "24",
    tasks: Annotated[Optional[str], typer.Option("--tasks", help="Comma-separated tasks (cola,sst2,mrpc,qqp,stsb,mnli,qnli,rte,wnli; default: the budget's 8).")] = None,
    trials: Annotated[Optional[int], typer.Option("--trials", help="Fine-tuning trials per task; the median is reported.")] = None,
    glue_dir: Annotated[Optional[Path], typer.Option("--glue-dir", help="Folder with the original GLUE task folders (CoLA/, SST-2/, ...), or HF/parquet exports.")] = None,
    max_train_examples: Annotated[Optional[int], typer.Option("--max-train-examples", help="Use at most this many training examples per task (a quick look).")] = None,
    max_eval_examples: Annotated[Optional[int], typer.Option("--max-eval-examples", help="Evaluate on at most this many dev examples per task.")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Override the budget's epochs (≤ 5 under the GLUE-sane protocol).")] = None,
    precision: options.Precision = None,
    warmup_mode: Annotated[Optional[str], typer.Option("--warmup-mode", help="per-task (the budget's warmup share of each task's steps) or first-task (every task reuses the first task's warmup steps, as the original's single eval.py run).")] = None,
    legacy_attention_mask: Annotated[bool, typer.Option("--legacy-attention-mask", help="Fidelity switch: let padding be attended to, as the original v1 flash model did.")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Results folder (default: <model>/glue).")] = None,
    device: options.Device = None,
    gpu: options.Gpu = None,
    seed: options.Seed = 0,
    force: options.Force = False,
) -> None:
    """Fine-tune on GLUE with the GLUE-sane protocol: one hyperparameter set, ≤ 5 epochs, median over trials.

    Finished (task, trial) results are kept, so an interrupted run resumes where it stopped.
    """
    cfg = load_budget(output, "glue", budget, {
        "trials": ("--trials", trials), "epochs": ("--epochs", epochs), "precision": ("--precision", precision),
        "warmup_mode": ("--warmup-mode", warmup_mode)}).budget
    for flag, value in (("--max-train-examples", max_train_examples), ("--max-eval-examples", max_eval_examples)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} {value}: must be at least 1")
    task_list = parse_tasks(tasks, list(cfg.tasks))
    checkpoint = _checkpoint_dir(Path(model))
    from cramcli.utils.device import setup_device

    dev = setup_device(device, gpu)  # TF32 on CUDA, the allocator setting on a CPU
    out = Path(out) if out is not None else Path(model) / "glue"

    settings = {"budget": cfg.model_dump(mode="json"), "seed": seed, "max_train_examples": max_train_examples,
                "max_eval_examples": max_eval_examples, "legacy_attention_mask": legacy_attention_mask,
                "checkpoint": str(checkpoint.resolve())}
    from cramcli.glue import finetune as ft
    from cramcli.model.checkpoint import load_pretrained

    tok = ft.load_glue_tokenizer(checkpoint, cfg.max_length)
    special = ft.checkpoint_special_ids(checkpoint, tok)
    precision = ft.resolve_precision(cfg.precision, dev)
    fingerprint = run_folder.fingerprint(_comparable(settings))
    with run_folder.open_folder(out, command="finetune-glue", settings_fingerprint=fingerprint, force=force) as done_before:
        if done_before is not None and done_before.get("fingerprint") != fingerprint:
            raise UsageError(f"{out}: holds GLUE results made with other settings; pass --force to start over or "
                             f"another --out")
        atomic.write_json(out / "hparams.json", settings)
        overrides = ft.model_overrides(cfg, legacy_attention_mask)
        # `first-task` warmup: the first task in the original's order sets every task's warmup step count.
        first = min(task_list, key=lambda t: ORIGINAL_ORDER.index(t.name))
        loaded = {first.name: load_task(first, glue_dir)}
        first_n = len(_subset(loaded[first.name].train, max_train_examples, seed))
        started = time.perf_counter()
        results: dict[str, Any] = {}
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=output.console, transient=False, disable=output.quiet)
        with progress:
            bar_tasks = progress.add_task("tasks", total=len(task_list))
            for task in task_list:
                seeds = [trial_seed(seed, task.name, i) for i in range(cfg.trials)]
                data = loaded.pop(task.name, None) or load_task(task, glue_dir)
                train_ex = _subset(data.train, max_train_examples, seed)
                warmup = ft.warmup_steps(cfg, len(train_ex), first_n)
                done = {i: _read_trial(out, task, i, warmup) for i in range(cfg.trials)}
                todo = [i for i, r in done.items() if r is None]
                dev_ex = {s: ex[:max_eval_examples] if max_eval_examples else ex for s, ex in data.dev.items()}
                if todo:
                    enc_train = ft.encode(tok, train_ex, special.pad)
                    enc_dev = {s: ft.encode(tok, ex, special.pad) for s, ex in dev_ex.items()}
                bar_trials = progress.add_task(f"  {task.name} trials", total=cfg.trials, completed=cfg.trials - len(todo))
                for i in todo:
                    t0 = time.perf_counter()
                    ft.seed_everything(seeds[i])
                    net = load_pretrained(checkpoint, head="cls", num_labels=task.num_labels, **overrides).to(dev)
                    bar_epoch = progress.add_task(f"    {task.name} trial {i + 1} epoch 1", total=None)

                    def on_step(epoch: int, step: int, per_epoch: int, loss: float, _bar: Any = bar_epoch,
                                _name: str = f"{task.name} trial {i + 1}") -> None:
                        progress.update(_bar, total=per_epoch, completed=step + 1,
                                        description=f"    {_name} epoch {epoch + 1}/{cfg.epochs} loss {loss:.3f}")

                    metrics = ft.run_trial(net, task, enc_train, enc_dev, cfg, epochs=cfg.epochs, seed=seeds[i],
                                           device=dev, warmup=warmup, on_step=on_step)
                    progress.remove_task(bar_epoch)
                    done[i] = {"task": task.name, "trial": i, "seed": seeds[i], "metrics": metrics,
                               "card": card_numbers(task.name, metrics), "steps": ft.trial_steps(len(train_ex), cfg),
                               "warmup_steps": warmup, "precision": precision.name,
                               "seconds": round(time.perf_counter() - t0, 2)}
                    atomic.write_json(_trial_path(out, task, i), done[i])
                    progress.advance(bar_trials)
                    del net
                results[task.name] = _task_result(task, data, len(train_ex), dev_ex, [done[i] for i in range(cfg.trials)])
                progress.advance(bar_tasks)

        medians = {col: r["median"][col] for r in results.values() for col in r["median"]}
        average, complete = card_average(medians)
        # The summary is what people read: 2 decimals. `tasks` keeps every raw number for scripts.
        summary = {"columns": {c: round(v, 2) for c, v in medians.items()},
                   "average": round(average, 2) if medians else None, "average_complete": complete,
                   "average_of": sum(1 for c, *_ in CARD_COLUMNS if c in medians)}
        results_doc = {"checkpoint": str(checkpoint), "checkpoint_path": str(checkpoint.resolve()),
                       "weights_sha256": weights_sha256(checkpoint), "protocol": cfg.protocol, "trials": cfg.trials,
                       "seed": seed, "precision": precision.name, "warmup_mode": cfg.warmup_mode,
                       "special_ids": {"pad": special.pad, "cls": special.cls, "sep": special.sep, "mask": special.mask},
                       "summary": summary, "tasks": results}
        atomic.write_json(out / "results.json", results_doc)
        columns = [c for c, *_ in (*CARD_COLUMNS, WNLI_COLUMN)]
        atomic.write_bytes(out / "glue.png", glue_png(
            results, columns, f"GLUE dev, median of {cfg.trials} trial(s), {cfg.protocol} protocol"))
        atomic.write_json(out / "hparams.json", settings)
        report = {"command": "finetune-glue", "out": str(out), "device": str(dev), "precision": precision.name,
                  "seconds": round(time.perf_counter() - started, 2), **summary}
        output.report(report, _render(results, summary), out / "report.json")


def trial_seed(seed: int, task: str, trial: int) -> int:
    """Distinct, reproducible seed per (task, trial) from --seed."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{task}:{trial}".encode()).digest()[:4], "big") % 2**31


def _checkpoint_dir(path: Path) -> Path:
    """The checkpoint folder itself (where the tokenizer is too): a cram run resolves to its `final/`, an original
    cramming run to its latest `checkpoints/<id>/`; checked to load (config, weights and tokenizer agree)."""
    from cramcli.model.checkpoint import find_checkpoint

    try:
        return find_checkpoint(path)
    except ValueError as exc:  # the checkpoint layer's input errors name the file and the fix
        raise UsageError(f"--model {path}: {exc}") from None


def _comparable(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings that must match to reuse trials; the trial count may grow (seeds depend on the index only)."""
    return {**settings, "budget": {k: v for k, v in settings["budget"].items() if k != "trials"}}


def _trial_path(out: Path, task: Task, trial: int) -> Path:
    return out / "trials" / f"{task.name}_{trial}.json"


def _read_trial(out: Path, task: Task, trial: int, warmup: int) -> dict[str, Any] | None:
    """A finished trial, if it used this run's warmup (under `first-task` that depends on the tasks run)."""
    path = _trial_path(out, task, trial)
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    if record.get("warmup_steps", warmup) != warmup:
        raise UsageError(f"{path}: trained with {record['warmup_steps']} warmup steps, this run gives {task.name} "
                         f"{warmup} (another --tasks set under warmup_mode first-task); pass --force or another --out")
    return record


def _subset(examples: list, limit: int | None, seed: int) -> list:
    """A seeded random subset (GLUE train files are often ordered, so the first rows would be biased)."""
    if limit is None or limit >= len(examples):
        return examples
    return random.Random(seed).sample(examples, limit)


def _task_result(task: Task, data: TaskData, n_train: int, dev: dict[str, list], trials: list[dict]) -> dict[str, Any]:
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


def _render(results: dict[str, Any], summary: dict[str, Any]) -> Group:
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
