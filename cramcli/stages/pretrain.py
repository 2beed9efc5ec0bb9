"""Stage `pretrain`: masked-LM training of crammed BERT, scheduled and stopped by a wall-clock budget.

Thin by design: budgets and flags → run folder (owned and locked) → `train.trainer.Trainer` → final checkpoint
and report. The loop, its parts and every stop reason live in `cramcli/train/`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cramcli import budgets
from cramcli.data.prepared import open_for_training
from cramcli.stages import options
from cramcli.stages.common import load_budget
from cramcli.utils import run_folder
from cramcli.utils.atomic import write_bytes, write_json
from cramcli.utils.console import Output, byte_progress, summary_table
from cramcli.utils.errors import RunError, UsageError


def run(
    output: Output,
    *,
    budget: options.TrainBudget = "24",
    arch: options.ArchBudget = None,
    hours: Annotated[Optional[float], typer.Option("--hours", help="Wall-clock training hours (overrides the budget; fractions allowed).")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Prepared-data folder (default: what prepare-data wrote for the same budget).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder (default: outputs/runs/<budget>).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Check every shard of --data against its checksum before training (--no-verify skips it for huge corpora and says what it skipped; ids are always checked against the vocabulary).")] = True,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Stop after this many micro-steps of micro-batch-size sequences, N per step under N processes (a cap; the schedule follows the budget's schedule_clock).")] = None,
    micro_batch_size: Annotated[Optional[int], typer.Option("--micro-batch-size", help="Override the budget's micro-batch (e.g. what cram bench found).")] = None,
    compile: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the model (default: the budget's).")] = None,
    precision: options.Precision = None,
    peak_tflops: options.PeakTflops = None,
    device: options.Device = None,
    gpu: options.Gpu = None,
    seed: options.Seed = 0,
    force: options.Force = False,
) -> None:
    """Masked-LM pretraining of crammed BERT, scheduled and stopped by a wall-clock budget.

    Checkpoints every few minutes and on Ctrl-C/SIGTERM; [bold]--resume[/] continues exactly. Under torchrun
    it trains data-parallel (DDP).
    """
    from cramcli.model.runs import run_folder as default_run_folder
    from cramcli.train.dashboard import Dashboard
    from cramcli.train.distributed import barrier, process_group
    from cramcli.train.trainer import NonFiniteLoss, Trainer
    from cramcli.utils.plots import training_png

    train = load_budget(output, "train", budget, {
        "hours": ("--hours", hours), "max_steps": ("--max-steps", max_steps),
        "micro_batch_size": ("--micro-batch-size", micro_batch_size), "compile": ("--compile", compile),
        "precision": ("--precision", precision)})
    arch_budget = load_budget(output, "arch", arch or budget)
    t, a, label = train.budget, arch_budget.budget, budgets.label(budget)
    run_dir = Path(out) if out is not None else default_run_folder(budget)
    if peak_tflops is not None and peak_tflops <= 0:
        raise UsageError(f"--peak-tflops {peak_tflops}: must be positive")
    if resume and force:
        raise UsageError("--resume and --force contradict each other; pass one")
    if resume and run_folder.check_owner(run_dir, "pretrain") is None:
        raise UsageError(f"{run_dir}: no training checkpoint to resume from; start without --resume")

    with process_group(device, gpu) as (dev, rank, world):
        # Rank 0 alone re-reads the shards (every rank reads the same files); the others stay quiet about it.
        with byte_progress(output, "verifying shards", enabled=rank == 0 and verify) as on_bytes:
            prepared = open_for_training(data, label, a, verify=verify and rank == 0,
                                         warn=output.warn if rank == 0 else lambda _: None, on_bytes=on_bytes)
        if t.micro_batch_size * world > prepared.num_rows:
            raise UsageError(f"{prepared.path}: {prepared.num_rows} rows cannot fill one micro-batch of "
                             f"{t.micro_batch_size}×{world} ranks; prepare more data or lower --micro-batch-size")
        if t.batch_size % (t.micro_batch_size * world):
            raise UsageError(f"--budget {budget}: batch_size {t.batch_size} is not a multiple of micro_batch_size "
                             f"{t.micro_batch_size} × {world} processes; adjust either")
        settings = _resume_settings(t, a, prepared, world)
        key = run_folder.fingerprint(settings)
        owned = (run_folder.open_folder(run_dir, command="pretrain", settings_fingerprint=key, force=force)
                 if rank == 0 else contextlib.nullcontext(None))
        with owned as existing:
            if rank == 0 and existing is not None and not resume:
                raise UsageError(f"{run_dir}: run folder already exists; pass --resume to continue it, --force to "
                                 f"start over, or choose another --out")
            barrier(world)
            dash = Dashboard(output.console, enabled=rank == 0 and not output.quiet)
            trainer = Trainer(t, a, prepared, run_dir, device=dev, rank=rank, world=world, seed=seed,
                              config_key=key, dashboard=dash, peak_tflops=peak_tflops, say=output.info,
                              warn=output.warn)
            if resume:
                try:
                    path = trainer.resume(output.warn)
                except ValueError as exc:
                    raise UsageError(str(exc)) from None
                output.info(f"resuming from {path} (micro-step {trainer.progress.micro_steps}, "
                            f"{trainer.clock.offset / 3600:.3f} h of the budget spent)")
                if trainer.clock.rescaled:
                    output.info(f"--hours {t.hours:g}: {trainer.clock.rescaled}")
            if rank == 0:
                write_json(run_dir / "run-config.json", {
                    "train": t.model_dump(mode="json"), "arch": a.model_dump(mode="json"), "budget": str(budget),
                    "sources": {"train": train.sources, "arch": arch_budget.sources}, "data": str(prepared.path),
                    **prepared.source_record(), "world_size": world, "seed": seed, "config_key": key})
            try:
                reason = trainer.run()
            except NonFiniteLoss as exc:
                raise RunError(str(exc)) from None
            final = trainer.export()
            if rank == 0:
                write_bytes(run_dir / "training.png",
                            training_png(trainer.progress.log.rows, f"cram pretrain — {run_dir.name}"))
                report = {**trainer.summary(reason, final), "budget_name": budgets.file_label("train", budget)}
                output.report(report, summary_table("cram pretrain", {k: report[k] for k in _SHOWN}),
                              run_dir / "report.json")


def _resume_settings(t: budgets.TrainBudget, a: budgets.ArchBudget, prepared: Any, world: int) -> dict[str, Any]:
    """What a resume must match: everything but the stop caps, logging/checkpoint/evaluation cadence and how the
    step is executed (compile, sparse_count)."""
    # schedule_clock is left out so a resume that changes it gets the clock's own message.
    train = t.model_dump(mode="json", exclude={"hours", "max_steps", "max_tokens", "checkpoint_every_minutes",
                                               "keep_checkpoints", "log_every_steps", "eval_every_minutes", "compile",
                                               "sparse_count", "schedule_clock"})
    return {"train": train, "arch": a.model_dump(mode="json"), "world": world,
            "data": prepared.manifest.get("content_hash")}


_SHOWN = ("final", "stop_reason", "micro_steps", "optimizer_steps", "tokens", "training_hours", "first_loss",
          "final_loss", "tokens_per_s", "heldout_loss", "heldout_accuracy", "evaluations", "eval_seconds")
