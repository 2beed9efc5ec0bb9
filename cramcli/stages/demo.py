"""Stage `demo`: every stage for real on the embedded corpus, offline, into one folder, in minutes on a CPU.

The demo calls the public stages exactly as the command line does (`train_tokenizer.run`, `prepare_data.run`,
`pretrain.run`, `finetune_glue.run`, `convert_attention.run`) with the `demo` budgets, so it exercises the
same code a real run does. Layout of `--out`:

    tokenizer/   cram train-tokenizer --source embedded --budget demo
    data/        cram prepare-data --budget demo --tokenizer tokenizer/tokenizer.json
    run/         cram pretrain --budget demo --data data   (run/final is the checkpoint)
    glue_data/   synthetic SST-2-, RTE- and STS-B-style tasks generated from the same world (cramcli/demo/tasks.py),
                 in the original GLUE layouts so the real GLUE loader reads them; they are not GLUE
    glue/        cram glue --model run --glue-dir glue_data --budget demo
    convert/     cram convert run/final --attention flash → convert/flash, then back → convert/pytorch (each
                 with its parity check)
    run/final/README.md   cram card run --glue glue (the model card; budgets and charts beside the weights)
    report.json  what ran, where everything is, MLM loss start → end, each task vs its baseline

A rerun reuses every finished stage (each is skipped when its report.json exists); `--fresh` starts over.
A missed quality bar exits 1 after the report is written, naming the bar.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Group
from rich.table import Table

from cramcli.demo import tasks as synthetic_tasks
from cramcli.utils import atomic
from cramcli.utils.console import Output
from cramcli.utils.errors import RunError, UsageError

_MARKER = "demo-settings.json"
_GLUE_COLUMNS = {"sst2": ("SST-2", "accuracy"), "rte": ("RTE", "accuracy"), "stsb": ("STS-B", "pearson")}
"""The results.json column each synthetic task is scored under (the GLUE loader's names, not GLUE results)."""
DEMO_NOTE = ("A demo model: a few minutes of pretraining on cram's embedded corpus, and GLUE-style tasks (SST-2, RTE, "
             "STS-B layouts) generated from that same corpus, not the GLUE benchmark; it shows the pipeline, not a "
             "useful model.")
MLM_TARGET = 0.5
"""The demo's bar: masked-LM loss at the end below this fraction of its start."""
MARGINS = {"accuracy": 0.1, "pearson": 0.3}
""""A clear margin" over each task's baseline: 10 points of accuracy, or 0.3 Pearson over a constant predictor."""


def run(
    output: Output,
    *,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for every artefact of the demo.")] = Path("outputs/demo"),
    fresh: Annotated[bool, typer.Option("--fresh", help="Start over instead of reusing finished stages.")] = False,
    minutes: Annotated[Optional[float], typer.Option("--minutes", help="Pretraining minutes (default: the demo budget's).")] = None,
    documents: Annotated[Optional[int], typer.Option("--documents", help="Embedded documents to generate (default: the demo data budget's).")] = None,
    trials: Annotated[Optional[int], typer.Option("--trials", help="Fine-tuning trials per task (default: the demo GLUE budget's).")] = None,
    task_examples: Annotated[int, typer.Option("--task-examples", help="Training examples per generated task (dev sets get a quarter).")] = 2000,
) -> None:
    """Run every stage for real on the embedded corpus, offline, in a few minutes on a CPU.

    Tokenizer, data preparation, budgeted pretraining, GLUE-style fine-tuning on tasks generated from the same
    corpus, and an attention conversion, all into [bold]--out[/]; a rerun reuses finished stages.
    """
    if minutes is not None and minutes <= 0:
        raise UsageError(f"--minutes {minutes}: must be positive")
    for flag, value in (("--documents", documents), ("--trials", trials), ("--task-examples", task_examples)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} {value}: must be at least 1")
    out = Path(out)
    settings = {"minutes": minutes, "documents": documents, "trials": trials, "task_examples": task_examples}
    _claim(out, settings, fresh)

    sub = Output(json_mode=False, quiet=output.quiet, verbose=output.verbose)
    sub.console = output.console  # with --json the stages print for people on stderr; only the demo owns stdout
    steps: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()

    from cramcli.stages import card, convert_attention, finetune_glue, prepare_data, pretrain, train_tokenizer

    tokenizer = out / "tokenizer"
    steps["train-tokenizer"] = _step(output, "train-tokenizer", tokenizer, lambda: train_tokenizer.run(
        sub, source="embedded", budget="demo", vocab_size=None, max_documents=documents, out=tokenizer, force=False))

    data = out / "data"
    steps["prepare-data"] = _step(output, "prepare-data", data, lambda: prepare_data.run(
        sub, budget="demo", source="embedded", out=data, tokenizer=tokenizer / "tokenizer.json",
        max_documents=documents, workers=0, seed=None, force=False))

    run_dir = out / "run"
    resume = (run_dir / "checkpoints").is_dir() and not (run_dir / "report.json").exists()
    steps["pretrain"] = _step(output, "pretrain", run_dir, lambda: pretrain.run(
        sub, budget="demo", arch="demo", hours=None if minutes is None else minutes / 60, data=data, out=run_dir,
        resume=resume, max_steps=None, micro_batch_size=None, compile=None, device=None, gpu=None, seed=0,
        force=not resume))

    glue_data = out / "glue_data"
    steps["synthetic tasks"] = _step(output, "synthetic tasks", glue_data, lambda: atomic.write_json(
        glue_data / "report.json",
        synthetic_tasks.write_glue_tasks(glue_data, seed=0, num_train=task_examples,
                                         num_dev=max(task_examples // 4, 8))))
    task_baselines = json.loads((glue_data / "report.json").read_text())["tasks"]

    glue = out / "glue"
    steps["glue"] = _step(output, "glue", glue, lambda: finetune_glue.run(
        sub, model=run_dir, budget="demo", tasks=None, trials=trials, glue_dir=glue_data, max_train_examples=None,
        max_eval_examples=None, epochs=None, legacy_attention_mask=False, out=glue, device=None, gpu=None, seed=0,
        force=False))

    # A round trip through the flash-attn layout and back, each with the stage's own parity check (on a CPU
    # the flash kernel cannot run: the check then compares the same maths and says flash was not checked).
    flash, back = out / "convert" / "flash", out / "convert" / "pytorch"
    steps["convert → flash"] = _step(output, "convert → flash", flash, lambda: convert_attention.run(
        sub, checkpoint=run_dir / "final", out=flash, attention="flash", device=None, gpu=None, force=False))
    steps["convert → pytorch"] = _step(output, "convert → pytorch", back, lambda: convert_attention.run(
        sub, checkpoint=flash, out=back, attention="pytorch", device=None, gpu=None, force=False))

    # The model card (README.md, budgets and charts beside the weights), as `cram card run --glue glue` writes it.
    final = run_dir / "final"
    steps["card"] = _step(output, "card", final, lambda: card.write_card(
        final, glue=glue / "results.json", note=DEMO_NOTE), done=final / card.README)

    report = _summarise(out, steps, task_baselines, time.perf_counter() - started)
    output.report(report, _render(report), out / "report.json")
    if not report["ok"]:
        raise RunError(f"cram demo: quality bar missed: {'; '.join(missed_bars(report))} (report: "
                       f"{out / 'report.json'}); try a longer --minutes or run on a GPU")


def missed_bars(report: dict[str, Any]) -> list[str]:
    """One phrase per quality bar the report misses, naming the bar and the value reached."""
    mlm = report["mlm"]
    missed = [] if mlm["ok"] else [f"masked-LM loss ended at {mlm['ratio']:.0%} of its start "
                                   f"(bar: below {mlm['target_ratio']:.0%})"]
    for task in report["tasks"].values():
        if not task["ok"]:
            missed.append(f"{task['name']}: {task['metric']} {task['score']:.3f} (bar: at least {task['baseline_kind']} "
                          f"{task['baseline']:.3f} + {task['required_margin']:g})")
    return missed


def _claim(out: Path, settings: dict[str, Any], fresh: bool) -> None:
    """Start over (--fresh), or keep what an earlier demo with the same settings finished."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file; pass a folder")
    marker = out / _MARKER
    if out.is_dir() and any(out.iterdir()) and not marker.is_file():
        raise UsageError(f"--out {out}: exists and is not a demo folder; choose another --out or remove it")
    if fresh and out.exists():
        shutil.rmtree(out)
    if marker.is_file() and json.loads(marker.read_text()) != settings:
        raise UsageError(f"--out {out}: holds a demo made with other settings ({marker}); pass --fresh to start over")
    # Written first: it marks the folder as the demo's (for --fresh) and the settings its stages were made with.
    atomic.write_json(marker, settings)


def _step(output: Output, name: str, path: Path, call: Callable[[], Any], done: Path | None = None) -> dict[str, Any]:
    """Run one stage unless its report.json (or `done`) shows it finished; failures name the stage and its folder."""
    if (done or path / "report.json").is_file():
        output.info(f"[green]✓[/] {name}: reusing {path}")
        return {"path": str(path), "reused": True, "seconds": 0.0}
    output.console.rule(f"[bold]{name}[/]")
    t0 = time.perf_counter()
    try:
        call()
    except (UsageError, RunError) as exc:
        raise type(exc)(f"cram demo, stage {name} (folder {path}):", *exc.lines) from None
    return {"path": str(path), "reused": False, "seconds": round(time.perf_counter() - t0, 2)}


def mlm_losses(run_dir: Path) -> tuple[float, float]:
    """MLM loss at the start (first logged step) and the end (mean of the last three logged steps)."""
    from cramcli.train.metrics import read_metrics

    rows = read_metrics(run_dir / "metrics.jsonl")
    losses = [float(r["loss"]) for r in rows if r.get("loss") is not None]
    if not losses:
        raise RunError(f"{run_dir / 'metrics.jsonl'}: no logged loss; the pretraining ran no optimizer step")
    tail = losses[-3:]
    return losses[0], sum(tail) / len(tail)


def _summarise(out: Path, steps: dict[str, dict[str, Any]], baselines: dict[str, Any], seconds: float) -> dict:
    start, end = mlm_losses(out / "run")
    results = json.loads((out / "glue" / "results.json").read_text())["tasks"]
    tasks = {}
    for name, res in results.items():
        column, metric = _GLUE_COLUMNS[name]
        score = res["median"][column] / 100.0
        base = baselines[name]["baseline"]
        margin = MARGINS[metric]
        tasks[name] = {"name": synthetic_tasks.NAMES[name], "description": synthetic_tasks.DESCRIPTIONS[name],
                       "synthetic": True, "metric": metric, "score": score, "baseline": base,
                       "baseline_kind": baselines[name]["baseline_kind"], "trials": len(res["trials"]),
                       "ok": score >= base + margin, "required_margin": margin}
    parity = {target: json.loads((out / "convert" / target / "report.json").read_text())["parity"]
              for target in ("flash", "pytorch")}
    artefacts = {
        "tokenizer": str(out / "tokenizer" / "tokenizer.json"),
        "prepared data": str(out / "data" / "manifest.json"),
        "final checkpoint": str(out / "run" / "final"),
        "metrics": str(out / "run" / "metrics.jsonl"),
        "training curves": str(out / "run" / "training.png"),
        "model card": str(out / "run" / "final" / "README.md"),
        "fine-tuning chart": str(out / "glue" / "glue.png"),
        "synthetic tasks (GLUE layouts)": str(out / "glue_data"),
        "fine-tuning results": str(out / "glue" / "results.json"),
        "flash-layout checkpoint": str(out / "convert" / "flash"),
        "converted back to pytorch": str(out / "convert" / "pytorch"),
    }
    mlm = {"start": start, "end": end, "ratio": end / start, "target_ratio": MLM_TARGET, "ok": end < MLM_TARGET * start}
    ok = mlm["ok"] and all(t["ok"] for t in tasks.values())
    return {"command": "demo", "out": str(out), "seconds": round(seconds, 1), "ok": ok, "mlm": mlm, "tasks": tasks,
            "convert": {t: {"max_abs_delta_logits": p["max_abs_delta_logits"], "tolerance": p["tolerance"],
                            "checked": f"{p['source_backend']} vs {p['converted_backend']}",
                            "flash_kernel": p.get("flash_kernel")} for t, p in parity.items()},
            "stages": steps, "artefacts": artefacts}


def _render(report: dict[str, Any]) -> Group:
    stages = Table("stage", "folder", "time", title="cram demo — what ran")
    for name, step in report["stages"].items():
        stages.add_row(name, step["path"], "reused" if step["reused"] else f"{step['seconds']:.1f} s")
    quality = Table("check", "before / baseline", "after / score", "bar", "",
                    title="quality (the tasks are generated from the embedded corpus: not GLUE)")
    mlm = report["mlm"]
    quality.add_row("masked-LM loss", f"{mlm['start']:.3f}", f"{mlm['end']:.3f} ({mlm['ratio']:.0%} of start)",
                    f"< {mlm['target_ratio']:.0%} of start", _tick(mlm["ok"]))
    for t in report["tasks"].values():
        unit = "Pearson" if t["metric"] == "pearson" else "acc"
        quality.add_row(f"{t['name']} ({unit}, median of {t['trials']})",
                        f"{t['baseline']:.3f} ({t['baseline_kind']})", f"{t['score']:.3f}",
                        f"≥ baseline + {t['required_margin']:g}", _tick(t["ok"]))
    for target, p in report["convert"].items():
        delta = f"max |Δlogits| {p['max_abs_delta_logits']:.2g}"
        if p["flash_kernel"] not in (None, "checked"):  # the same maths agreed, but the kernel never ran
            quality.add_row(f"convert → {target}", "", f"{delta} ({p['checked']}, the same maths)", p["flash_kernel"],
                            "[yellow]–[/]")
            continue
        quality.add_row(f"convert → {target} ({p['checked']})", "", delta, f"≤ {p['tolerance']:g}",
                        _tick(p["max_abs_delta_logits"] <= p["tolerance"]))
    files = Table("artefact", "path", title=f"everything is in {report['out']}")
    for name, path in report["artefacts"].items():
        files.add_row(name, path)
    files.add_row("this report", str(Path(report["out"]) / "report.json"))
    verdict = "[bold green]all quality bars met[/]" if report["ok"] else "[bold yellow]some quality bars missed[/]"
    return Group(stages, quality, files, f"{verdict} in {report['seconds']:.0f} s")


def _tick(ok: bool) -> str:
    return "[green]✓[/]" if ok else "[red]✗[/]"
