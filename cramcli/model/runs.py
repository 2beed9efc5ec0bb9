"""Which run or checkpoint a command means: the one module that answers it for `glue`, `convert`, `card` and `push`.

`cram pretrain --budget B` writes its run to `outputs/runs/<label(B)>` (`run_folder`); the later commands, given
no path, take the newest *finished* pretraining run under `outputs/runs` (a folder `cram pretrain` made, with its
`report.json` and `final/` written), narrowed to `outputs/runs/<label(B)>` by `--budget`. They print one line
naming what they took and refuse when there is none or two are equally new. A path given explicitly is used as
it is (cram's run folders and checkpoints, the original cramming layouts: `model.checkpoint.resolve`).

The default output folders derive from the run, so each command finds the previous one's work by itself:
`glue` writes `<run>/glue`, `convert` writes `<run>/final-<attention>` (`converted_folder`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cramcli import budgets
from cramcli.utils.errors import UsageError
from cramcli.utils.run_folder import read_marker

RUNS = Path("outputs/runs")
"""Where `cram pretrain` puts its run folders by default."""


def run_folder(budget: str | Path) -> Path:
    """The run folder `cram pretrain --budget B` writes by default: the naming rule every command shares."""
    return RUNS / budgets.label(budget)


def is_finished_run(folder: Path) -> bool:
    """A folder `cram pretrain` made and finished: its marker, `report.json` and a `final/` checkpoint."""
    marker = read_marker(folder)
    return (marker is not None and marker.get("command") == "pretrain" and (folder / "report.json").is_file()
            and (folder / "final" / "config.json").is_file())


def pick_run(given: Path | None, *, budget: str | Path | None, flag: str,
             say: Callable[[str], None]) -> Path:
    """`given` when a path was passed; else the newest finished pretraining run under `outputs/runs` (only
    `outputs/runs/<label(budget)>` when `budget` is given), announced through `say`."""
    if given is not None:
        return Path(given)
    where = f"{run_folder(budget)}" if budget is not None else f"{RUNS}/*"
    folders = [run_folder(budget)] if budget is not None else sorted(p for p in RUNS.glob("*") if p.is_dir())
    runs = [p for p in folders if is_finished_run(p)]
    if not runs:
        raise UsageError(f"no finished pretraining run in {where} (a folder with report.json and final/ from "
                         f"`cram pretrain`); run `cram pretrain` first, or pass {flag} PATH")
    # report.json is the last file a finished run writes: its time is when the run finished.
    when = {p: (p / "report.json").stat().st_mtime_ns for p in runs}
    newest = max(when.values())
    tied = [p for p in runs if when[p] == newest]
    if len(tied) > 1:
        raise UsageError(f"{', '.join(map(str, tied))}: finished at the same moment, so neither is the newest; "
                         f"pass {flag} PATH or --budget NAME to say which")
    say(f"using {tied[0]} (the newest finished pretraining run in {where}; pass {flag} to choose another)")
    return tied[0]


def converted_folder(source: Path, attention: str) -> Path:
    """Where `cram convert` writes without `-o`: beside `final/` inside a cram run (`RUN/final-<attention>`), else
    `outputs/converted/<name>-<attention>` (an original checkpoint's folder is never written into)."""
    source = Path(source)
    run = source.parent if source.name == "final" else source
    if is_finished_run(run):
        return run / f"final-{attention}"
    name = source.parent.parent.name if source.parent.name == "checkpoints" else source.name
    return Path("outputs/converted") / f"{name or 'checkpoint'}-{attention}"
