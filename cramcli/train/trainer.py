"""The pretraining loop, built from parts that each save and restore their own state:

- `TrainStep` (train/step.py): model, optimizers, loss scaler and the micro-step/update they run;
- `ScheduleClock` (train/clock.py): the budget fraction that drives the LR schedule and batch ramp;
- `DataCursor` (train/data_cursor.py): where the run is in its prepared rows;
- `RngState` (train/checkpointing.py) and `RunProgress` (train/metrics.py): generators, counters, loss EMA.

`StopConditions` (train/stopping.py) holds every stop reason, `Checkpointer` gathers the parts' states. Decisions
(stop, checkpoint, held-out evaluation, batch size, LR) are taken only at optimizer-step boundaries, so a checkpoint
is exact, and under DDP rank 0's clock decides for every rank. `HeldOutEval` (train/heldout.py) scores the held-out
split every `eval_every_minutes` of training time and at the end, on a paused clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cramcli.budgets import ArchBudget, TrainBudget
from cramcli.data.prepared import PreparedData
from cramcli.data.tokenizer import special_ids
from cramcli.train import distributed
from cramcli.train.checkpointing import Checkpointer, RngState, newest_state, resume_hint
from cramcli.train.clock import ScheduleClock
from cramcli.train.dashboard import Dashboard
from cramcli.train.data_cursor import DataCursor
from cramcli.train.feed import BatchFeed
from cramcli.train.heldout import HeldOutEval
from cramcli.train.metrics import MetricsLog, RunProgress, heldout_rows, training_rows
from cramcli.train.schedules import batch_size_at, lr_factor, masking_rate
from cramcli.train.step import TrainStep
from cramcli.train.stopping import StopConditions
from cramcli.utils import disk
from cramcli.utils.flops import arch_flops_per_token, device_peak_tflops


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class Trainer:
    def __init__(self, train: TrainBudget, arch: ArchBudget, data: PreparedData, run_dir: Path, *,
                 device: torch.device, rank: int = 0, world: int = 1, seed: int = 0, config_key: str,
                 dashboard: Dashboard | None = None, peak_tflops: float | None = None,
                 say: Callable[[str], None] | None = None, warn: Callable[[str], object] = print) -> None:
        self.budget, self.arch, self.data, self.run_dir = train, arch, data, Path(run_dir)
        self.device, self.rank, self.world, self.seed = device, rank, world, seed
        self.warn = warn
        self.global_micro = train.micro_batch_size * world
        torch.manual_seed(seed)
        # The run's tokenizer names the special ids: masking uses them, config.json records them.
        self.special = special_ids(data.tokenizer_path)
        self.step = TrainStep(arch, train, device, tokens_per_micro_batch=train.micro_batch_size * data.seq_length,
                              special=self.special, world=world, say=say if rank == 0 else None)
        self.clock = ScheduleClock(train.hours * 3600, train.schedule_clock, train.max_steps)
        self.cursor = DataCursor(data, self.global_micro)
        self.feed = BatchFeed(self.cursor, train.masking, data.vocab_size, self.special, device,
                              micro_batch_size=train.micro_batch_size, rank=rank, world=world, seed=seed)
        self.progress = RunProgress(MetricsLog(self.run_dir / "metrics.jsonl", enabled=rank == 0, warn=warn))
        self.stops = StopConditions(train)
        self.checkpointer = Checkpointer(
            self.run_dir, {"model": self.step, "clock": self.clock, "data": self.cursor, "rng": RngState(),
                           "progress": self.progress}, config_key=config_key, keep=train.keep_checkpoints)
        self.dashboard = dashboard or Dashboard(None, enabled=False)
        # MFU: model FLOP/s of all ranks over the peak of all their devices (tokens/s counts every rank).
        peak = peak_tflops or device_peak_tflops(device)
        self.peak_flops = peak * 1e12 * world if peak else None
        # A scheduled masking rate is linear in the budget: its mid-budget value is its mean.
        self.flops_per_token = arch_flops_per_token(arch, data.seq_length, masking_rate(train.masking, 0.5))
        self.mask_rate = train.masking.rate
        rows = data.heldout_rows()
        self.heldout = None if rows is None else HeldOutEval(
            rows, self.special, data.vocab_size, device, batch_size=train.micro_batch_size, rank=rank, world=world)
        self.eval_every = train.eval_every_minutes * 60

    @property
    def budget_steps(self) -> int:
        """Micro-steps as the budget counts them (`max_steps`, the v1 batch ramp, the steps clock): micro-batches
        of `micro_batch_size` sequences, so under N processes one global micro-step counts N and the caps and the
        ramp cover the same sequences on any number of GPUs. One process: the micro-steps themselves."""
        return self.progress.micro_steps * self.world

    def resume(self, warn: Any) -> Path:
        return self.checkpointer.restore(warn)

    # -- the loop ---------------------------------------------------------------------------------------
    def run(self) -> str:
        """Train until a stop condition holds; always leave a resumable state. Returns the stop reason."""
        t, p = self.budget, self.progress
        accumulated, losses = 0, []
        last_ckpt = window_start = time.perf_counter()
        window_tokens, last_log = 0, p.micro_steps
        batch, lr, factor = t.batch_size, t.optimizer.lr, 1.0
        next_eval = self._next_eval(self.clock.elapsed())
        self.clock.start()
        with self.stops.catching_signals():
            try:
                while True:
                    if accumulated == 0:
                        save_due = time.perf_counter() - last_ckpt >= t.checkpoint_every_minutes * 60
                        reason, x, save_due, elapsed = self._decide(save_due)
                        if reason:
                            break
                    elif self.world == 1:
                        # Inside a long accumulation, time is checked after every micro-batch, as the original
                        # does: the run stops on time (the partial accumulation is dropped, the state saved is the
                        # last optimizer step's), and an evaluation point is scored when it falls due (weights
                        # only change at optimizer steps). Under DDP the ranks agree on time only at step
                        # boundaries (no collective per micro-step).
                        elapsed = self.clock.elapsed()
                        reason = self.stops.out_of_time(elapsed)
                        if reason:
                            self.step.drop_gradients()
                            break
                    if elapsed >= next_eval:
                        next_eval = self._next_eval(elapsed)
                        # It stands for the latest point passed (a long step may pass two at once).
                        paused = self.evaluate(due_s=next_eval - self.eval_every)
                        window_start += paused
                        last_ckpt += paused
                    if accumulated == 0:
                        if save_due:
                            self.save()
                            last_ckpt = time.perf_counter()
                        batch = batch_size_at(micro_steps=self.budget_steps, x=x, batch_size=t.batch_size,
                                              micro_batch_size=self.global_micro, ramp=t.batch_ramp)
                        factor = lr_factor(t.schedule, x)
                        lr = t.optimizer.lr * factor
                        self.mask_rate = masking_rate(t.masking, x)
                    losses.append(self._micro_step(sync=accumulated + self.global_micro >= batch,
                                                   accumulation=-(-batch // self.global_micro)))
                    accumulated += self.global_micro
                    p.micro_steps += 1
                    p.tokens += self.global_micro * self.data.seq_length
                    window_tokens += self.global_micro * self.data.seq_length
                    if accumulated < batch:
                        continue
                    loss = self._update(factor, torch.stack(losses).mean())
                    accumulated, losses = 0, []
                    if p.micro_steps - last_log >= t.log_every_steps or p.optimizer_steps == 1:
                        now = time.perf_counter()
                        self._log(loss, lr, batch, window_tokens / max(now - window_start, 1e-9))
                        last_log, window_tokens, window_start = p.micro_steps, 0, now
            finally:
                self.dashboard.close()
        if self.heldout is not None and not reason.startswith("signal"):
            self.evaluate(due_s=self.clock.elapsed())  # the end of the run (a signal leaves it to the resumed run)
        # After a signal, to continue; after a cap, to extend the run.
        self.save()
        return reason

    def _next_eval(self, elapsed: float) -> float:
        """The next multiple of eval_every_minutes after `elapsed` training seconds: the same points in time for
        every run (inf: no periodic evaluation)."""
        if self.heldout is None or self.eval_every <= 0:
            return math.inf
        return (math.floor(elapsed / self.eval_every) + 1) * self.eval_every

    def evaluate(self, due_s: float) -> float:
        """Score the held-out split on a paused clock; log it (with `due_s`, the point in training time it stands
        for); returns the seconds it took."""
        assert self.heldout is not None
        with self.clock.paused():
            begin = time.perf_counter()
            result = self.heldout.evaluate(self.step.model, self.step.dtype)
            seconds = time.perf_counter() - begin
        self.progress.eval_seconds += seconds
        if self.rank == 0:
            row = {"step": self.progress.micro_steps, "tokens": self.progress.tokens,
                   "elapsed_s": self.clock.elapsed(), "due_s": due_s, **result, "eval_s": seconds}
            self._write_metrics(row)
            self.dashboard.heldout(row)
        return seconds

    def _micro_step(self, *, sync: bool, accumulation: int) -> torch.Tensor:
        inputs, labels = self.feed.next(self.progress.micro_steps, rate=self.mask_rate)
        return self.step.micro_step(inputs, labels, accumulation, sync)

    def _update(self, factor: float, loss: torch.Tensor) -> float:
        """One optimizer step at the schedule's LR `factor`; returns the batch's mean loss over all ranks."""
        value = float(distributed.mean_over_ranks(loss, self.world))
        if not math.isfinite(value):
            raise NonFiniteLoss(f"loss became {value} at micro-step {self.progress.micro_steps}; the last good "
                                f"checkpoint is kept in {self.run_dir / 'checkpoints'} — lower the learning rate "
                                f"or use precision bf16/fp32")
        self.step.update(factor)
        self.progress.optimizer_steps += 1
        self.progress.add_loss(value)
        return value

    def _decide(self, save_due: bool) -> tuple[str, float, bool, float]:
        """(stop reason or "", budget fraction, checkpoint now?, training seconds), the same on every rank."""
        elapsed = self.clock.elapsed() if self.rank == 0 else 0.0
        flags = distributed.all_reduce_max(
            [elapsed, float(self.stops.signal is not None), float(save_due and self.rank == 0)],
            self.device, self.world)
        elapsed, signalled, save_due = flags[0], flags[1] > 0, flags[2] > 0
        x = self.clock.fraction(self.budget_steps, elapsed)
        reason = self.stops.should_stop(micro_steps=self.budget_steps, tokens=self.progress.tokens,
                                        elapsed=elapsed, signalled=signalled)
        return reason, x, save_due and not reason, elapsed

    def save(self) -> None:
        if self.rank == 0:
            self.checkpointer.save(self.progress.micro_steps, self.warn)
        distributed.barrier(self.world)

    def _log(self, loss: float, lr: float, batch: int, tokens_per_s: float) -> None:
        if self.rank != 0:
            return
        p, fraction, elapsed = self.progress, self.clock.fraction(self.budget_steps), self.clock.elapsed()
        eta = elapsed / fraction * (1 - fraction) if fraction > 0 else float("nan")
        eta = min(eta, self.stops.budget_seconds - elapsed)  # a step-keyed run still stops when time runs out
        row = {"step": p.micro_steps, "optimizer_step": p.optimizer_steps, "loss": loss, "loss_ema": p.loss_ema,
               "lr": lr, "batch_size": batch, "tokens": p.tokens, "tokens_per_s": tokens_per_s,
               "mfu": tokens_per_s * self.flops_per_token / self.peak_flops if self.peak_flops else None,
               "fraction": fraction, "elapsed_s": elapsed, "eta_s": max(eta, 0.0) if math.isfinite(eta) else 0.0}
        if self.budget.masking.final_rate is not None:
            row["mask_rate"] = self.mask_rate
        self._write_metrics(row)
        self.dashboard.update(row)

    def _write_metrics(self, row: dict[str, Any]) -> None:
        """One metrics.jsonl line; a full disk is one line naming the checkpoint to resume from."""
        try:
            self.progress.log.log(row)
        except OSError as exc:
            if not disk.is_write_error(exc):
                raise
            raise disk.write_failure(exc, intact=resume_hint(self.run_dir)) from None

    def export(self) -> Path:
        """The trained model as the checkpoint `final/`, written beside it and swapped in whole: a resumed run
        replaces the earlier one so that the path holds the old or the new folder at every instant
        (utils/atomic.py says how, and the one fallback). A failed write leaves the old `final/` as it was."""
        from cramcli.model.checkpoint import save_checkpoint

        final = self.run_dir / "final"
        if self.rank == 0:
            needed = sum(p.numel() * p.element_size() for p in self.step.model.parameters())
            low = disk.low_space_warning(self.run_dir, needed, "the final export")
            if low:
                self.warn(low)
            try:
                save_checkpoint(self.step.model, final, tokenizer_path=self.data.tokenizer_path, force=True)
            except OSError as exc:
                if not disk.is_write_error(exc):
                    raise
                before = "the previous final/ is unchanged" if final.is_dir() else "no final/ was written"
                raise disk.write_failure(exc, final, needed=needed, intact=(
                    f"{before}; the trained state is in checkpoint {newest_state(self.run_dir)}; free space and run "
                    "with --resume to export it")) from None
        distributed.barrier(self.world)
        return final

    def summary(self, reason: str, final: Path) -> dict[str, Any]:
        """The run's report. Numbers people read are rounded; metrics.jsonl keeps full precision."""
        from cramcli.utils.device import device_name

        p, elapsed = self.progress, self.clock.elapsed()
        rows, evals = training_rows(p.log.rows), heldout_rows(p.log.rows)
        heldout = {"heldout_loss": _round(evals[-1]["heldout_loss"]) if evals else None,
                   "heldout_accuracy": _round(evals[-1]["heldout_accuracy"]) if evals else None,
                   "heldout_rows": self.heldout.rows if self.heldout else 0,
                   "heldout_tokens_scored": self.heldout.tokens if self.heldout else 0,
                   "evaluations": len(evals), "eval_seconds": round(p.eval_seconds, 2),
                   "eval_share_of_training": round(p.eval_seconds / elapsed, 4) if elapsed > 0 else None}
        return {"run": str(self.run_dir), "final": str(final), "stop_reason": reason, "micro_steps": p.micro_steps,
                "optimizer_steps": p.optimizer_steps, "tokens": p.tokens, "training_hours": round(elapsed / 3600, 5),
                "budget_hours": self.budget.hours, "schedule_clock": self.clock.mode,
                "first_loss": _round(rows[0]["loss"] if rows else None),
                "final_loss": _round(rows[-1]["loss"] if rows else None), "loss_ema": _round(p.loss_ema),
                "tokens_per_s": round(p.tokens / elapsed, 1) if elapsed > 0 else None, "world_size": self.world,
                "device": str(self.device), "device_name": device_name(self.device), "data": str(self.data.path),
                **heldout}


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)
