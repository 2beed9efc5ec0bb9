"""PNG charts with matplotlib (Agg: no display needed): a run's training curves and the GLUE medians.

Both return the PNG bytes and are deterministic (no timestamp or software stamp in the file), so a rerun on the
same numbers writes the same file; callers write them with `atomic.write_bytes`.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless servers have no display
import matplotlib.pyplot as plt  # noqa: E402

_DPI = 110


def training_png(rows: list[dict[str, Any]], title: str = "cram pretrain") -> bytes:
    """Three panels against training time (from metrics.jsonl rows): MLM loss raw and smoothed (the run's own
    EMA) with the held-out loss when the run evaluated one, learning rate with the batch size on a second axis,
    and throughput in tokens/s."""
    evals = [r for r in rows if "heldout_loss" in r]
    rows = [r for r in rows if "loss" in r]  # training lines; held-out evaluations are lines of their own
    seconds = [float(r.get("elapsed_s") or 0.0) for r in rows + evals]
    scale, unit = _time_unit(max(seconds, default=0.0))
    t = [s / scale for s in seconds[: len(rows)]]
    fig, (ax_loss, ax_lr, ax_tps) = plt.subplots(3, 1, figsize=(7.5, 8), sharex=True)
    ax_loss.plot(t, _col(rows, "loss"), color="#9ecae1", linewidth=1, label="loss (logged step)")
    ax_loss.plot(t, _col(rows, "loss_ema"), color="#08519c", linewidth=1.8, label="smoothed (EMA 0.98)")
    if evals:
        ax_loss.plot([s / scale for s in seconds[len(rows):]], _col(evals, "heldout_loss"), color="#cb181d",
                     marker="o", markersize=4, linewidth=1.5, label="held-out (fixed 15 % masking)")
    ax_loss.set_ylabel("MLM loss")
    ax_loss.legend(loc="upper right", frameon=False)
    ax_lr.plot(t, _col(rows, "lr"), color="#d94801", linewidth=1.5)
    ax_lr.set_ylabel("learning rate", color="#d94801")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ax_bs = ax_lr.twinx()
    ax_bs.step(t, _col(rows, "batch_size"), where="post", color="#54278f", linewidth=1.2)
    ax_bs.set_ylabel("batch size (sequences)", color="#54278f")
    ax_tps.plot(t, _col(rows, "tokens_per_s"), color="#238b45", linewidth=1.2)
    ax_tps.set_ylabel("tokens / s")
    ax_tps.set_xlabel(f"training time ({unit})")
    for ax in (ax_loss, ax_lr, ax_tps):
        ax.grid(alpha=0.3)
    if not rows:
        ax_loss.text(0.5, 0.5, "no logged step", ha="center", va="center", transform=ax_loss.transAxes)
    fig.suptitle(title)
    return _png(fig)


def compare_png(curves: dict[str, list[list[tuple[float, float]]]], title: str) -> bytes:
    """Held-out loss against training time, one colour per recipe: each repeat's curve thin, the mean over the
    repeats (at the common times) thick. `curves` maps a recipe to one list of (seconds, loss) per repeat."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    longest = max((t for runs in curves.values() for run in runs for t, _ in run), default=0.0)
    scale, unit = _time_unit(longest)
    colours = plt.get_cmap("tab10")
    for i, (label, runs) in enumerate(curves.items()):
        colour = colours(i % 10)
        for run in runs:
            ax.plot([t / scale for t, _ in run], [v for _, v in run], color=colour, alpha=0.35, linewidth=0.9)
        common = sorted(set.intersection(*(set(t for t, _ in run) for run in runs))) if runs else []
        mean = [sum(dict(run)[t] for run in runs) / len(runs) for t in common]
        ax.plot([t / scale for t in common], mean, color=colour, linewidth=2, marker="o", markersize=3.5,
                label=f"{label} (mean of {len(runs)})")
    ax.set_xlabel(f"training time ({unit}; evaluation not counted)")
    ax.set_ylabel("held-out MLM loss (nats)")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    ax.set_title(title, fontsize=11)
    return _png(fig)


def glue_png(tasks: dict[str, dict[str, Any]], columns: Iterable[str], title: str) -> bytes:
    """One bar per card column (in `columns` order, those present): the median over trials, with a whisker from
    the lowest to the highest trial. `tasks` is results.json's `tasks` (each with `median`, `min`, `max`)."""
    stats = {col: (r["median"][col], r["min"][col], r["max"][col]) for r in tasks.values() for col in r["median"]}
    cols = [c for c in columns if c in stats]
    med = [stats[c][0] for c in cols]
    low = [stats[c][0] - stats[c][1] for c in cols]
    high = [stats[c][2] - stats[c][0] for c in cols]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.0 + 0.9 * len(cols)), 4.2))
    x = list(range(len(cols)))
    ax.bar(x, med, color="#4292c6", width=0.6)
    ax.errorbar(x, med, yerr=[low, high], fmt="none", ecolor="#08306b", capsize=5, linewidth=1.2)
    for xi, m, h in zip(x, med, high, strict=True):
        ax.annotate(f"{m:.1f}", (xi, m + h), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=9)
    ax.set_xticks(x, cols)
    ax.set_ylabel("score ×100 (whisker: min–max)")
    ax.axhline(0, color="black", linewidth=0.8)
    top = max([m + h for m, h in zip(med, high, strict=True)], default=1.0)
    ax.set_ylim(min(0.0, min(stats[c][1] for c in cols) - 5) if cols else 0.0, max(top * 1.12, 1.0))
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title, fontsize=11)
    return _png(fig)


def _col(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [float("nan") if r.get(key) is None else float(r[key]) for r in rows]


def _time_unit(seconds: float) -> tuple[float, str]:
    if seconds >= 3 * 3600:
        return 3600.0, "hours"
    if seconds >= 3 * 60:
        return 60.0, "minutes"
    return 1.0, "seconds"


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
