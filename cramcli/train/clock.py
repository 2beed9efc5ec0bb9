"""The schedule clock: how far through its budget a run is, for the LR schedule and a fractional batch ramp.

`time` mode (the recipe, and the default): the share of the training hours spent, carried over a resume. The
clock starts at the training loop, once model and optimizer exist (the original's started at optimizer
construction, a moment earlier); torch.compile compiles inside the first steps, so compile time counts
against the budget, as it did in the original. `steps` mode: the share of `max_steps` done — deterministic, so a resumed run is
bitwise identical to an uninterrupted one. Held-out evaluation runs inside `paused()`, so it is charged to neither
the schedule nor the time budget. Stop caps (`max_steps`, `max_tokens`, the hours) are not the clock's
business: they live in `train/stopping.py`.

A resume under other `--hours` (time mode) extends or shortens the schedule from where it is: the fraction
reached at the checkpoint stays, and the rest of the schedule is spread over the time that remains of the new
total (an anchor kept in the state; extensions chain). So the LR and batch ramp continue without a jump,
instead of being rescaled to spent/new-total. In `steps` mode the hours are only a stop cap.
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
        self.anchor: tuple[float, float] = (0.0, 0.0)
        """(elapsed, fraction) the time schedule runs on from, to 1 at budget_seconds; moved by a resume that
        changes the hours."""
        self.rescaled: str | None = None
        """What a resume under other hours did to the schedule, for the person at the terminal."""

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
        return _time_fraction(self.elapsed() if elapsed is None else elapsed, self.budget_seconds, self.anchor)

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self.elapsed(), "mode": self.mode, "budget_seconds": self.budget_seconds,
                "anchor": list(self.anchor)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mode = state.get("mode", "steps" if state.get("max_steps") else "time")
        if mode != self.mode:
            raise ValueError(f"the run's schedule followed {mode}; this budget's schedule_clock is {self.mode!r}. "
                             f"Resume with schedule_clock {mode!r}, or start a new run")
        self.offset = spent = float(state["elapsed"])
        # States before the anchor was kept: the schedule ran over the hours of this resume.
        planned = float(state.get("budget_seconds", self.budget_seconds))
        anchor = state.get("anchor") or (0.0, 0.0)
        self.anchor = (float(anchor[0]), float(anchor[1]))
        if mode == "time" and abs(planned - self.budget_seconds) > 1e-6:
            done = _time_fraction(spent, planned, self.anchor)
            self.anchor = (spent, done)
            self.rescaled = (f"the schedule was laid over {planned / 3600:g} h and is {done:.1%} done; the rest now "
                             f"runs over the {max(self.budget_seconds - spent, 0) / 3600:.3g} h left of "
                             f"{self.budget_seconds / 3600:g} h")


def _time_fraction(elapsed: float, budget_seconds: float, anchor: tuple[float, float]) -> float:
    """The schedule's fraction at `elapsed`: from `anchor` (elapsed, fraction) linearly to 1 at the budget."""
    start, done = anchor
    span = budget_seconds - start
    if span <= 0:
        return 1.0
    return min(done + (1.0 - done) * (elapsed - start) / span, 1.0)
