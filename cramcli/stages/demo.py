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
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cramcli.demo import tasks as synthetic_tasks
from cramcli.demo.report import DEMO_NOTE, missed_bars, render, summarise
from cramcli.demo.steps import claim, step
from cramcli.utils import atomic
from cramcli.utils.console import Output
from cramcli.utils.errors import RunError, UsageError


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
    claim(out, settings, fresh)

    sub = Output(json_mode=False, quiet=output.quiet, verbose=output.verbose)
    # The stages' output, their reports too, is the demo's progress: on stderr with --json (only the demo owns
    # stdout), silent with --quiet.
    sub.console = sub.report_console = output.console
    steps: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()

    from cramcli.publish import write as card
    from cramcli.stages import convert_attention, finetune_glue, prepare_data, pretrain, train_tokenizer

    tokenizer = out / "tokenizer"
    steps["train-tokenizer"] = step(output, "train-tokenizer", tokenizer, lambda: train_tokenizer.run(
        sub, source="embedded", budget="demo", vocab_size=None, max_documents=documents, out=tokenizer, force=False))

    data = out / "data"
    steps["prepare-data"] = step(output, "prepare-data", data, lambda: prepare_data.run(
        sub, budget="demo", source="embedded", out=data, tokenizer=tokenizer / "tokenizer.json",
        max_documents=documents, workers=0, seed=None, force=False))

    run_dir = out / "run"
    resume = (run_dir / "checkpoints").is_dir() and not (run_dir / "report.json").exists()
    steps["pretrain"] = step(output, "pretrain", run_dir, lambda: pretrain.run(
        sub, budget="demo", arch="demo", hours=None if minutes is None else minutes / 60, data=data, out=run_dir,
        resume=resume, max_steps=None, micro_batch_size=None, compile=None, device=None, gpu=None, seed=0,
        force=not resume))

    glue_data = out / "glue_data"
    steps["synthetic tasks"] = step(output, "synthetic tasks", glue_data, lambda: atomic.write_json(
        glue_data / "report.json",
        synthetic_tasks.write_glue_tasks(glue_data, seed=0, num_train=task_examples,
                                         num_dev=max(task_examples // 4, 8))))
    task_baselines = json.loads((glue_data / "report.json").read_text())["tasks"]

    glue = out / "glue"
    steps["glue"] = step(output, "glue", glue, lambda: finetune_glue.run(
        sub, model=run_dir, budget="demo", tasks=None, trials=trials, glue_dir=glue_data, max_train_examples=None,
        max_eval_examples=None, epochs=None, legacy_attention_mask=False, out=glue, device=None, gpu=None, seed=0,
        force=False))

    # A round trip through the flash-attn layout and back, each with the stage's own parity check (on a CPU
    # the flash kernel cannot run: the check then compares the same maths and says flash was not checked).
    flash, back = out / "convert" / "flash", out / "convert" / "pytorch"
    steps["convert → flash"] = step(output, "convert → flash", flash, lambda: convert_attention.run(
        sub, checkpoint=run_dir / "final", out=flash, attention="flash", device=None, gpu=None, force=False))
    steps["convert → pytorch"] = step(output, "convert → pytorch", back, lambda: convert_attention.run(
        sub, checkpoint=flash, out=back, attention="pytorch", device=None, gpu=None, force=False))

    # The model card (README.md, budgets and charts beside the weights), as `cram card run --glue glue` writes it.
    final = run_dir / "final"
    steps["card"] = step(output, "card", final, lambda: card.write_card(
        final, glue=glue / "results.json", note=DEMO_NOTE), done=final / card.README)

    report = summarise(out, steps, task_baselines, time.perf_counter() - started)
    output.report(report, render(report), out / "report.json")
    if not report["ok"]:
        raise RunError(f"cram demo: quality bar missed: {'; '.join(missed_bars(report))} (report: "
                       f"{out / 'report.json'}); try a longer --minutes or run on a GPU")
