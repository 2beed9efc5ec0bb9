"""Rich progress bars, one per pipeline phase, on the command's console."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class PhaseBars:
    """`bars(phase, total)` closes the previous phase's bar and returns `advance(n)` for a new one.
    A phase with an unknown total (a stream) shows a count and a spinner."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<24}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task: TaskID | None = None

    def __call__(self, phase: str, total: int | None) -> Callable[[int], None]:
        self._close()
        task = self.task = self.progress.add_task(phase, total=total)
        return lambda n: self.progress.advance(task, n)

    def _close(self) -> None:
        if self.task is not None:
            done = self.progress.tasks[-1].completed
            self.progress.update(self.task, total=done, completed=done)

    def __enter__(self) -> PhaseBars:
        self.progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self._close()
        self.progress.stop()
