"""Every reason a training run stops, in one place: a signal, the micro-step or token cap, or the time budget."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

from cramcli.budgets import TrainBudget


class StopConditions:
    """`should_stop` is asked at optimizer-step boundaries, so the state saved on stopping is exact; `out_of_time`
    also between micro-batches (one process), where stopping drops the partial accumulation."""

    def __init__(self, budget: TrainBudget) -> None:
        self.budget = budget
        self.budget_seconds = budget.hours * 3600
        self.signal: str | None = None

    def should_stop(self, *, micro_steps: int, tokens: int, elapsed: float, signalled: bool = False) -> str:
        """The stop reason, or "" to go on. `signalled` is another rank's signal under DDP."""
        b = self.budget
        if self.signal is not None or signalled:
            return f"signal ({self.signal or 'another rank'})"
        if b.max_steps is not None and micro_steps >= b.max_steps:
            return f"max_steps ({b.max_steps})"
        if b.max_tokens is not None and tokens >= b.max_tokens:
            return f"max_tokens ({b.max_tokens})"
        return self.out_of_time(elapsed)

    def out_of_time(self, elapsed: float) -> str:
        """The time budget's stop reason, or "": the one test that may also be asked between micro-batches."""
        return f"time budget ({self.budget.hours:g} h)" if elapsed >= self.budget_seconds else ""

    @contextlib.contextmanager
    def catching_signals(self) -> Iterator[None]:
        """Ctrl-C and SIGTERM (a scheduler's pre-emption) ask for a clean stop instead of killing the run."""

        def handler(signum: int, frame: FrameType | None) -> None:
            self.signal = signal.Signals(signum).name

        saved = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave the default
                saved[sig] = signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, old in saved.items():
                signal.signal(sig, old)
