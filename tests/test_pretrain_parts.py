"""Checkpoint states, metrics and the training chart, without a model."""

from __future__ import annotations

import errno
import random

import numpy as np
import pytest
import torch

from cramcli.train import checkpointing
from cramcli.train.metrics import MetricsLog
from cramcli.utils.errors import RunError
from cramcli.utils.plots import training_png


def test_keep_last_k_and_fallback(tmp_path):
    for step in (2, 4, 6):
        checkpointing.save_state(tmp_path, step, {"step": step}, keep=2)
    assert [p.name for p in checkpointing.list_states(tmp_path)] == ["step_00000004", "step_00000006"]
    (tmp_path / "checkpoints" / "step_00000006" / "state.pt").write_bytes(b"truncated")
    warnings: list[str] = []
    path, state = checkpointing.load_latest(tmp_path, warn=warnings.append)
    assert state == {"step": 4} and path.name == "step_00000004"
    assert "skipped" in warnings[0] and "truncated" in warnings[0] and "step_00000006" in warnings[0]


def test_disk_full_keeps_previous_state(tmp_path, monkeypatch):
    checkpointing.save_state(tmp_path, 2, {"step": 2}, keep=1)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(RunError, match=r"step_00000004/state.pt: cannot write: no space left on the device; .*"
                                       r"checkpoint step_00000002 is intact; free space and run with --resume"):
        checkpointing.save_state(tmp_path, 4, {"step": 4}, keep=1)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000002"]
    assert checkpointing.load_latest(tmp_path)[1] == {"step": 2}


def test_rng_roundtrip():
    state = checkpointing.rng_state()
    a = (torch.rand(3), np.random.rand(), random.random())
    checkpointing.set_rng_state(state)
    b = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


@pytest.mark.parametrize("preset", ["24", "v2"])
def test_optimizer_groups_of_the_real_model_follow_the_shipped_budgets(preset):
    """Recipe: `24` (c5) excludes only biases — its norms are norm1/norm2/final_norm, so "LayerNorm.weight"
    matches nothing and norm gains, embeddings and the sinusoid scale are decayed; `v2` adds "norm"."""
    from cramcli import budgets
    from cramcli.model import CrammedBertConfig, CrammedBertForMaskedLM
    from cramcli.train.optim import make_optimizers

    train = budgets.load("train", preset)
    with torch.device("meta"):
        model = CrammedBertForMaskedLM(CrammedBertConfig.from_arch(budgets.load("arch", preset)))
    [adamw] = make_optimizers(model, train.optimizer)  # the recipe: one AdamW for everything
    groups = adamw.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    decayed, plain = ({names[id(p)] for p in g["params"]} for g in groups)
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0] and decayed | plain == set(names.values())
    norms = {n for n in names.values() if "norm" in n}
    assert len(norms) == 2 * (2 * 16 + 2)  # weight and bias of: 2 per layer × 16 layers, embedding, final
    if preset == "24":
        assert plain == {n for n in norms if n.endswith(".bias")}
    else:
        assert plain == norms
    assert "encoder.embedding.word_embedding.weight" in decayed  # the tied decoder: decayed once, as one tensor
    assert "encoder.embedding.pos_embedding.scale_factor" in decayed
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in model.parameters())


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
