import pytest

from cramcli.budgets import ScheduleBudget
from cramcli.train.clock import BudgetClock
from cramcli.train.schedules import batch_size_at, lr_factor


@pytest.mark.parametrize("x", [0.0, 0.1, 0.5, 0.75, 0.9, 1.0])
def test_triangle2(x):
    assert lr_factor(ScheduleBudget(name="budget-triangle2"), x) == pytest.approx(min(0.25 + x, 4 * (1 - x)))


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


def test_clock_offset_and_step_budget():
    clock = BudgetClock(100.0, offset=40.0)
    assert clock.elapsed() == 40.0 and clock.fraction(0) == pytest.approx(0.4)
    clock.start()
    assert 40.0 <= clock.elapsed() < 41.0 and not clock.out_of_time()
    assert BudgetClock(100.0, offset=10.0, max_steps=200).fraction(50) == 0.25
    assert BudgetClock(100.0, offset=100.0).out_of_time()
