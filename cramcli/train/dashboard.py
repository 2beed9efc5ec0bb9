"""Live progress: a rich panel on a terminal, plain log lines otherwise (CI, files, --quiet pipes)."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table


def _fmt_time(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Dashboard:
    PLAIN_EVERY_S = 10.0
    """Plain log lines are rate-limited so a log file stays readable (every row is in metrics.jsonl anyway)."""

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self.console = console
        self.enabled = enabled
        self.last_line = -float("inf")
        self.live: Live | None = None
        self.last_heldout: dict[str, Any] | None = None
        if enabled and console.is_terminal:
            self.live = Live(console=console, refresh_per_second=2, transient=False)
            self.live.start()

    def heldout(self, row: dict[str, Any]) -> None:
        """A held-out evaluation: always a plain line (they are rare), and a row of the live panel from now on."""
        if not self.enabled:
            return
        self.last_heldout = row
        self.console.print(f"held-out loss {row['heldout_loss']:.4f} accuracy {row['heldout_accuracy']:.1%} at "
                           f"{_fmt_time(row['elapsed_s'])} of training (evaluated in {row['eval_s']:.1f}s)",
                           highlight=False, soft_wrap=True)

    def update(self, s: dict[str, Any]) -> None:
        if not self.enabled:
            return
        mfu = f"{s['mfu']:.1%}" if s.get("mfu") is not None else "n/a"
        if self.live is None:
            if time.monotonic() - self.last_line < self.PLAIN_EVERY_S:
                return
            self.last_line = time.monotonic()
            self.console.print(
                f"step {s['step']} loss {s['loss_ema']:.4f} lr {s['lr']:.2e} batch {s['batch_size']} "
                f"tok/s {s['tokens_per_s']:.0f} mfu {mfu} budget {s['fraction']:.1%} "
                f"elapsed {_fmt_time(s['elapsed_s'])} eta {_fmt_time(s['eta_s'])}",
                highlight=False, soft_wrap=True,
            )
            return
        table = Table(title="cram pretrain", show_header=False)
        for key, value in [
            ("micro-step", str(s["step"])), ("loss (EMA)", f"{s['loss_ema']:.4f}"), ("LR", f"{s['lr']:.3e}"),
            ("batch size", str(s["batch_size"])), ("tokens/s", f"{s['tokens_per_s']:,.0f}"), ("MFU", mfu),
            ("budget spent", f"{s['fraction']:.1%} ({_fmt_time(s['elapsed_s'])})"), ("ETA", _fmt_time(s["eta_s"])),
        ]:
            table.add_row(key, value)
        if self.last_heldout is not None:
            h = self.last_heldout
            table.add_row("held-out loss / acc.", f"{h['heldout_loss']:.4f} / {h['heldout_accuracy']:.1%} "
                                                   f"(at {_fmt_time(h['elapsed_s'])})")
        self.live.update(table)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
