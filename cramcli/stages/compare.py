"""Stage `compare`: recipes trained on the same prepared data for the same wall clock, scored on the same held-out
rows at the same points of training time. Thin: flags → `train.compare` (arms, results, summary) → table, PNG and
JSON in the compare folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Group
from rich.table import Table

from cramcli.stages import options
from cramcli.utils import run_folder
from cramcli.utils.atomic import write_bytes
from cramcli.utils.console import Output
from cramcli.utils.errors import UsageError


def run(
    output: Output,
    *,
    recipe: Annotated[Optional[list[str]], typer.Option("--recipe", "-r", help="A recipe: TRAIN[:ARCH], each a preset name or a JSON file (e.g. v2, v2:arch.json, train.json:arch.json); give two or more, the first is the baseline.")] = None,
    minutes: Annotated[float, typer.Option("--minutes", help="Training minutes per run (every recipe gets the same wall clock; evaluation is not counted).")] = 5.0,
    repeats: Annotated[int, typer.Option("--repeats", help="Runs per recipe, with seeds 0..N-1 (spread = half the range over them).")] = 1,
    eval_every_minutes: Annotated[Optional[float], typer.Option("--eval-every-minutes", help="Held-out evaluation cadence for every run (default: a sixth of --minutes).")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Prepared-data folder with a held-out split (default: what prepare-data wrote for the first recipe's budget).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Compare folder (default: outputs/compare/<recipes>_<minutes>min).")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="CPU threads for every run (default: torch's current count).")] = None,
    device: options.Device = None,
    gpu: options.Gpu = None,
    force: options.Force = False,
) -> None:
    """Train recipes side by side for the same wall clock and compare their held-out loss.

    One run at a time, each recipe [bold]--repeats[/] times; run again, a stopped compare reuses finished runs.

    Writes compare.json, compare.png and every run under arms/.
    """
    import torch

    from cramcli.train import compare
    from cramcli.train.dashboard import Dashboard
    from cramcli.utils.device import setup_device
    from cramcli.utils.plots import compare_png

    specs = list(recipe or [])
    if len(specs) < 2:
        raise UsageError("--recipe: name at least two recipes to compare, e.g. --recipe v2 --recipe mine.json:v2")
    if not 0 < minutes <= 1e6:
        raise UsageError(f"--minutes {minutes}: must be positive")
    if repeats < 1:
        raise UsageError(f"--repeats {repeats}: must be at least 1")
    every = minutes / 6 if eval_every_minutes is None else eval_every_minutes
    if not 0 < every <= minutes:
        raise UsageError(f"--eval-every-minutes {every}: must be positive and at most --minutes {minutes:g}")
    if threads is not None and threads < 1:
        raise UsageError(f"--threads {threads}: must be at least 1")
    recipes = compare.distinct_names([compare.parse_recipe(spec, minutes, every) for spec in specs])
    prepared = compare.open_data(data, recipes, output.warn)
    compare.check_recipes(recipes, prepared)
    dev = setup_device(device, gpu)
    if threads is not None:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    folder = out if out is not None else Path("outputs/compare") / (
        "_vs_".join(compare.slug(s) for s in specs)[:100] + f"_{minutes:g}min")
    settings = {"recipes": specs, "minutes": minutes, "repeats": repeats, "every": every,
                "data": prepared.manifest.get("content_hash")}
    comparison = compare.Comparison(recipes, prepared, folder, repeats=repeats, threads=threads, device=dev)

    with run_folder.open_folder(folder, command="compare", settings_fingerprint=run_folder.fingerprint(settings),
                                force=force):
        results = comparison.run(output.info, lambda: Dashboard(output.console, enabled=not output.quiet))
        summary = compare.summarise(recipes, results, minutes, every)
        report = {**summary, "data": str(prepared.path), "heldout_rows": prepared.heldout["num_rows"],
                  "repeats": repeats, "threads": threads, "device": str(dev), "folder": str(folder),
                  "arms": [[a["recipe"] + f" seed {a['seed']}" for a in arms] for arms in results]}
        curves = {r.name: [[(compare_time(row, minutes), row["heldout_loss"]) for row in arm["curve"]]
                            for arm in arms] for r, arms in zip(recipes, results, strict=True)}
        write_bytes(folder / "compare.png", compare_png(curves, f"held-out loss, {minutes:g} min each, "
                                                                f"{repeats} repeat(s), {threads} thread(s)"))
        output.report(report, _table(summary), folder / "compare.json")


def compare_time(row: dict[str, Any], minutes: float) -> float:
    """An evaluation's point on the common time axis: its due time, the budget's end for the final one."""
    return min(row["due_s"], minutes * 60)


def _fmt(stat: dict[str, Any], digits: int = 4, scale: float = 1.0) -> str:
    if stat["mean"] is None:
        return "—"
    text = f"{stat['mean'] / scale:.{digits}f}"
    return text + (f" ± {stat['spread'] / scale:.{digits}f}" if stat["n"] > 1 else "")


def _when(seconds: float) -> str:
    return f"{seconds / 60:.3g} min" if seconds >= 60 else f"{seconds:.3g} s"


def _table(summary: dict[str, Any]) -> Group:
    times = summary["times_s"]
    shown = times if len(times) <= 4 else [times[len(times) // 3 - 1], times[2 * len(times) // 3 - 1], times[-1]]
    table = Table(title="cram compare — held-out MLM loss at equal training time (mean ± spread)",
                  title_justify="left")
    table.add_column("recipe", style="bold")
    for t in shown:
        table.add_column(f"loss @ {_when(t)}", justify="right")
    table.add_column("accuracy", justify="right")
    table.add_column("tokens seen", justify="right")
    table.add_column("tokens/s", justify="right")
    table.add_column("reaches baseline's final at", justify="right")
    for row in summary["recipes"]:
        reach = row["time_to_first_final_s"]
        table.add_row(row["name"], *(_fmt(row["loss"][f"{t:g}"]) for t in shown), _fmt(row["accuracy"], 3),
                      _fmt(row["tokens"], 0), _fmt(row["tokens_per_s"], 0),
                      f"{_fmt(reach, 1)} s ({row['reached_first_final']} runs)" if reach["mean"] is not None
                      else f"not reached ({row['reached_first_final']})")
    verdicts = [f"[bold]{row['name']}[/]: {row['verdict']}" for row in summary["recipes"][1:]]
    return Group(table, *verdicts)
