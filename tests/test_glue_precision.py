"""GLUE arithmetic and schedule from the GLUE budget: fp32/bf16/fp16 (+ GradScaler), the original's warmup
formula and its first-task warmup reuse, padding with the tokenizer's pad id."""

from __future__ import annotations

import pytest
import torch
import transformers

from cramcli.budgets import ArchBudget, GlueBudget, TrainBudget
from cramcli.glue import finetune as ft
from cramcli.glue.tasks import TASKS
from cramcli.utils.device import Precision, resolve_precision

CPU = torch.device("cpu")


@pytest.mark.parametrize(("total", "warmup"), [(30, 3), (10, 0), (2670, 267), (7, 9)])
@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_lr_factor_is_hfs_schedule(schedule: str, total: int, warmup: int) -> None:
    """The original built its GLUE schedule with transformers' functions; cram's factor is the same number."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    hf = {"cosine": lambda: transformers.get_cosine_schedule_with_warmup(opt, warmup, total),
          "linear": lambda: transformers.get_linear_schedule_with_warmup(opt, warmup, total),
          "constant": lambda: transformers.get_constant_schedule_with_warmup(opt, warmup)}[schedule]()
    ours = ft.lr_lambda(schedule, total, warmup)
    for step in range(total):
        assert ours(step) == pytest.approx(hf.lr_lambdas[0](step), abs=1e-12), step
    assert ours(0) == (1.0 if warmup == 0 else 0.0)  # the first step of a warmup runs at LR 0, as in HF


def test_warmup_steps_per_task_and_reused_from_the_first_task() -> None:
    per_task, reuse = GlueBudget(), GlueBudget(warmup_mode="first-task")
    cola, rte, mnli = 8551, 2490, 392702
    assert ft.trial_steps(cola, per_task) == 534 * 5
    assert ft.warmup_steps(per_task, cola, cola) == 267  # recipe §4.6
    assert ft.warmup_steps(per_task, rte, cola) == 77 and ft.warmup_steps(per_task, mnli, cola) == 12271
    assert ft.warmup_steps(reuse, rte, cola) == ft.warmup_steps(reuse, mnli, cola) == 267
    assert ft.trial_steps(5, per_task) == 5  # fewer examples than a batch: one (partial) batch per epoch


def test_one_precision_rule_for_pretraining_and_glue(monkeypatch: pytest.MonkeyPatch) -> None:
    """utils/device.py decides for both: a CPU runs fp32 (the original switches autocast off there), CUDA runs
    the budget's dtype, fp16 with a GradScaler."""
    for name in ("fp32", "bf16", "fp16"):
        assert resolve_precision(name, CPU) == Precision("fp32", None, False)
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_precision("fp16", cuda) == Precision("fp16", torch.float16, True)
    assert resolve_precision("bf16", cuda) == Precision("bf16", torch.bfloat16, False)
    assert resolve_precision("fp32", cuda) == Precision("fp32", None, False)


def test_bf16_falls_back_to_fp16_with_a_scaler_on_a_gpu_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A T4/V100/2080 Ti: the original trains fp16 with a GradScaler there; cram does the same and says so once.
    The capability query is mocked, so this runs on a CPU; the pretraining step takes the same rule."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    said: list[str] = []
    got = resolve_precision("bf16", torch.device("cuda", 0), said.append)
    assert got == Precision("fp16", torch.float16, True)
    assert len(said) == 1 and "Tesla T4 has no bf16" in said[0] and "fp16" in said[0]
    assert resolve_precision("fp16", torch.device("cuda", 0), said.append).scaler and len(said) == 1


@pytest.mark.filterwarnings("ignore:torch.cuda.amp.GradScaler is enabled")
def test_pretraining_step_takes_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """TrainStep builds its GradScaler and autocast dtype from the same rule (CUDA faked: only the query runs)."""
    from cramcli.data.tokenizer import CRAM_SPECIAL_IDS
    from cramcli.train import step as step_module

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    seen: dict = {}
    monkeypatch.setattr(step_module, "resolve_precision",
                        lambda p, d, say=None: seen.setdefault("got", resolve_precision(p, torch.device("cuda", 0), say)))
    arch = ArchBudget(num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64, vocab_size=64,
                      max_seq_length=16)
    said: list[str] = []
    step = step_module.TrainStep(arch, TrainBudget(precision="bf16"), CPU, tokens_per_micro_batch=64,
                                 special=CRAM_SPECIAL_IDS, say=said.append)
    assert step.precision == "fp16" and step.dtype == torch.float16 and seen["got"].scaler
    assert said and "Tesla V100" in said[0]


def test_collate_pads_with_the_tokenizers_pad() -> None:
    data = ft.Encoded([[5, 6, 7], [5]], [0.0, 1.0], pad=29)
    batch = next(iter(ft._loader(data, 2, False, shuffle=False, seed=0)))
    assert batch["input_ids"].tolist() == [[5, 6, 7] + [29] * 5, [5] + [29] * 7]  # to a multiple of 8
    assert batch["attention_mask"].sum(1).tolist() == [3, 1]


