"""Stage `card`: write README.md (the model card) into a checkpoint folder, from what cram recorded.

Which checkpoint: the path given, else the newest finished pretraining run (`model/runs.py`). What is found and
written, and the protection of hand edits, live in `publish/` (`recorded.py`, `write.py`, `card.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from cramcli.publish.write import DEFAULT_LICENSE, write_card
from cramcli.stages import options
from cramcli.utils.console import Output


def run(
    output: Output,
    checkpoint: Annotated[Optional[Path], typer.Argument(help="A `cram pretrain` run folder or a checkpoint folder (RUN/final, a `cram convert` output); default: the newest finished run under outputs/runs.")] = None,
    *,
    glue: Annotated[Optional[Path], typer.Option("--glue", help="GLUE results.json (or its folder) of this checkpoint (default: MODEL/glue/results.json).")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Model name for the title and the table (default: crammed-bert-<budget>).")] = None,
    license: Annotated[str, typer.Option("--license", help="License id for the front matter (default: openrail, as the crammed-BERT cards).")] = DEFAULT_LICENSE,
    note: Annotated[Optional[str], typer.Option("--note", help="A paragraph added under the title, e.g. what the model is for.")] = None,
    repo_id: Annotated[Optional[str], typer.Option("--repo-id", help="Hub repo the How-to-use loads from (default: the folder's path).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a card (or a file beside it) that was edited by hand.")] = False,
    budget: options.RunBudget = None,
) -> None:
    """Write the model card (README.md) into the checkpoint folder, from what cram recorded.

    Front matter, architecture and budget, tokens seen, final MLM loss, the GLUE table (medians over trials),
    How to use and the citation; the three budget files and the charts are placed beside the weights.
    Regenerating gives the same file; a card edited by hand is kept unless [bold]--force[/].
    """
    from cramcli.model.runs import pick_run

    checkpoint = pick_run(checkpoint, budget=budget, flag="CHECKPOINT", say=output.info)
    report = write_card(checkpoint, glue=glue, name=name, license=license, note=note, repo_id=repo_id, force=force)
    output.report(report, _table(report))


def _table(report: dict[str, Any]) -> Table:
    table = Table(title="cram card", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("card", report["card"])
    table.add_row("from run", report["run"] or "not found (only config.json facts)")
    table.add_row("GLUE", report["glue"] or "no results (run `cram glue` first for the table)")
    if report["glue_row"]:
        table.add_row("GLUE row", " | ".join(report["glue_row"]))
    table.add_row("beside it", ", ".join(report["files"]) or "nothing")
    return table

