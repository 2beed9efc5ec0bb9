"""Metrics: one JSON line per log step, a hand-written SVG loss curve, TensorBoard/W&B only when importable."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cramcli.utils.atomic import write_text


class MetricsLog:
    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self.rows: list[dict[str, Any]] = []
        if enabled and self.path.exists():  # resume: keep the curve of earlier sessions
            self.rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        self._tb = _tensorboard(self.path.parent) if enabled else None
        self._wandb = _wandb(self.path.parent) if enabled else None

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.rows.append(row)
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
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


class RunProgress:
    """How far training got (micro-steps, optimizer steps, tokens) and the loss EMA, with the metrics log of
    the run: a trainer part. On resume the log forgets the lines written after the checkpoint (they will be
    logged again)."""

    EMA = 0.98

    def __init__(self, log: MetricsLog) -> None:
        self.log = log
        self.micro_steps = self.optimizer_steps = self.tokens = 0
        self.loss_ema: float | None = None

    def add_loss(self, loss: float) -> None:
        self.loss_ema = loss if self.loss_ema is None else self.EMA * self.loss_ema + (1 - self.EMA) * loss

    def state_dict(self) -> dict[str, Any]:
        return {"micro_steps": self.micro_steps, "optimizer_steps": self.optimizer_steps, "tokens": self.tokens,
                "loss_ema": self.loss_ema}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.micro_steps, self.optimizer_steps = state["micro_steps"], state["optimizer_steps"]
        self.tokens, self.loss_ema = state["tokens"], state["loss_ema"]
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


def loss_svg(points: list[tuple[float, float]], title: str = "MLM loss") -> str:
    """A minimal line chart (x = micro-step, y = loss) as SVG, no plotting library needed."""
    width, height, pad = 640, 360, 48
    if not points:
        points = [(0.0, 0.0)]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) or 1.0
    y0, y1 = min(ys), max(ys)
    x1 = x1 if x1 > x0 else x0 + 1
    y1 = y1 if y1 > y0 else y0 + 1

    def sx(x: float) -> float:
        return pad + (x - x0) / (x1 - x0) * (width - 2 * pad)

    def sy(y: float) -> float:
        return height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)

    path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">\n'
        f'<rect width="100%" height="100%" fill="white"/>\n'
        f'<text x="{width / 2}" y="20" text-anchor="middle">{title}</text>\n'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="black"/>\n'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="black"/>\n'
        f'<text x="{pad}" y="{height - pad + 16}">{x0:g}</text>\n'
        f'<text x="{width - pad}" y="{height - pad + 16}" text-anchor="end">{x1:g} steps</text>\n'
        f'<text x="{pad - 4}" y="{sy(y0):.1f}" text-anchor="end">{y0:.2f}</text>\n'
        f'<text x="{pad - 4}" y="{sy(y1):.1f}" text-anchor="end">{y1:.2f}</text>\n'
        f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{path}"/>\n'
        "</svg>\n"
    )
