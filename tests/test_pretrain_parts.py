"""Checkpoint states, metrics and the training chart, without a model."""

from __future__ import annotations

import errno
import random

import numpy as np
import pytest
import torch

from cramcli.train import checkpointing
from cramcli.train.metrics import MetricsLog
from cramcli.train.optim import param_groups
from cramcli.utils.plots import training_png


def test_keep_last_k_and_fallback(tmp_path):
    for step in (2, 4, 6):
        checkpointing.save_state(tmp_path, step, {"step": step}, keep=2)
    assert [p.name for p in checkpointing.list_states(tmp_path)] == ["step_00000004", "step_00000006"]
    (tmp_path / "checkpoints" / "step_00000006" / "state.pt").write_bytes(b"truncated")
    warnings: list[str] = []
    path, state = checkpointing.load_latest(tmp_path, warn=warnings.append)
    assert state == {"step": 4} and path.name == "step_00000004"
    assert "unreadable" in warnings[0] and "step_00000006" in warnings[0]


def test_disk_full_keeps_previous_state(tmp_path, monkeypatch):
    checkpointing.save_state(tmp_path, 2, {"step": 2}, keep=1)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError):
        checkpointing.save_state(tmp_path, 4, {"step": 4}, keep=1)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000002"]
    assert checkpointing.load_latest(tmp_path)[1] == {"step": 2}


def test_rng_roundtrip():
    state = checkpointing.rng_state()
    a = (torch.rand(3), np.random.rand(), random.random())
    checkpointing.set_rng_state(state)
    b = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def test_param_groups_exclude_by_substring():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    decay, plain = param_groups(model, ["bias"], 0.01)
    assert len(decay["params"]) == 2 and len(plain["params"]) == 2 and plain["weight_decay"] == 0.0


def test_metrics_log_resume_and_chart(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in (1, 2, 3):
        log.log({"step": step, "loss": 5.0 - step})
    again = MetricsLog(tmp_path / "metrics.jsonl")
    again.truncate_after(2)
    assert [r["step"] for r in MetricsLog(tmp_path / "metrics.jsonl").rows] == [1, 2]
    png = training_png(again.rows)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png == training_png(again.rows)  # deterministic bytes


def test_plain_progress_lines_are_rate_limited(monkeypatch):
    import io

    from rich.console import Console

    from cramcli.train.dashboard import Dashboard

    buffer = io.StringIO()
    dash = Dashboard(Console(file=buffer, force_terminal=False, width=60))
    row = {"step": 10, "loss_ema": 2.5, "lr": 1e-3, "batch_size": 64, "tokens_per_s": 1234.0, "mfu": None,
           "fraction": 0.25, "elapsed_s": 75.0, "eta_s": 225.0}
    dash.update(row)
    dash.update({**row, "step": 20})  # within PLAIN_EVERY_S of the first: not printed
    monkeypatch.setattr(Dashboard, "PLAIN_EVERY_S", 0.0)
    dash.update({**row, "step": 30})
    lines = buffer.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["10", "30"]  # one line each, however narrow the console
    assert "loss 2.5000" in lines[0] and "budget 25.0%" in lines[0] and "eta 0:03:45" in lines[0]
