"""Stage `finetune_glue` (alias `glue`): GLUE budget and flags → the checkpoint (`model/runs.py` picks the newest
finished run when no --model is given) → `glue/protocol.py` (trials, resume, medians, results.json) → report.

`--out` defaults to `<model>/glue` (inside the run folder, where `cram card` looks for it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from cramcli.glue.tasks import parse_tasks
from cramcli.stages import options
from cramcli.stages.common import load_budget
from cramcli.utils import atomic, disk, run_folder
from cramcli.utils.console import Output
from cramcli.utils.errors import UsageError


def run(
    output: Output,
    *,
    model: Annotated[Optional[Path], typer.Option("--model", "-m", help="A cram run folder, a checkpoint folder or an original cramming run (default: the newest finished run under outputs/runs, of --budget when given).")] = None,
    budget: Annotated[Optional[str], typer.Option("--budget", "-b", help="GLUE budget: preset name (24 = GLUE-sane, demo) or JSON file (default 24); also picks the run outputs/runs/<budget> when no --model is given.")] = None,
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

    Finished (task, trial) results of the same weights, settings and data are kept, so an interrupted run resumes
    where it stopped and a changed model (a resumed pretraining's new final/) is fine-tuned again.
    """
    from cramcli.glue.protocol import GlueModel, GlueSettings, render, run_glue
    from cramcli.model.runs import pick_run
    from cramcli.utils.device import resolve_precision, setup_device

    cfg = load_budget(output, "glue", budget or "24", {
        "trials": ("--trials", trials), "epochs": ("--epochs", epochs), "precision": ("--precision", precision),
        "warmup_mode": ("--warmup-mode", warmup_mode)}).budget
    for flag, value in (("--max-train-examples", max_train_examples), ("--max-eval-examples", max_eval_examples)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} {value}: must be at least 1")
    settings = GlueSettings(cfg, parse_tasks(tasks, list(cfg.tasks)), glue_dir, max_train_examples,
                            max_eval_examples, legacy_attention_mask, seed)
    model = pick_run(model, budget=budget, flag="--model", say=output.info)
    checkpoint = _checkpoint_dir(model)
    glue_model = GlueModel.open(checkpoint, cfg.max_length)
    dev = setup_device(device, gpu)  # TF32 on CUDA, the allocator setting on a CPU
    precision = resolve_precision(cfg.precision, dev, output.info)
    out = Path(out) if out is not None else model / "glue"
    hparams = {**settings.record(), "checkpoint": str(checkpoint.resolve())}
    fingerprint = run_folder.fingerprint({**settings.comparable(), "checkpoint": hparams["checkpoint"]})
    started = time.perf_counter()
    with run_folder.open_folder(out, command="finetune-glue", settings_fingerprint=fingerprint, force=force) as done_before:
        if done_before is not None and done_before.get("fingerprint") != fingerprint:
            raise UsageError(f"{out}: holds GLUE results made with other settings; pass --force to start over or "
                             f"another --out")
        atomic.write_json(out / "hparams.json", hparams)
        try:
            doc = run_glue(glue_model, settings, out, device=dev, precision=precision, console=output.console,
                           quiet=output.quiet)
        except OSError as exc:  # each trial is saved whole as it finishes: say what a rerun keeps
            if not disk.is_write_error(exc):
                raise
            kept = len(list((out / "trials").glob("*.json")))
            raise disk.write_failure(exc, intact=f"the {kept} finished trial(s) in {out / 'trials'} are intact and "
                                     "a rerun reuses them; free space and run the same command again") from None
        report = {"command": "finetune-glue", "model": str(model), "out": str(out), "device": str(dev),
                  "precision": precision.name, "seconds": round(time.perf_counter() - started, 2), **doc["summary"]}
        output.report(report, render(doc["tasks"], doc["summary"]), out / "report.json")


def _checkpoint_dir(path: Path) -> Path:
    """The checkpoint folder itself (where the tokenizer is too): a cram run resolves to its `final/`, an original
    cramming run to its latest `checkpoints/<id>/`; checked to load (config, weights and tokenizer agree)."""
    from cramcli.model.checkpoint import find_checkpoint

    try:
        return find_checkpoint(path)
    except ValueError as exc:  # the checkpoint layer's input errors name the file and the fix
        raise UsageError(f"--model {path}: {exc}") from None
