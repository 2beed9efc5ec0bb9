import pytest

from cramcli import budgets
from cramcli.budgets import ScheduleBudget
from cramcli.train.clock import ScheduleClock
from cramcli.train.schedules import batch_size_at, lr_factor
from cramcli.train.stopping import StopConditions
from cramcli.utils.errors import UsageError


# recipe §2.2, by hand for the 24-hour run at peak LR 1e-3: 2.5e-4 at the start, rising linearly to the peak
# at hour 18, falling linearly to 0 at hour 24.
@pytest.mark.parametrize(("hour", "lr"), [(0, 2.5e-4), (3, 3.75e-4), (6, 5e-4), (12, 7.5e-4), (18, 1e-3),
                                          (19.5, 7.5e-4), (21, 5e-4), (22.8, 2e-4), (24, 0.0)])
def test_triangle2(hour, lr):
    assert 1e-3 * lr_factor(ScheduleBudget(name="budget-triangle2"), hour / 24) == pytest.approx(lr, abs=1e-12)


def test_triangle2_is_the_piecewise_linear_triangle():
    """Between the recipe's three landmarks (0, 0.25), (0.75, 1), (1, 0) the factor is the straight line."""
    import numpy as np

    xs = np.linspace(0.0, 1.0, 401)
    want = np.interp(xs, [0.0, 0.75, 1.0], [0.25, 1.0, 0.0])
    got = [lr_factor(ScheduleBudget(name="budget-triangle2"), float(x)) for x in xs]
    assert got == pytest.approx(want.tolist(), abs=1e-12)


def test_triangle2_landmarks():
    s = ScheduleBudget(name="budget-triangle2")
    assert lr_factor(s, 0.0) == 0.25 and lr_factor(s, 0.75) == 1.0 and lr_factor(s, 1.0) == 0.0


@pytest.mark.parametrize(("x", "want"), [(0.0, 0.0), (0.25, 0.5), (0.5, 1.0), (0.75, 0.5), (1.0, 0.0)])
def test_one_cycle(x, want):
    assert lr_factor(ScheduleBudget(name="budget-one-cycle"), x) == pytest.approx(want)


def test_cosine_with_warmup():
    s = ScheduleBudget(name="budget-cosine", warmup=0.1)
    assert lr_factor(s, 0.05) == pytest.approx(0.5)
    assert lr_factor(s, 0.1) == pytest.approx(1.0)
    assert lr_factor(s, 0.55) == pytest.approx(0.5)
    assert lr_factor(s, 1.0) == pytest.approx(0.0, abs=1e-12)


def test_wsd_and_constant():
    s = ScheduleBudget(name="budget-wsd", warmup=0.1, cooldown=0.2)
    assert [lr_factor(s, x) for x in (0.05, 0.5, 0.9, 1.0)] == pytest.approx([0.5, 1.0, 0.5, 0.0])
    assert lr_factor(ScheduleBudget(name="constant"), 0.3) == 1.0


def test_v1_step_ramp_matches_recipe():
    kw = {"batch_size": 4096, "micro_batch_size": 128, "ramp": 300_000, "x": 0.0}
    assert batch_size_at(micro_steps=0, **kw) == 128
    assert batch_size_at(micro_steps=9_374, **kw) == 128
    assert batch_size_at(micro_steps=9_375, **kw) == 256  # +128 every 9,375 micro-steps
    assert batch_size_at(micro_steps=290_624, **kw) == 3968
    assert batch_size_at(micro_steps=290_625, **kw) == 4096
    assert batch_size_at(micro_steps=400_000, **kw) == 4096


def test_v2_time_ramp_and_none():
    kw = {"batch_size": 8192, "micro_batch_size": 128, "ramp": 0.6, "micro_steps": 0}
    assert batch_size_at(x=0.0, **kw) == 128
    assert batch_size_at(x=0.3, **kw) == (int(0.3 * 8192 / 0.6 / 128) + 1) * 128
    assert batch_size_at(x=0.6, **kw) == 8192 and batch_size_at(x=0.9, **kw) == 8192
    assert batch_size_at(x=0.0, batch_size=64, micro_batch_size=32, ramp=0, micro_steps=0) == 64


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_clock_offset_and_step_mode():
    fake = FakeTime()
    clock = ScheduleClock(100.0, now=fake)
    clock.load_state_dict({"elapsed": 40.0, "mode": "time"})
    assert clock.elapsed() == 40.0 and clock.fraction(0) == pytest.approx(0.4)
    clock.start()
    fake.now += 10
    assert clock.elapsed() == 50.0 and clock.state_dict() == {"elapsed": 50.0, "mode": "time", "budget_seconds": 100.0,
                                                              "anchor": [0.0, 0.0]}
    assert ScheduleClock(100.0, "steps", max_steps=200).fraction(50) == 0.25
    with pytest.raises(ValueError, match="needs max_steps"):
        ScheduleClock(100.0, "steps")


def test_resume_cannot_change_the_clock_mode():
    with pytest.raises(ValueError, match="schedule followed steps.*'time'"):
        ScheduleClock(100.0, "time").load_state_dict({"elapsed": 5.0, "mode": "steps"})


def test_v2_schedule_follows_time_and_max_steps_only_stops():
    """The v2 preset at half its 24 hours and a tenth of its 900,000-step cap: LR and batch are the time-keyed
    values; the run stops at the cap or the time, whichever comes first."""
    v2 = budgets.load("train", "v2")
    assert v2.schedule_clock == "time" and v2.max_steps == 900_000
    assert budgets.load("train", "24").schedule_clock == "time" and budgets.load("train", "24").max_steps == 600_000
    fake = FakeTime()
    clock = ScheduleClock(v2.hours * 3600, v2.schedule_clock, v2.max_steps, now=fake)
    stops = StopConditions(v2)
    clock.start()
    fake.now += 12 * 3600
    steps = 90_000
    x = clock.fraction(steps)
    assert x == pytest.approx(0.5)  # a step-keyed clock would say 0.1
    assert lr_factor(v2.schedule, x) == pytest.approx(0.75)  # triangle2: 0.25 + x
    batch = batch_size_at(micro_steps=steps, x=x, batch_size=v2.batch_size, micro_batch_size=v2.micro_batch_size,
                          ramp=v2.batch_ramp)
    assert batch == (int(0.5 * 8192 / 0.6 / 128) + 1) * 128
    assert stops.should_stop(micro_steps=steps, tokens=0, elapsed=clock.elapsed()) == ""
    assert stops.should_stop(micro_steps=900_000, tokens=0, elapsed=clock.elapsed()) == "max_steps (900000)"
    fake.now += 12 * 3600
    assert clock.fraction(steps) == 1.0 and lr_factor(v2.schedule, 1.0) == 0.0  # cooled down at the end
    assert stops.should_stop(micro_steps=steps, tokens=0, elapsed=clock.elapsed()) == "time budget (24 h)"


def test_steps_mode_needs_max_steps_in_the_budget():
    with pytest.raises(UsageError, match="schedule_clock 'steps' needs max_steps"):
        budgets.parse("train", "t.json", {"schedule_clock": "steps"})
