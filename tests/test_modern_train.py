"""The train budget's modern options (docs/recipes.md): Muon for the hidden matrices, a scheduled masking rate,
the warmup-stable-decay shapes; through pretraining, checkpoint/resume, DDP and torch.compile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cramcli import budgets
from cramcli.budgets import ArchBudget, MaskingBudget, OptimizerBudget, ScheduleBudget, TrainBudget
from cramcli.model import CrammedBertConfig, CrammedBertForMaskedLM
from cramcli.stages import pretrain
from cramcli.train.masking import static_prediction_rate
from cramcli.train.optim import make_optimizers, set_lr
from cramcli.train.schedules import lr_factor, masking_rate
from cramcli.utils.console import Output

sys.path.insert(0, str(Path(__file__).parent))
from pretrain_helpers import write_budgets, write_prepared  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MUON = {"name": "muon", "lr": 1e-2, "muon": {"lr": 2e-2, "weight_decay": 0.0}}
ARCH_OPTIONS = {"position_embedding": "rotary", "qk_norm": "rms", "activation": "relu2", "zero_init_residual": True}


def _model(**arch: object) -> CrammedBertForMaskedLM:
    torch.manual_seed(0)
    return CrammedBertForMaskedLM(CrammedBertConfig.from_arch(ArchBudget(
        layout="v1", num_layers=2, hidden_size=32, num_heads=4, intermediate_size=64, vocab_size=64,
        max_seq_length=16, **arch)))


def test_presets_keep_the_recipe_optimizer_masking_and_schedule() -> None:
    for preset in ("24", "v2", "demo"):
        train = budgets.load("train", preset)
        assert train.optimizer.name == "adamw" and train.masking.final_rate is None
        assert train.schedule.decay == "linear"


def test_muon_takes_exactly_the_hidden_matrices_with_its_own_settings() -> None:
    model = _model()
    budget = OptimizerBudget.model_validate({**MUON, "muon": {"lr": 0.03, "weight_decay": 0.05, "momentum": 0.9,
                                                              "nesterov": False, "ns_steps": 3,
                                                              "adjust_lr_fn": "original"}})
    adamw, muon = make_optimizers(model, budget)
    assert isinstance(adamw, torch.optim.AdamW) and isinstance(muon, torch.optim.Muon)
    names = {id(p): n for n, p in model.named_parameters()}
    on_muon = {names[id(p)] for g in muon.param_groups for p in g["params"]}
    on_adamw = {names[id(p)] for g in adamw.param_groups for p in g["params"]}
    assert on_muon == {f"encoder.layers.{i}.{m}.weight" for i in range(2)
                       for m in ("attn.qkv", "attn.dense", "ffn.dense_in", "ffn.dense_out")}
    assert on_muon.isdisjoint(on_adamw) and on_muon | on_adamw == set(names.values())
    assert {"encoder.embedding.word_embedding.weight", "prediction_head.weight"} <= on_adamw  # and the tied decoder
    [group] = muon.param_groups
    assert (group["lr"], group["weight_decay"], group["momentum"], group["nesterov"], group["ns_steps"],
            group["adjust_lr_fn"]) == (0.03, 0.05, 0.9, False, 3, "original")
    set_lr([adamw, muon], 0.5)
    assert group["lr"] == 0.015 and {g["lr"] for g in adamw.param_groups} == {budget.lr * 0.5}
    assert len(make_optimizers(model, OptimizerBudget())) == 1  # adamw: one optimizer, as the recipe


def test_muon_on_a_torch_without_it_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from cramcli.utils.errors import UsageError

    monkeypatch.delattr(torch.optim, "Muon")
    with pytest.raises(UsageError, match="optimizer.name: muon needs torch.optim.Muon"):
        make_optimizers(_model(), OptimizerBudget.model_validate(MUON))


def test_muon_orthogonalises_the_hidden_updates_and_adamw_does_not() -> None:
    model = _model()
    adamw, muon = make_optimizers(model, OptimizerBudget.model_validate(
        {**MUON, "weight_decay": 0.0, "muon": {"lr": 1e-3, "weight_decay": 0.0, "adjust_lr_fn": "original"}}))
    hidden, embedding = model.encoder.layers[0].attn.dense.weight, model.encoder.embedding.word_embedding.weight
    before = hidden.detach().clone(), embedding.detach().clone()
    ids = torch.randint(7, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    model(ids, labels=ids).loss.backward()
    for opt in (adamw, muon):
        opt.step()
    # Newton–Schulz pushes the update's singular values towards 1 (Muon's quintic: roughly 0.5–1.5; the few
    # directions the tiny batch barely excites stay small).
    singular = torch.linalg.svdvals((before[0] - hidden.detach()) / 1e-3)
    assert 0.5 < float(singular.median()) < 1.5 and float(singular.max()) < 1.6
    # The embedding stays on AdamW, whose first step moves every touched entry by the LR (g / √g²).
    moved = (before[1] - embedding.detach()).abs()
    touched = moved[moved > 0]
    assert touched.numel() > 100 and torch.allclose(touched, torch.full_like(touched, 1e-2), rtol=1e-3)


def test_masking_rate_schedule_and_the_static_count_sized_to_its_peak() -> None:
    flat = MaskingBudget(scheme="exact", rate=0.25)
    falling = MaskingBudget(scheme="exact", rate=0.4, final_rate=0.15)
    assert masking_rate(flat, 0.7) == 0.25
    assert [masking_rate(falling, x) for x in (0.0, 0.5, 1.0, 2.0)] == pytest.approx([0.4, 0.275, 0.15, 0.15])
    assert static_prediction_rate(falling, 4096) == 0.4
    assert static_prediction_rate(MaskingBudget(rate=0.1, final_rate=0.3), 10**8) == pytest.approx(0.3, abs=1e-3)
    from cramcli.data.tokenizer import CRAM_SPECIAL_IDS
    from cramcli.train.step import mask_batch

    ids = torch.randint(7, 64, (4, 40), generator=torch.Generator().manual_seed(0))
    for rate in (0.4, 0.2):
        _, labels = mask_batch(ids, falling, 64, torch.Generator().manual_seed(0), special=CRAM_SPECIAL_IDS, rate=rate)
        assert ((labels != -100).sum(dim=1) == round(rate * 40)).all()


@pytest.mark.parametrize(("decay", "mid"), [("linear", 0.5), ("1-sqrt", 1 - 0.5 ** 0.5), ("cosine", 0.5)])
def test_wsd_decay_shapes(decay: str, mid: float) -> None:
    schedule = ScheduleBudget(name="budget-wsd", warmup=0.1, cooldown=0.4, decay=decay)
    assert lr_factor(schedule, 0.05) == pytest.approx(0.5)
    assert lr_factor(schedule, 0.1) == lr_factor(schedule, 0.6) == 1.0
    assert lr_factor(schedule, 0.8) == pytest.approx(mid)
    assert lr_factor(schedule, 1.0) == pytest.approx(0.0, abs=1e-12)
    if decay == "cosine":
        assert lr_factor(schedule, 0.7) == pytest.approx(0.5 * (1 + 0.5 ** 0.5))
    xs = [0.6 + i / 100 for i in range(41)]
    values = [lr_factor(schedule, x) for x in xs]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    write_prepared(tmp_path / "data")
    return tmp_path


def _modern_budgets(tmp: Path, **train: object) -> None:
    write_budgets(tmp, **{"optimizer": MUON, "masking": {"scheme": "exact", "rate": 0.4, "final_rate": 0.2},
                          "schedule": {"name": "budget-wsd", "warmup": 0.1, "cooldown": 0.5, "decay": "1-sqrt"},
                          "schedule_clock": "steps", **train})
    arch = json.loads((tmp / "arch.json").read_text())
    (tmp / "arch.json").write_text(json.dumps({**arch, **ARCH_OPTIONS}))


def _run(tmp: Path, out: str, **flags: object) -> dict:
    pretrain.run(Output(quiet=True), budget=str(tmp / "train.json"), arch=str(tmp / "arch.json"),
                 data=tmp / "data", out=tmp / out, device="cpu", **flags)
    return json.loads((tmp / out / "report.json").read_text())


def _state(run: Path) -> dict:
    last = sorted((run / "checkpoints").glob("step_*"))[-1]
    return torch.load(last / "state.pt", weights_only=False)["model"]


def test_pretraining_with_muon_scheduled_masking_and_wsd_learns_and_logs_them(tmp: Path) -> None:
    _modern_budgets(tmp, batch_size=8, max_steps=80)
    report = _run(tmp, "run")
    assert report["micro_steps"] == 80 and report["final_loss"] < 0.75 * report["first_loss"]
    rows = [json.loads(line) for line in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    schedule = ScheduleBudget(name="budget-wsd", warmup=0.1, cooldown=0.5, decay="1-sqrt")
    for row in rows:  # both follow the step clock, set at the start of each batch
        x = (row["step"] - 1) / 80
        assert row["mask_rate"] == pytest.approx(0.4 - 0.2 * x)
        assert row["lr"] == pytest.approx(1e-2 * lr_factor(schedule, x))
    state = _state(tmp / "run")
    assert "muon" in state and len(state["muon"]["state"]) == 8  # a momentum buffer per hidden matrix
    assert state["muon"]["param_groups"][0]["lr"] == pytest.approx(2e-2 * lr_factor(schedule, 79 / 80))


def test_resume_with_muon_and_a_scheduled_rate_is_bitwise_exact(tmp: Path) -> None:
    _modern_budgets(tmp, batch_ramp=4, max_steps=12)
    _run(tmp, "full")
    # Stopped halfway by the token cap: `max_steps` stays 12, since the step clock (LR, masking rate) runs over it.
    _modern_budgets(tmp, batch_ramp=4, max_steps=12, max_tokens=6 * 8 * 32)
    assert _run(tmp, "split")["micro_steps"] == 6
    _modern_budgets(tmp, batch_ramp=4, max_steps=12)
    assert _run(tmp, "split", resume=True)["micro_steps"] == 12
    full, split = _state(tmp / "full"), _state(tmp / "split")
    assert all(torch.equal(full["weights"][k], split["weights"][k]) for k in full["weights"])
    for name in ("optimizer", "muon"):
        for index, buffers in full[name]["state"].items():
            assert all(torch.equal(v, split[name]["state"][index][k]) for k, v in buffers.items()
                       if isinstance(v, torch.Tensor))


def test_a_compiled_step_never_recompiles_while_the_masking_rate_moves(monkeypatch: pytest.MonkeyPatch) -> None:
    """Static sparse prediction sized to the peak rate: one graph for the whole run (the `aot_eager` backend
    stands in for inductor, which needs a C++ compiler and minutes on a CPU)."""
    from cramcli.data.tokenizer import CRAM_SPECIAL_IDS
    from cramcli.train.step import TrainStep, mask_batch

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model: real_compile(model, backend="aot_eager"))
    torch._dynamo.reset()
    arch = ArchBudget(layout="v2", num_layers=1, hidden_size=32, num_heads=4, intermediate_size=64, vocab_size=64,
                      max_seq_length=16, sparse_prediction="static", **ARCH_OPTIONS)
    train = TrainBudget.model_validate({"batch_size": 4, "micro_batch_size": 4, "precision": "fp32",
                                        "optimizer": MUON, "masking": {"rate": 0.4, "final_rate": 0.1}})
    step = TrainStep(arch, train, torch.device("cpu"), tokens_per_micro_batch=4 * 16, special=CRAM_SPECIAL_IDS,
                     compile=True)
    ids = torch.randint(7, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    from torch._dynamo.utils import counters

    counters.clear()  # process-wide: other tests' graphs must not count
    for x in (0.0, 0.3, 0.6, 1.0):
        inputs, labels = mask_batch(ids, train.masking, 64, torch.Generator().manual_seed(0),
                                    special=CRAM_SPECIAL_IDS, rate=masking_rate(train.masking, x))
        assert torch.isfinite(step.micro_step(inputs, labels))
        step.update(1.0)
    assert counters["stats"]["unique_graphs"] == 1


@pytest.mark.slow
def test_ddp_gloo_with_muon_and_every_option_matches_single_process(tmp: Path) -> None:
    # One optimizer step of two micro-steps: Muon orthogonalises in bf16, so over many steps the last-bit
    # differences of DDP's summed gradients would grow; after one step they stay at bf16's resolution × the LR.
    _modern_budgets(tmp, batch_size=16, micro_batch_size=8, max_steps=2, schedule={"name": "constant"})
    _run(tmp, "single")
    _modern_budgets(tmp, batch_size=16, micro_batch_size=4, max_steps=2, schedule={"name": "constant"})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "cramcli",
           "pretrain", "--budget", str(tmp / "train.json"), "--arch", str(tmp / "arch.json"), "--data",
           str(tmp / "data"), "--out", str(tmp / "ddp"), "--device", "cpu"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    single, ddp = _state(tmp / "single"), _state(tmp / "ddp")
    for key in single["weights"]:
        # A rank that skipped the all-reduce would be off by a whole Muon step (about 4e-3 per entry here).
        torch.testing.assert_close(single["weights"][key], ddp["weights"][key], rtol=1e-3, atol=2e-4)
