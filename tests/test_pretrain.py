"""`cram pretrain` end to end on a tiny model and a learnable synthetic corpus (CPU, seconds)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cramcli.stages import pretrain
from cramcli.train.trainer import Trainer
from cramcli.utils.console import Output
from cramcli.utils.errors import UsageError

sys.path.insert(0, str(Path(__file__).parent))
from pretrain_helpers import write_budgets, write_prepared  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp: Path, out: str, **flags) -> dict:
    pretrain.run(Output(quiet=True), budget=str(tmp / "train.json"), arch=str(tmp / "arch.json"),
                 data=tmp / "data", out=tmp / out, device="cpu", **flags)
    return json.loads((tmp / out / "report.json").read_text())


def _weights(run: Path) -> dict[str, torch.Tensor]:
    last = sorted((run / "checkpoints").glob("step_*"))[-1]
    return torch.load(last / "state.pt", weights_only=False)["model"]["weights"]


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    write_prepared(tmp_path / "data")
    return tmp_path


def test_loss_falls_and_run_folder_is_complete(tmp):
    write_budgets(tmp, schedule={"name": "budget-one-cycle"}, batch_size=8, schedule_clock="steps")
    report = _run(tmp, "run", max_steps=150)
    assert report["stop_reason"] == "max_steps (150)" and report["micro_steps"] == 150
    assert report["final_loss"] < 0.75 * report["first_loss"]
    run = tmp / "run"
    for name in ("final", "metrics.jsonl", "report.json", "training.png", "run-config.json"):
        assert (run / name).exists(), name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # step-keyed clock: the LR follows one-cycle over micro_steps / max_steps, set at the start of each batch
    for row in rows:
        x = (row["step"] - 1) / 150
        assert row["lr"] == pytest.approx(1e-2 * (2 * x if x < 0.5 else 2 - 2 * x))
    assert (run / "training.png").read_bytes().startswith(b"\x89PNG")
    from cramcli.model.checkpoint import load_pretrained

    assert load_pretrained(run) is not None
    with pytest.raises(UsageError, match="already exists"):
        _run(tmp, "run", max_steps=4)


def test_resume_is_bitwise_exact(tmp):
    write_budgets(tmp, schedule={"name": "constant"}, batch_ramp=4, schedule_clock="steps", max_steps=12)
    _run(tmp, "full", max_steps=12)
    _run(tmp, "split", max_steps=6)
    report = _run(tmp, "split", max_steps=12, resume=True)
    assert report["micro_steps"] == 12
    full, split = _weights(tmp / "full"), _weights(tmp / "split")
    assert all(torch.equal(full[k], split[k]) for k in full)


def test_resume_refuses_other_config_and_falls_back_on_corrupt(tmp, capsys):
    write_budgets(tmp, schedule={"name": "constant"}, keep_checkpoints=2)
    _run(tmp, "run", max_steps=4)
    _run(tmp, "run", max_steps=6, resume=True)
    newest = sorted((tmp / "run" / "checkpoints").glob("step_*"))[-1]
    (newest / "state.pt").write_bytes(b"garbage")
    report = _run(tmp, "run", max_steps=8, resume=True)
    assert report["micro_steps"] == 8
    write_budgets(tmp, schedule={"name": "constant"}, batch_size=32)
    with pytest.raises(UsageError, match="another budget"):
        _run(tmp, "run", max_steps=10, resume=True)


def test_resume_refuses_a_changed_schedule_clock(tmp):
    write_budgets(tmp, schedule={"name": "constant"}, schedule_clock="steps", max_steps=4)
    _run(tmp, "run", max_steps=4)
    write_budgets(tmp, schedule={"name": "constant"}, schedule_clock="time")
    with pytest.raises(UsageError, match="schedule followed steps; this budget's schedule_clock is 'time'"):
        _run(tmp, "run", max_steps=8, resume=True)


def test_data_checks(tmp):
    write_budgets(tmp)
    arch = json.loads((tmp / "arch.json").read_text())
    (tmp / "arch.json").write_text(json.dumps(arch | {"max_seq_length": 16}))
    with pytest.raises(UsageError, match="seq_length 32 exceeds"):
        _run(tmp, "run", max_steps=2)
    write_budgets(tmp, batch_size=512, micro_batch_size=512)
    with pytest.raises(UsageError, match="cannot fill one micro-batch"):
        _run(tmp, "run", max_steps=2)


def _cli(tmp: Path, out: str, *extra: str) -> list[str]:
    return ["--budget", str(tmp / "train.json"), "--arch", str(tmp / "arch.json"), "--data", str(tmp / "data"),
            "--out", str(tmp / out), "--device", "cpu", "--quiet", *extra]


def test_sigterm_leaves_resumable_checkpoint(tmp):
    write_budgets(tmp, schedule={"name": "constant"})
    proc = subprocess.Popen([sys.executable, "-m", "cramcli", "pretrain", *_cli(tmp, "run", "--max-steps", "100000")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    metrics = tmp / "run" / "metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (metrics.exists() and metrics.stat().st_size > 0):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    report = json.loads((tmp / "run" / "report.json").read_text())
    assert report["stop_reason"].startswith("signal (SIGTERM)")
    assert (tmp / "run" / "final").is_dir()
    steps = report["micro_steps"]
    resumed = _run(tmp, "run", max_steps=steps + 4, resume=True)
    assert resumed["micro_steps"] == steps + 4


def test_ddp_gloo_matches_single_process(tmp):
    # exact masking: equal predicted tokens per row, so the mean of per-rank means is the global mean
    write_budgets(tmp, schedule={"name": "constant"}, batch_size=16, micro_batch_size=8,
                  masking={"scheme": "exact", "rate": 0.25})
    _run(tmp, "single", max_steps=6)
    write_budgets(tmp, schedule={"name": "constant"}, batch_size=16, micro_batch_size=4,
                  masking={"scheme": "exact", "rate": 0.25})
    # max_steps counts micro-batches of micro_batch_size: 12 of 4 sequences = the single run's 6 of 8
    _torchrun(tmp, "ddp", "--max-steps", "12", "--peak-tflops", "2.5")
    single, ddp = _weights(tmp / "single"), _weights(tmp / "ddp")
    for key in single:
        torch.testing.assert_close(single[key], ddp[key], rtol=1e-4, atol=1e-5)
    # Throughput under DDP counts both ranks: 2 ranks × 4 rows × 32 tokens a micro-step, counted by hand, and each
    # row's tokens/s is the tokens both ranks trained since the previous row over the time between them (one
    # rank's count would be half). MFU divides by both devices' peak (2 × 2.5 TFLOP/s).
    from cramcli import budgets
    from cramcli.utils.flops import arch_flops_per_token

    rows = [json.loads(line) for line in (tmp / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) >= 3 and [r["tokens"] for r in rows] == [r["step"] * 2 * 4 * 32 for r in rows]
    assert json.loads((tmp / "ddp" / "report.json").read_text())["tokens"] == 6 * 2 * 4 * 32
    for before, row in zip(rows, rows[1:], strict=False):
        measured = (row["tokens"] - before["tokens"]) / (row["elapsed_s"] - before["elapsed_s"])
        assert 0.75 < row["tokens_per_s"] / measured < 1.33, (row, before)
    flops = arch_flops_per_token(budgets.load("arch", tmp / "arch.json"), 32, 0.25)
    assert all(r["mfu"] == pytest.approx(r["tokens_per_s"] * flops / (2 * 2.5e12)) for r in rows)


def _torchrun(tmp: Path, out: str, *flags: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "cramcli", "pretrain", *_cli(tmp, out, *flags)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr.decode()[-2000:]


def test_ddp_step_cap_and_v1_ramp_count_sequences_not_global_micro_steps(tmp):
    """Two processes of micro-batch 4 against one: `max_steps` 24 and the v1 ramp over 8 micro-steps mean 96 and
    32 sequences on any number of processes (counted in global micro-steps, two processes would train twice as
    many sequences and ramp twice as long)."""
    from pretrain_helpers import SEQ

    write_budgets(tmp, schedule={"name": "constant"}, batch_size=16, micro_batch_size=4, batch_ramp=8,
                  log_every_steps=1)
    _run(tmp, "single", max_steps=24)
    _torchrun(tmp, "ddp", "--max-steps", "24")
    for run, world in (("single", 1), ("ddp", 2)):
        report = json.loads((tmp / run / "report.json").read_text())
        rows = [json.loads(line) for line in (tmp / run / "metrics.jsonl").read_text().splitlines()]
        assert report["world_size"] == world and report["micro_steps"] == rows[-1]["step"]
        sequences = report["tokens"] // SEQ
        # the cap is checked at optimizer-step boundaries: the first one at or after 24 × 4 sequences
        assert sequences >= 96 > sequences - rows[-1]["batch_size"], run
        # the ramp reaches the full batch once ramp × micro_batch_size = 32 sequences are (about to be) seen
        first_full = next(r for r in rows if r["batch_size"] == 16)
        assert 32 - 16 <= first_full["tokens"] // SEQ - 16 <= 32, run


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp, monkeypatch):
    write_budgets(tmp, schedule={"name": "constant"}, checkpoint_every_minutes=1e-6)
    original = Trainer._micro_step

    def poisoned(self, **kwargs):
        loss = original(self, **kwargs)
        return loss * float("nan") if self.progress.micro_steps >= 4 else loss

    monkeypatch.setattr(Trainer, "_micro_step", poisoned)
    with pytest.raises(pretrain.RunError, match="loss became nan"):
        _run(tmp, "run", max_steps=20)
    assert sorted((tmp / "run" / "checkpoints").glob("step_*"))[-1].name == "step_00000004"