def _model_and_data(seed: int = 0) -> tuple[torch.nn.Module, ft.Encoded, dict[str, ft.Encoded]]:
    from cramcli.model import CrammedBertConfig, CrammedBertForSequenceClassification

    torch.manual_seed(seed)
    arch = ArchBudget(num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64, vocab_size=40,
                      max_seq_length=32)
    net = CrammedBertForSequenceClassification(CrammedBertConfig.from_arch(arch, num_labels=2, hidden_dropout=0.0,
                                                                           attention_dropout=0.0,
                                                                           embedding_dropout=0.0,
                                                                           classifier_dropout=0.0))
    g = torch.Generator().manual_seed(1)
    rows = [torch.randint(7, 40, (int(n),), generator=g).tolist() for n in torch.randint(3, 12, (48,), generator=g)]
    labels = [float(r[0] % 2) for r in rows]  # learnable: the first token's parity
    train = ft.Encoded(rows[:32], labels[:32], pad=0)
    return net, train, {"dev": ft.Encoded(rows[32:], labels[32:], pad=0)}


def _trial(precision: str, scaler: torch.amp.GradScaler | None = None) -> tuple[torch.nn.Module, dict]:
    net, train, dev = _model_and_data()
    budget = GlueBudget(precision=precision, lr=1e-3, batch_size=8, epochs=2, dropout=0.0)
    metrics = ft.run_trial(net, TASKS["rte"], train, dev, budget, epochs=2, seed=0, device=CPU, scaler=scaler)
    return net, metrics


def test_fp32_trains_and_a_loss_scaler_changes_no_bit() -> None:
    """The scaler path (scale → backward → unscale in step → update) on fp32 arithmetic: power-of-two scaling
    is exact, so the weights must match the unscaled run bit for bit; a missing unscale would not (AdamW's eps)."""
    plain, metrics = _trial("fp32")
    assert set(metrics["dev"]) == {"accuracy"}
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    scaled, _ = _trial("fp32", scaler)
    assert scaler.is_enabled() and scaler.get_scale() == 2.0**16  # no overflow: the scale stayed
    start, _, _ = _model_and_data()
    changed = [k for k, v in plain.state_dict().items() if not torch.equal(v, start.state_dict()[k])]
    assert changed  # it trained
    for k, v in plain.state_dict().items():
        assert torch.equal(v, scaled.state_dict()[k]), k


def test_overflowing_steps_are_skipped_and_the_scale_backs_off() -> None:
    """Every gradient overflows (a hook makes one inf): each of the 8 steps is skipped and halves the scale."""
    net, train, dev = _model_and_data()
    start = {k: v.clone() for k, v in net.state_dict().items()}
    net.classifier.weight.register_hook(lambda g: g * float("inf"))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    budget = GlueBudget(precision="fp32", lr=1e-3, batch_size=8, epochs=2, dropout=0.0)
    ft.run_trial(net, TASKS["rte"], train, dev, budget, epochs=2, seed=0, device=CPU, scaler=scaler)
    for k, v in net.state_dict().items():
        assert torch.equal(v, start[k]), k
    assert scaler.get_scale() == 2.0 ** (16 - 8)


def test_fine_tuning_fits_its_training_rows_and_fp16_on_a_cpu_is_that_fp32_run() -> None:
    """run_trial really trains: 32 rows go from chance to all right (metrics measured on those rows); fp16 on a
    CPU is the same fp32 run bit for bit (the one precision rule)."""
    runs = {}
    for precision in ("fp32", "fp16"):
        net, train, _ = _model_and_data()
        before = ft.evaluate(net, TASKS["rte"], train, 8, CPU, resolve_precision(precision, CPU))["accuracy"]
        budget = GlueBudget(precision=precision, lr=3e-3, batch_size=8, epochs=5, dropout=0.0)
        metrics = ft.run_trial(net, TASKS["rte"], train, {"train": train}, budget, epochs=10, seed=0, device=CPU)
        assert before < 0.6 and metrics["train"]["accuracy"] == 1.0
        runs[precision] = net.state_dict()
    for k, v in runs["fp32"].items():
        assert torch.equal(v, runs["fp16"][k]), k


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp16", "bf16", "fp32"])
def test_gpu_precisions_train(precision: str) -> None:
    net, train, dev = _model_and_data()
    cuda = torch.device("cuda")
    budget = GlueBudget(precision=precision, lr=1e-3, batch_size=8, epochs=2, dropout=0.0)
    budget = budget.model_copy(update={"lr": 3e-3, "epochs": 5})
    metrics = ft.run_trial(net.to(cuda), TASKS["rte"], train, {"train": train}, budget, epochs=10, seed=0, device=cuda)
    assert metrics["train"]["accuracy"] >= 0.9  # it learnt its training rows in this precision
    assert all(torch.isfinite(p).all() for p in net.parameters())
