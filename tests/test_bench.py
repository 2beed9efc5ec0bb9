"""`cram bench` on a tiny arch (CPU, seconds), and torch.compile giving the same loss as eager."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from cramcli import budgets
from cramcli.cli import app
from cramcli.model import CrammedBertConfig, CrammedBertForMaskedLM
from cramcli.train import throughput
from cramcli.train.masking import mask_tokens, static_prediction_rate

TINY = ["--layers", "1", "--hidden", "32", "--heads", "2", "--intermediate", "64", "--vocab", "128"]


def _tiny_arch() -> budgets.ArchBudget:
    return budgets.ArchBudget.model_validate({**budgets.load("arch", "demo").model_dump(), "num_layers": 1,
                                              "hidden_size": 32, "num_heads": 2, "intermediate_size": 64,
                                              "vocab_size": 128, "max_seq_length": 16})


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(throughput, "MIN_SECONDS", 0.05)


def test_json_names_the_measured_arch(fast: None, tmp_path) -> None:
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(app, ["bench", "--budget", "demo", "--device", "cpu", "--threads", "1", "--micro-batch",
                                   "4", *TINY, "--json", "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report == json.loads(out.read_text())
    seq = budgets.load("arch", "demo").max_seq_length
    assert report["arch"] == {"layout": "v1", "hidden": 32, "layers": 1, "heads": 2, "intermediate": 64,
                              "vocab": 128, "seq_len": seq}
    assert report["threads"] == 1 and report["device"] == "cpu" and report["micro_batch"] == 4
    (row,) = report["measurements"]
    assert row["steps"] >= throughput.MIN_STEPS and row["tokens_per_s"] > 0 and row["peak_memory_mb"] > 0
    assert report["mfu"] is None  # no known peak on a CPU
    assert report["projected_tokens"] == pytest.approx(row["tokens_per_s"] * report["budget_hours"] * 3600)
    assert report["pretrain_hint"].startswith("cram pretrain --budget demo --micro-batch-size ")


def test_tokens_per_s_matches_the_steps_timed_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each forward sleeps 50 ms and is timed here: the report must count the tokens each measured step fed
    the model, over the measured steps only (not the warm-up), per second of those steps."""
    import time

    monkeypatch.setattr(throughput, "MIN_SECONDS", 0.5)
    calls: list[tuple[float, float, int]] = []
    forward = CrammedBertForMaskedLM.forward

    def slow_forward(self, input_ids, *args, **kwargs):
        start = time.perf_counter()
        time.sleep(0.05)
        out = forward(self, input_ids, *args, **kwargs)
        calls.append((start, time.perf_counter(), input_ids.numel()))
        return out

    monkeypatch.setattr(CrammedBertForMaskedLM, "forward", slow_forward)
    res = CliRunner().invoke(app, ["bench", "--budget", "demo", "--device", "cpu", "--threads", "1", "--micro-batch",
                                   "4", *TINY, "--json"])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)["measurements"]
    seq = budgets.load("arch", "demo").max_seq_length
    measured = calls[-row["steps"]:]
    assert len(calls) > row["steps"] >= 5 and all(tokens == 4 * seq for *_, tokens in calls)
    step_s = (measured[-1][1] - measured[0][0]) / len(measured)  # the last backward is not in this span
    assert row["step_s"] == pytest.approx(step_s, rel=0.1) and row["step_s"] > 0.05
    assert row["tokens_per_s"] == pytest.approx(4 * seq / step_s, rel=0.1)


