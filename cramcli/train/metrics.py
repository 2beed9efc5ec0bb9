"""Metrics: one JSON line per log step, TensorBoard/W&B only when importable (charts: cramcli/utils/plots.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cramcli.utils import disk
from cramcli.utils.atomic import write_text
from cramcli.utils.jsonfile import read_rows


class MetricsLog:
    def __init__(self, path: Path, enabled: bool = True, warn: Callable[[str], object] | None = None) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self.rows: list[dict[str, Any]] = []
        if enabled and self.path.exists():  # resume: keep the curve of earlier sessions
            self.rows = read_rows(self.path, warn)
        self._tb = _tensorboard(self.path.parent) if enabled else None
        self._wandb = _wandb(self.path.parent) if enabled else None

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.rows.append(row)
        try:
            with self.path.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
        except OSError as exc:
            raise disk.named(exc, self.path) from None
        if self._tb is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "step":
                    self._tb.add_scalar(key, value, row["step"])
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=row["step"])

    def truncate_after(self, step: int) -> None:
        """On resume, forget lines logged after the checkpoint (they will be logged again)."""
        if not self.enabled:
            return
        self.rows = [r for r in self.rows if r["step"] <= step]
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))


def training_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The training lines of metrics.jsonl (each has `loss`); held-out evaluations are lines of their own."""
    return [row for row in rows if "loss" in row]


def heldout_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The held-out evaluation lines of metrics.jsonl (`heldout_loss`, `heldout_accuracy`, `eval_s`)."""
    return [row for row in rows if "heldout_loss" in row]


class RunProgress:
    """How far training got (micro-steps, optimizer steps, tokens) and the loss EMA, with the metrics log of
    the run: a trainer part. On resume the log forgets the lines written after the checkpoint (they will be
    logged again)."""

    EMA = 0.98

    def __init__(self, log: MetricsLog) -> None:
        self.log = log
        self.micro_steps = self.optimizer_steps = self.tokens = 0
        self.loss_ema: float | None = None
        self.eval_seconds = 0.0
        """Seconds spent on held-out evaluation (not training time: the clock pauses)."""

    def add_loss(self, loss: float) -> None:
        self.loss_ema = loss if self.loss_ema is None else self.EMA * self.loss_ema + (1 - self.EMA) * loss

    def state_dict(self) -> dict[str, Any]:
        return {"micro_steps": self.micro_steps, "optimizer_steps": self.optimizer_steps, "tokens": self.tokens,
                "loss_ema": self.loss_ema, "eval_seconds": self.eval_seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.micro_steps, self.optimizer_steps = state["micro_steps"], state["optimizer_steps"]
        self.tokens, self.loss_ema = state["tokens"], state["loss_ema"]
        self.eval_seconds = float(state.get("eval_seconds", 0.0))  # checkpoints from before held-out evaluation
        self.log.truncate_after(self.micro_steps)


def _tensorboard(folder: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard is optional
        return None
    return SummaryWriter(str(folder / "tensorboard"))


def _wandb(folder: Path) -> Any:
    """Weights & Biases only when the package is there AND the user opted in with WANDB_PROJECT (its own
    convention), since it talks to a server; the run is named after the run folder."""
    if not os.environ.get("WANDB_PROJECT"):
        return None
    try:
        import wandb
    except ImportError:
        return None
    return wandb.init(name=folder.name, dir=str(folder), resume="allow")

