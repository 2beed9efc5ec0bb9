"""Stage `pretrain`: masked-LM training of crammed BERT, scheduled and stopped by a training-time budget.

The clock starts at the training loop (setup is outside the budget). With `--max-steps` the LR schedule and
the time-based batch ramp follow the share of steps done instead of time ("step budget" mode, deterministic,
so a resume is bitwise exact); the time budget still stops the run if it runs out first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from rich.table import Table

from cramcli import budgets
from cramcli.data.tokenizer import special_ids
from cramcli.train import checkpointing
from cramcli.train.clock import BudgetClock
from cramcli.train.dashboard import Dashboard
from cramcli.train.masking import static_prediction_rate
from cramcli.train.metrics import MetricsLog, loss_svg
from cramcli.train.optim import make_optimizer
from cramcli.train.schedules import batch_size_at, lr_factor
from cramcli.train.step import apply_gradients, autocast_dtype, forward_loss, mask_batch
from cramcli.utils.atomic import write_json, write_text
from cramcli.utils.console import Output
from cramcli.utils.device import enable_fast_math, resolve_device
from cramcli.utils.errors import RunError, UsageError
from cramcli.utils.flops import arch_flops_per_token, device_peak_tflops


def run(
    output: Output,
    *,
    budget: str = "24",
    arch: str | None = None,
    hours: float | None = None,
    data: Path | None = None,
    out: Path | None = None,
    resume: bool = False,
    max_steps: int | None = None,
    micro_batch_size: int | None = None,
    compile: bool | None = None,
    device: str | None = None,
    gpu: int | None = None,
    seed: int = 0,
    force: bool = False,
) -> None:
    train = budgets.load("train", budget)
    arch_budget = budgets.load("arch", arch or budget)
    overrides = {k: v for k, v in {"hours": hours, "max_steps": max_steps, "micro_batch_size": micro_batch_size,
                                   "compile": compile}.items() if v is not None}
    if overrides:
        try:
            train = budgets.TrainBudget.model_validate({**train.model_dump(), **overrides})
        except ValidationError as exc:
            flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in overrides.items())
            raise UsageError(*(f"--budget {budget} with {flags}: {budgets.format_error(e)}"
                               for e in exc.errors())) from None
    budget_name = Path(budget).stem.split("_budget_")[-1].removeprefix("hours_") if budget.endswith(".json") else budget
    run_dir = Path(out) if out is not None else Path("outputs/runs") / budget_name

    with _distributed(device, gpu) as (dev, rank, world):
        prepared = _open_data(data, budget_name, arch_budget)
        if train.micro_batch_size * world > prepared.num_rows:
            raise UsageError(f"{prepared.path}: {prepared.num_rows} rows cannot fill one micro-batch of "
                             f"{train.micro_batch_size}×{world} ranks; prepare more data or lower --micro-batch-size")
        if train.batch_size % (train.micro_batch_size * world):
            raise UsageError(f"--budget {budget}: batch_size {train.batch_size} is not a multiple of "
                             f"micro_batch_size {train.micro_batch_size} × {world} processes; adjust either")
        trainer = Trainer(output, train, arch_budget, prepared, run_dir, dev, rank, world, seed)
        trainer.setup(resume=resume, force=force)
        report = trainer.train()
    if rank == 0:
        output.report(report, _table(report), run_dir / "report.json")


# ----------------------------------------------------------------------------------------------------------
# setup helpers


@contextlib.contextmanager
def _distributed(device: str | None, gpu: int | None) -> Iterator[tuple[torch.device, int, int]]:
    """Under torchrun (RANK/WORLD_SIZE set) join the process group: NCCL on GPUs, Gloo on CPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        dev = resolve_device(device, gpu)
        enable_fast_math(dev)
        yield dev, 0, 1
        return
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, None)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    enable_fast_math(dev)
    try:
        yield dev, rank, world
    finally:
        dist.destroy_process_group()


