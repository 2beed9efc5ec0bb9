"""The schedule clock: how far through its budget a run is, for the LR schedule and a fractional batch ramp.

`time` mode (the recipe, and the default): the share of the training hours spent, carried over a resume. The
clock starts at the training loop, once model and optimizer exist (the original's started at optimizer
construction, a moment earlier); torch.compile compiles inside the first steps, so compile time counts
against the budget, as it did in the original. `steps` mode: the share of `max_steps` done — deterministic, so a resumed run is
bitwise identical to an uninterrupted one. Held-out evaluation runs inside `paused()`, so it is charged to neither
the schedule nor the time budget. Stop caps (`max_steps`, `max_tokens`, the hours) are not the clock's
business: they live in `train/stopping.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class ScheduleClock:
    def __init__(self, budget_seconds: float, mode: str = "time", max_steps: int | None = None,
                 now: Callable[[], float] = time.perf_counter) -> None:
        if mode == "steps" and not max_steps:
            raise ValueError("a step-keyed schedule clock needs max_steps")
        self.budget_seconds = budget_seconds
        self.mode = mode
        self.max_steps = max_steps
        self.offset = 0.0
        self._now = now
        self._start: float | None = None

    def start(self) -> None:
        self._start = self._now()

    def elapsed(self) -> float:
        """Training seconds of this run: earlier sessions' (the offset) plus this one's."""
        return self.offset + (0.0 if self._start is None else self._now() - self._start)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """The time spent inside does not count as training time."""
        begin = self._now()
        try:
            yield
        finally:
            if self._start is not None:
                self._start += self._now() - begin

    def fraction(self, micro_steps: int, elapsed: float | None = None) -> float:
        """Share of the budget spent, in [0, 1]; `elapsed` lets every DDP rank use rank 0's clock."""
        if self.mode == "steps":
            assert self.max_steps is not None
            return min(micro_steps / self.max_steps, 1.0)
        return min((self.elapsed() if elapsed is None else elapsed) / self.budget_seconds, 1.0)

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self.elapsed(), "mode": self.mode}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mode = state.get("mode", "steps" if state.get("max_steps") else "time")
        if mode != self.mode:
            raise ValueError(f"the run's schedule followed {mode}; this budget's schedule_clock is {self.mode!r}. "
                             f"Resume with schedule_clock {mode!r}, or start a new run")
        self.offset = float(state["elapsed"])
