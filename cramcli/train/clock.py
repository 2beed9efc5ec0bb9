"""The budget clock: training wall-clock seconds, carried over a resume; or a step budget when max_steps is set."""

from __future__ import annotations

import time


class BudgetClock:
    """Counts training time only (setup is excluded: start() is called at the loop). `offset` is what earlier
    sessions of the same run spent, so the schedule continues where it stopped after `--resume`.

    With `max_steps` the run is in "step budget" mode: the fraction is micro_steps / max_steps (deterministic,
    which makes a resume bitwise-exact); the time budget still stops training if it runs out first."""

    def __init__(self, budget_seconds: float, offset: float = 0.0, max_steps: int | None = None) -> None:
        self.budget_seconds = budget_seconds
        self.offset = offset
        self.max_steps = max_steps
        self._start: float | None = None

    def start(self) -> None:
        self._start = time.perf_counter()

    def elapsed(self) -> float:
        return self.offset + (0.0 if self._start is None else time.perf_counter() - self._start)

    def fraction(self, micro_steps: int, elapsed: float | None = None) -> float:
        """Share of the budget spent; `elapsed` lets all DDP ranks use rank 0's clock."""
        if self.max_steps is not None:
            return min(micro_steps / self.max_steps, 1.0)
        return min((self.elapsed() if elapsed is None else elapsed) / self.budget_seconds, 1.0)

    def out_of_time(self) -> bool:
        return self.elapsed() >= self.budget_seconds