def _open_data(data: Path | None, budget_name: str, arch: budgets.ArchBudget) -> Any:
    from cramcli.data.prepared import PreparedData, default_prepared_dir

    if data is None:
        data = default_prepared_dir(budget_name)
        if data is None:
            raise UsageError(f"no prepared data for budget {budget_name!r}; run `cram prepare-data --budget "
                             f"{budget_name}` first or pass --data FOLDER")
    prepared = PreparedData(data)
    if prepared.vocab_size > arch.vocab_size:
        raise UsageError(f"{prepared.path}: vocabulary of {prepared.vocab_size} tokens exceeds the arch's "
                         f"vocab_size {arch.vocab_size}; use a matching --arch or re-run prepare-data")
    if prepared.seq_length > arch.max_seq_length:
        raise UsageError(f"{prepared.path}: seq_length {prepared.seq_length} exceeds the arch's max_seq_length "
                         f"{arch.max_seq_length}; use a matching --arch or re-run prepare-data")
    if not prepared.tokenizer_path.is_file():
        raise UsageError(f"{prepared.tokenizer_path}: tokenizer missing from the prepared data; re-run prepare-data")
    return prepared


def _config_key(train: budgets.TrainBudget, arch: budgets.ArchBudget, prepared: Any, world: int) -> str:
    """What must match for --resume: everything except the stopping caps (hours, max_steps, max_tokens)."""
    t = train.model_dump(mode="json", exclude={"hours", "max_steps", "max_tokens", "checkpoint_every_minutes",
                                               "keep_checkpoints", "log_every_steps", "compile"})
    blob = json.dumps({"train": t, "arch": arch.model_dump(mode="json"), "world": world,
                       "data": prepared.manifest.get("content_hash")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------
# the loop


class Trainer:
    def __init__(self, output: Output, train: budgets.TrainBudget, arch: budgets.ArchBudget, prepared: Any,
                 run_dir: Path, dev: torch.device, rank: int, world: int, seed: int) -> None:
        self.output, self.train_budget, self.arch, self.data = output, train, arch, prepared
        self.run_dir, self.dev, self.rank, self.world, self.seed = run_dir, dev, rank, world, seed
        self.key = _config_key(train, arch, prepared, world)
        self.micro_steps = self.optimizer_steps = self.cursor = self.tokens = 0
        self.elapsed_offset = 0.0
        self.loss_ema: float | None = None
        self.stop_signal: str | None = None

    # -- setup ------------------------------------------------------------------------------------------
    def setup(self, *, resume: bool, force: bool) -> None:
        from cramcli.model import CrammedBertConfig, CrammedBertForMaskedLM

        t = self.train_budget
        state = None
        if resume:
            found = checkpointing.load_latest(self.run_dir, warn=self.output.warn)
            if found is None:
                raise UsageError(f"{self.run_dir}: no training checkpoint to resume from; start without --resume")
            ckpt_path, state = found
            if state["config_key"] != self.key:
                raise UsageError(f"{ckpt_path}: was trained with another budget/arch/data/world size; resume with "
                                 f"the same --budget/--arch/--data and number of processes, or use a new --out")
        elif self.run_dir.exists() and any(self.run_dir.iterdir()):
            if not force:
                raise UsageError(f"{self.run_dir}: run folder already exists; pass --resume to continue it, --force "
                                 f"to start over, or choose another --out")
            if self.rank == 0:
                shutil.rmtree(self.run_dir)
        self._barrier()
        torch.manual_seed(self.seed)
        overrides: dict[str, Any] = {}
        # Under torch.compile, dynamic sparse prediction's data-dependent shapes mean graph breaks and recompiles:
        # decode a fixed count instead, sized to the masking rate.
        if self.arch.sparse_prediction == "static" or (t.compile and self.arch.sparse_prediction == "dynamic"):
            overrides = {"sparse_prediction": "static", "sparse_rate": static_prediction_rate(
                t.masking, t.micro_batch_size * self.data.seq_length)}
        # The run's tokenizer names the special ids: masking uses them, config.json records them.
        self.special = special_ids(self.data.tokenizer_path)
        config = CrammedBertConfig.from_arch(self.arch, **overrides, **self.special.config_fields())
        model = CrammedBertForMaskedLM(config).to(self.dev)
        # Recipe §2.6: pretraining runs with dropout off (the model in eval mode); gradients still flow.
        model.eval()
        self.model = model
        self.optimizer = make_optimizer(model, t.optimizer, self.dev)
        use_cuda = self.dev.type == "cuda"
        self.autocast_dtype = autocast_dtype(t.precision, self.dev)
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_cuda and t.precision == "fp16")
        if state is not None:
            model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scaler.load_state_dict(state["scaler"])
            checkpointing.set_rng_state(state["rng"])
            for name in ("micro_steps", "optimizer_steps", "cursor", "tokens", "loss_ema"):
                setattr(self, name, state[name])
            self.elapsed_offset = state["elapsed"]
            self.output.info(f"resuming from {ckpt_path} (micro-step {self.micro_steps}, "
                             f"{self.elapsed_offset / 3600:.3f} h of the budget spent)")
        self.forward = model
        if self.world > 1:
            self.forward = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.dev.index] if use_cuda else None)
        if t.compile:
            self.forward = torch.compile(self.forward)
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl", enabled=self.rank == 0)
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.metrics.truncate_after(self.micro_steps)
            write_json(self.run_dir / "run-config.json", {"train": t.model_dump(mode="json"),
                                                      "arch": self.arch.model_dump(mode="json"),
                                                      "data": str(self.data.path), "world_size": self.world,
                                                      "seed": self.seed, "config_key": self.key})

    def _barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    # -- training ---------------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        t, S = self.train_budget, self.data.seq_length
        clock = BudgetClock(t.hours * 3600, self.elapsed_offset, t.max_steps)
        global_micro = t.micro_batch_size * self.world
        flops_token = arch_flops_per_token(self.arch, S, t.masking.rate)
        tflops = device_peak_tflops(self.dev)
        peak = tflops * 1e12 if tflops else None
        dash = Dashboard(self.output.console, enabled=self.rank == 0 and not self.output.quiet)
        batch = t.batch_size
        accumulated, loss_sum, loss_count = 0, torch.zeros((), device=self.dev), 0
        last_ckpt = time.perf_counter()
        window_tokens, window_start = 0, time.perf_counter()
        stop_reason, lr, last_log = "", t.optimizer.lr, self.micro_steps
        handlers = self._install_signals()
        clock.start()
        try:
            while True:
                if accumulated == 0:  # decisions only at optimizer-step boundaries, so a checkpoint is exact
                    save_due = time.perf_counter() - last_ckpt >= t.checkpoint_every_minutes * 60
                    stop_reason, x, save_due = self._sync(clock, save_due)
                    if stop_reason:
                        break
                    if save_due:
                        self._save_state(clock)
                        last_ckpt = time.perf_counter()
                    batch = batch_size_at(micro_steps=self.micro_steps, x=x, batch_size=t.batch_size,
                                          micro_batch_size=global_micro, ramp=t.batch_ramp)
                    lr = t.optimizer.lr * lr_factor(t.schedule, x)
                loss = self._micro_step(global_micro, accumulated + global_micro >= batch,
                                         -(-batch // global_micro))
                loss_sum += loss.detach()
                loss_count += 1
                accumulated += global_micro
                self.micro_steps += 1
                self.cursor = (self.cursor + global_micro) % self.data.num_rows
                self.tokens += global_micro * S
                window_tokens += global_micro * S
                if accumulated < batch:
                    continue
                mean_loss = self._step(lr, loss_sum / loss_count)
                accumulated, loss_sum, loss_count = 0, torch.zeros((), device=self.dev), 0
                self.loss_ema = mean_loss if self.loss_ema is None else 0.98 * self.loss_ema + 0.02 * mean_loss
                if self.micro_steps - last_log >= t.log_every_steps or self.optimizer_steps == 1:
                    last_log = self.micro_steps
                    now = time.perf_counter()
                    tps = window_tokens / max(now - window_start, 1e-9)
                    window_tokens, window_start = 0, now
                    self._log(clock, mean_loss, lr, batch, tps, flops_token, peak, dash)
        finally:
            self._restore_signals(handlers)
            dash.close()
        # Always leave a resumable state: after a signal to continue, after a cap to extend the run.
        self._save_state(clock)
        return self._finish(clock, stop_reason)

    def _micro_step(self, global_micro: int, sync: bool, accum: int) -> torch.Tensor:
        t = self.train_budget
        rows = self._rows(self.cursor, global_micro)
        # Masks are drawn for the whole global micro-batch from a generator keyed to the micro-step, so any
        # number of ranks (and a resumed run) sees exactly the masks one process would.
        gen = torch.Generator(device=self.dev).manual_seed(self.seed * 1_000_003 + self.micro_steps)
        ids = torch.from_numpy(rows)
        if self.dev.type == "cuda":  # page-locked (from torch's caching host allocator): the copy overlaps compute
            ids = ids.pin_memory()
        ids = ids.to(self.dev, non_blocking=True)
        inputs, labels = mask_batch(ids, t.masking, self.data.vocab_size, gen, special=self.special)
        lo = self.rank * t.micro_batch_size
        inputs, labels = inputs[lo: lo + t.micro_batch_size], labels[lo: lo + t.micro_batch_size]
        no_sync = self.forward.no_sync() if self.world > 1 and not sync else contextlib.nullcontext()
        with no_sync:
            loss = forward_loss(self.forward, inputs, labels, self.autocast_dtype)
        self.scaler.scale(loss / accum).backward()
        return loss

    def _rows(self, start: int, count: int) -> Any:
        import numpy as np

        n = self.data.num_rows
        if start + count <= n:
            return self.data.rows(start, count)
        head = self.data.rows(start, n - start)  # wrap around: the data loops like an infinite loader
        return np.concatenate([head, self._rows(0, count - (n - start))])

    def _step(self, lr: float, loss: torch.Tensor) -> float:
        """One optimizer step; returns the mean loss over the batch (all ranks)."""
        t = self.train_budget
        if self.world > 1:
            loss = loss.clone()
            torch.distributed.all_reduce(loss)
            loss /= self.world
        value = float(loss)
        if not math.isfinite(value):
            raise RunError(f"loss became {value} at micro-step {self.micro_steps}; the last good checkpoint is kept "
                           f"in {self.run_dir / 'checkpoints'} — lower the learning rate or use precision bf16/fp32")
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        apply_gradients(self.model, self.optimizer, self.scaler, t.grad_clip)
        self.optimizer_steps += 1
        return value

    def _sync(self, clock: BudgetClock, save_due: bool) -> tuple[str, float, bool]:
        """(stop reason or "", budget fraction, checkpoint now?) — identical on every rank: rank 0's clock
        decides, so all ranks use the same LR and batch size and stop or checkpoint at the same step."""
        t = self.train_budget
        elapsed = clock.elapsed() if self.rank == 0 else 0.0
        flags = [elapsed, float(self.stop_signal is not None), float(save_due and self.rank == 0)]
        if self.world > 1:  # a tensor on the GPU for NCCL; on the CPU when alone, so no GPU sync
            shared = torch.tensor(flags, dtype=torch.float64, device=self.dev)
            torch.distributed.all_reduce(shared, op=torch.distributed.ReduceOp.MAX)
            flags = shared.tolist()
        elapsed, signalled, save_due = flags[0], flags[1] > 0, flags[2] > 0
        x = clock.fraction(self.micro_steps, elapsed)
        if signalled:
            return f"signal ({self.stop_signal or 'another rank'})", x, False
        if t.max_steps is not None and self.micro_steps >= t.max_steps:
            return f"max_steps ({t.max_steps})", x, False
        if t.max_tokens is not None and self.tokens >= t.max_tokens:
            return f"max_tokens ({t.max_tokens})", x, False
        if elapsed >= clock.budget_seconds:
            return f"time budget ({t.hours} h)", x, False
        return "", x, save_due

    def _install_signals(self) -> dict[int, Any]:
        def handler(signum: int, frame: Any) -> None:
            self.stop_signal = signal.Signals(signum).name

        saved = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread
                saved[sig] = signal.signal(sig, handler)
        return saved

    def _restore_signals(self, saved: dict[int, Any]) -> None:
        for sig, old in saved.items():
            signal.signal(sig, old)

    def _save_state(self, clock: BudgetClock) -> None:
        if self.rank == 0:
            state = {"config_key": self.key, "model": self.model.state_dict(),
                     "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                     "rng": checkpointing.rng_state(), "micro_steps": self.micro_steps,
                     "optimizer_steps": self.optimizer_steps, "cursor": self.cursor, "tokens": self.tokens,
                     "loss_ema": self.loss_ema, "elapsed": clock.elapsed()}
            try:
                checkpointing.save_state(self.run_dir, self.micro_steps, state, self.train_budget.keep_checkpoints)
            except OSError as exc:
                raise RunError(f"{self.run_dir / 'checkpoints'}: cannot write a checkpoint ({exc.strerror}); the "
                               f"previous one is intact — free disk space and run again with --resume") from None
        self._barrier()

    def _log(self, clock: BudgetClock, loss: float, lr: float, batch: int, tps: float, flops_token: float,
             peak: float | None, dash: Dashboard) -> None:
        if self.rank != 0:
            return
        fraction = clock.fraction(self.micro_steps)
        elapsed = clock.elapsed()
        eta = elapsed / fraction * (1 - fraction) if fraction > 0 else float("nan")
        if self.train_budget.max_steps is not None:
            eta = min(eta, clock.budget_seconds - elapsed)
        row = {"step": self.micro_steps, "optimizer_step": self.optimizer_steps, "loss": loss,
               "loss_ema": self.loss_ema, "lr": lr, "batch_size": batch, "tokens": self.tokens,
               "tokens_per_s": tps, "mfu": tps * flops_token / peak if peak else None, "fraction": fraction,
               "elapsed_s": elapsed, "eta_s": eta if math.isfinite(eta) else 0.0}
        self.metrics.log(row)
        dash.update(row)

    def _finish(self, clock: BudgetClock, stop_reason: str) -> dict[str, Any]:
        report: dict[str, Any] = {}
        if self.rank == 0:
            from cramcli.model.checkpoint import save_checkpoint

            final = self.run_dir / "final"
            # Write beside and swap, so a resumed run replaces an earlier final/ without a moment of none.
            fresh, old = self.run_dir / ".final.new", self.run_dir / ".final.old"
            for leftover in (fresh, old):
                shutil.rmtree(leftover, ignore_errors=True)
            save_checkpoint(self.model, fresh, tokenizer_path=self.data.tokenizer_path)
            if final.exists():
                final.rename(old)
            fresh.rename(final)
            shutil.rmtree(old, ignore_errors=True)
            rows = self.metrics.rows
            write_text(self.run_dir / "loss.svg", loss_svg([(r["step"], r["loss"]) for r in rows]))
            elapsed = clock.elapsed()
            report = {"run": str(self.run_dir), "final": str(final), "stop_reason": stop_reason,
                      "micro_steps": self.micro_steps, "optimizer_steps": self.optimizer_steps,
                      "tokens": self.tokens, "training_hours": elapsed / 3600, "budget_hours": self.train_budget.hours,
                      "first_loss": rows[0]["loss"] if rows else None, "final_loss": rows[-1]["loss"] if rows else None,
                      "loss_ema": self.loss_ema, "tokens_per_s": self.tokens / elapsed if elapsed > 0 else None,
                      "world_size": self.world, "device": str(self.dev), "data": str(self.data.path)}
        self._barrier()
        return report


def _table(report: dict[str, Any]) -> Table:
    table = Table(title="cram pretrain", show_header=False)
    for key in ("final", "stop_reason", "micro_steps", "optimizer_steps", "tokens", "training_hours",
                "first_loss", "final_loss", "tokens_per_s"):
        value = report.get(key)
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    return table
