"""Where output goes: human output on stderr when `--json` owns stdout, one JSON report per command."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, RenderableType
from rich.table import Table

from cramcli.utils import atomic


@dataclass
class Output:
    """Per-command output settings (`--json`, `--quiet`, `--verbose`)."""

    json_mode: bool = False
    quiet: bool = False
    verbose: bool = False

    def __post_init__(self) -> None:
        # With --json, stdout carries exactly one JSON document; everything for people goes to stderr.
        self.console = Console(stderr=self.json_mode, quiet=self.quiet)
        # --quiet silences progress and notes, never the final report ("only errors and the final report").
        self.report_console = Console(stderr=self.json_mode)
        self.err = Console(stderr=True)

    def info(self, message: RenderableType) -> None:
        self.console.print(message)

    def debug(self, message: RenderableType) -> None:
        if self.verbose:
            self.console.print(message, style="dim")

    def warn(self, message: str) -> None:
        self.err.print(f"[yellow]warning:[/] {message}", highlight=False)

    def report(self, report: dict[str, Any], renderable: RenderableType | None = None, path: Path | None = None) -> None:
        """Show the final report (rich for people, JSON with --json) and save it as `path` (report.json)."""
        if path is not None:
            atomic.write_json(path, report)
        if renderable is not None:
            self.report_console.print(renderable)
        if self.json_mode:
            sys.stdout.write(json.dumps(report, indent=2, default=str) + "\n")
            sys.stdout.flush()


@contextlib.contextmanager
def byte_progress(output: Output, what: str, *, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A transient bar over bytes read, for long reads (e.g. verifying shards): call `advance(n, total)`."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    with Progress(TextColumn(what), BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=output.console,
                  transient=True, disable=output.quiet or not enabled) as progress:
        task = progress.add_task(what, total=None)

        def advance(n: int, total: int) -> None:
            progress.update(task, advance=n, total=total)

        yield advance


def summary_table(title: str, rows: dict[str, Any]) -> Table:
    """The one key/value report table: floats to 4 significant digits, None as "—"."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows.items():
        table.add_row(key, "—" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value))
    return table


def sources_table(kind: str, sources: dict[str, str], values: dict[str, Any]) -> Table:
    """`--verbose`: every setting of a budget, its value and where it came from (preset/file, flag, default)."""
    table = Table("setting", "value", "from", title=f"{kind} budget", title_justify="left")
    for field, source in sources.items():
        table.add_row(field, json.dumps(values.get(field), default=str), source)
    return table