def test_peak_override_gives_mfu_and_cpu_picks_one_size(fast: None) -> None:
    res = CliRunner().invoke(app, ["bench", "--budget", "demo", "--device", "cpu", *TINY, "--peak-tflops", "1",
                                   "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert len(report["measurements"]) == 1
    expected = report["tokens_per_s"] * report["flops_per_token"] / 1e12
    assert report["mfu"] == pytest.approx(expected)


@pytest.mark.parametrize("flags, names", [
    (["--heads", "3", "--hidden", "32"], "--heads 3"),
    (["--micro-batch", "0"], "--micro-batch 0"),
    (["--threads", "-1"], "--threads -1"),
])
def test_bad_flags_give_one_line_errors(flags: list[str], names: str) -> None:
    res = CliRunner().invoke(app, ["bench", "--budget", "demo", "--device", "cpu", *flags])
    assert res.exit_code == 2
    assert names in res.output and "Traceback" not in res.output


def test_gpu_sizes_double_and_cpu_uses_about_2k_tokens() -> None:
    assert throughput.candidate_sizes(torch.device("cuda"), 128, 128)[:3] == [8, 16, 32]
    assert throughput.candidate_sizes(torch.device("cpu"), 128, 128) == [16]
    assert throughput.candidate_sizes(torch.device("cpu"), 64, 8) == [8]


def test_static_rate_leaves_headroom_for_bernoulli_only() -> None:
    train = budgets.load("train", "demo")
    v2 = budgets.load("train", "v2")
    assert static_prediction_rate(v2.masking, 4096) == v2.masking.rate
    assert train.masking.rate < static_prediction_rate(train.masking, 4096) < train.masking.rate + 0.03


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="inductor needs a C compiler")
def test_compiled_model_gives_the_eager_loss() -> None:
    torch.manual_seed(0)
    arch = _tiny_arch()
    masking = budgets.load("train", "demo").masking
    config = CrammedBertConfig.from_arch(arch, sparse_prediction="static",
                                         sparse_rate=static_prediction_rate(masking, 8 * 16))
    model = CrammedBertForMaskedLM(config).eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(7, 128, (8, 16), generator=gen)
    inputs, labels = mask_tokens(ids, masking, mask_id=6, vocab_size=128, special_ids=tuple(range(7)), generator=gen)
    eager = model(inputs, labels=labels).loss
    eager.backward()
    eager_grad = model.encoder.embedding.word_embedding.weight.grad.clone()
    model.zero_grad()
    compiled = torch.compile(model)(inputs, labels=labels).loss
    compiled.backward()
    assert compiled.item() == pytest.approx(eager.item(), rel=1e-5)
    torch.testing.assert_close(model.encoder.embedding.word_embedding.weight.grad, eager_grad, rtol=1e-4, atol=1e-6)
    # and the same loss as dynamic sparse prediction, which decodes exactly the masked rows
    dynamic = CrammedBertForMaskedLM(CrammedBertConfig.from_arch(arch)).eval()
    dynamic.load_state_dict(model.state_dict())
    assert dynamic(inputs, labels=labels).loss.item() == pytest.approx(eager.item(), rel=1e-5)


def _parity(precision: str) -> dict:
    """The parity check on a CPU-sized arch that keeps the 32768-word decoder (where fp16 gradients underflow)."""
    from bench.gpu_check import QUICK_ARCH
    from bench.parity import precision_parity

    arch = budgets.ArchBudget.model_validate({**budgets.load("arch", "24").model_dump(), **QUICK_ARCH})
    return precision_parity(arch, budgets.load("train", "24"), torch.device("cpu"), precision, steps=2, rows=64)


def test_parity_rows_are_text_not_uniform_ids() -> None:
    from bench.parity import text_rows

    rows = text_rows(16, 32, 32768)
    ids, counts = rows.unique(return_counts=True)
    assert rows.shape == (16, 32) and len(ids) < 300  # a few hundred words, not 512 draws from 32768
    assert counts.max() > 0.03 * rows.numel() and (rows == 5).any()  # frequent words; documents end in <sep>


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_precision_parity_passes_for_autocast_as_the_trainer_runs_it(precision: str) -> None:
    result = _parity(precision)
    assert result["fp32"]["grad_norm"] != result[precision]["grad_norm"]  # the low precision really ran
    assert result["ok"], result


def _bf16_layer_norm(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plant a fault: LayerNorm computed in bf16 under autocast (which keeps it in fp32), so the residual stream
    that starts at the embedding norm is bf16."""
    import torch.nn.functional as F

    layer_norm = F.layer_norm

    def bf16(x, shape, weight=None, bias=None, eps=1e-5):
        if not torch.is_autocast_enabled(x.device.type):
            return layer_norm(x, shape, weight, bias, eps)
        with torch.autocast(x.device.type, enabled=False):
            return layer_norm(x.bfloat16(), shape, weight.bfloat16(), bias.bfloat16(), eps)

    monkeypatch.setattr(F, "layer_norm", bf16)


def _no_loss_scaler(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plant a fault: fp16 without its loss scaler, so small gradients flush to zero."""
    init = torch.amp.GradScaler.__init__

    def disabled(self, device="cuda", *args, **kwargs):
        init(self, device, *args, **{**kwargs, "enabled": False})

    monkeypatch.setattr(torch.amp.GradScaler, "__init__", disabled)


def _drifting_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plant a fault: a low-precision path whose loss is 5 % off."""
    from cramcli.train import step

    forward_loss = step.forward_loss

    def drifting(model, inputs, labels, dtype):
        loss = forward_loss(model, inputs, labels, dtype)
        return loss * 1.05 if dtype is not None else loss

    monkeypatch.setattr(step, "forward_loss", drifting)


def test_gpu_check_options_part_trains_every_option_in_bf16_on_a_tiny_arch() -> None:
    from bench.gpu_check import QUICK_ARCH, host_syncs_per_step, with_options
    from bench.parity import precision_parity

    quick = budgets.ArchBudget.model_validate({**budgets.load("arch", "24").model_dump(), **QUICK_ARCH})
    arch, train = with_options(quick, budgets.load("train", "24"))
    assert arch.position_embedding == "rotary" and not arch.tie_decoder and train.optimizer.name == "muon"
    assert train.masking.final_rate == 0.4 and train.schedule.decay == "1-sqrt"
    result = precision_parity(arch, train, torch.device("cpu"), "bf16", steps=2, rows=64)
    assert result["fp32"] != result["bf16"] and result["ok"], result
    assert host_syncs_per_step(arch, train, torch.device("cpu")) is None  # counted on CUDA only


@pytest.mark.parametrize(("precision", "plant", "caught_by"), [
    ("bf16", _bf16_layer_norm, "max_rel_tensor_grad_norm_diff"),
    ("fp16", _no_loss_scaler, "max_rel_tensor_grad_norm_diff"),
    ("bf16", _drifting_loss, "max_rel_loss_diff"),
])
def test_precision_parity_fails_on_a_planted_fault(monkeypatch: pytest.MonkeyPatch, precision: str, plant,
                                                   caught_by: str) -> None:
    plant(monkeypatch)
    result = _parity(precision)
    assert not result["ok"]
    tolerance = {"max_rel_loss_diff": "loss", "max_rel_tensor_grad_norm_diff": "tensor_grad_norm"}[caught_by]
    assert result[caught_by] > result["tolerances"][tolerance]


def test_flash_check_without_flash_attn_is_skipped_not_passed(capsys: pytest.CaptureFixture) -> None:
    from bench import flash_check
    from cramcli.model.attention import flash_available

    if torch.cuda.is_available() and flash_available():
        pytest.skip("flash-attn is here: the real check runs")
    assert flash_check.main(["--repeats", "1"]) == flash_check.SKIPPED != 0
    assert "SKIPPED" in capsys.readouterr().out and flash_check.status(flash_check.SKIPPED) == "skipped"


@pytest.mark.parametrize(("check_rc", "carry", "verdict", "rc"), [
    (0, True, "PASSED", 0), (1, True, "FAILED", 1), (3, True, "SKIPPED", 3),
    (0, False, "FAILED", 1),  # no prepared data carried: the stages cannot run, so not a pass
])
def test_gpu_check_script_verdicts(tmp_path, check_rc: int, carry: bool, verdict: str, rc: int) -> None:
    """gpu_check.sh with a stand-in GPU and a Python whose eager `bench.gpu_check` exits `check_rc` and whose
    stages (pretrain, glue, convert, bench, the gpu tests) succeed; the collector is the real one."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'Stand-in GPU, 80 GiB, 1.0'\n")
    (fake / "python").write_text(
        "#!/bin/sh\n"
        f'case "$*" in *"bench.gpu_check --modes eager"*) echo "stand-in gpu_check"; exit {check_rc};; '
        f'*"bench.gpu_stages collect"*) exec {sys.executable} "$@";; esac\nexit 0\n')
    for f in fake.iterdir():
        f.chmod(0o755)
    carried = tmp_path / "carry"
    if carry:
        (carried / "data").mkdir(parents=True)
        (carried / "data" / "manifest.json").write_text("{}")
        (carried / "glue").mkdir()
    script = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.sh"
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}", "PYTHON": str(fake / "python")}
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(script), "--out", str(out), "--carry", str(carried)], capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == rc, done.stdout + done.stderr
    assert f"gpu_check: {verdict}" in done.stdout + done.stderr
    assert ("PASSED" in done.stdout + done.stderr) == (rc == 0)
    stages = json.loads((out / "stages.json").read_text())
    assert list(stages) == ["check", "gpu_tests", "compiled", "pretrain", "resume", "glue", "convert",
                            "convert_parity", "bench"]
    assert stages["pretrain"]["status"] == ("ok" if carry else "skipped")
    assert f"gpu_check: {verdict}" in (out / "log.txt").read_text()  # the log is complete on return


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU machine runs the real check")
def test_gpu_check_script_says_what_is_missing_and_installs_nothing() -> None:
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.sh"
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "cannot run; missing:" in done.stderr and "nvidia-smi" in done.stderr
    assert "pip install" not in done.stdout  # it only tells what to install elsewhere
