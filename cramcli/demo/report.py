"""The demo's verdict and report: MLM loss start → end against its bar, each synthetic task against its baseline
plus a clear margin, the conversions' parity, and the tables people read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table

from cramcli.demo import tasks as synthetic_tasks
from cramcli.utils.errors import RunError
from cramcli.utils.jsonfile import read_rows

_GLUE_COLUMNS = {"sst2": ("SST-2", "accuracy"), "rte": ("RTE", "accuracy"), "stsb": ("STS-B", "pearson")}
"""The results.json column each synthetic task is scored under (the GLUE loader's names, not GLUE results)."""
DEMO_NOTE = ("A demo model: a few minutes of pretraining on cram's embedded corpus, and GLUE-style tasks (SST-2, RTE, "
             "STS-B layouts) generated from that same corpus, not the GLUE benchmark; it shows the pipeline, not a "
             "useful model.")
MLM_TARGET = 0.5
"""The demo's bar: masked-LM loss at the end below this fraction of its start."""
MARGINS = {"accuracy": 0.1, "pearson": 0.3}
""""A clear margin" over each task's baseline: 10 points of accuracy, or 0.3 Pearson over a constant predictor."""


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


def mlm_losses(run_dir: Path) -> tuple[float, float]:
    """MLM loss at the start (first logged step) and the end (mean of the last three logged steps)."""
    rows = read_rows(run_dir / "metrics.jsonl")
    losses = [float(r["loss"]) for r in rows if r.get("loss") is not None]
    if not losses:
        raise RunError(f"{run_dir / 'metrics.jsonl'}: no logged loss; the pretraining ran no optimizer step")
    tail = losses[-3:]
    return losses[0], sum(tail) / len(tail)


def summarise(out: Path, steps: dict[str, dict[str, Any]], baselines: dict[str, Any], seconds: float) -> dict:
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


def render(report: dict[str, Any]) -> Group:
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
