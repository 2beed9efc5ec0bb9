"""No host–device synchronisation inside a training micro-step on the default GPU path.

A CPU has nothing to wait for, so the test counts the operations that would make the host wait for a GPU: every
ATen op whose result size or value the host must read (`nonzero`, boolean-mask indexing, `masked_select`, …,
and `_local_scalar_dense`, behind `.item()`, `float()`, `int()`, `bool()` of a tensor), seen through a dispatch
mode, plus the tensor methods that copy to the host outside ATen (`tolist`, `numpy`, `cpu`). Syncs at the
optimizer-step boundary (the loss read for logging and the stop decision) are allowed; none inside a micro-step.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from cramcli import budgets
from cramcli.data.prepared import PreparedData
from cramcli.train.step import fixed_prediction_count
from cramcli.train.trainer import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from pretrain_helpers import write_budgets, write_prepared  # noqa: E402

ATEN = torch.ops.aten
SYNCING = {ATEN._local_scalar_dense.default, ATEN.nonzero.default, ATEN.nonzero_static.default,
           ATEN.masked_select.default, ATEN.equal.default, ATEN.is_nonzero.default, ATEN.unique_consecutive.default,
           ATEN._unique2.default, ATEN.unique_dim.default, ATEN.repeat_interleave.Tensor}


def _bool_index(func, args) -> bool:
    """`x[mask]` and `x[mask] = v`: a boolean index has a data-dependent count."""
    if func not in (ATEN.index.Tensor, ATEN.index_put.default, ATEN.index_put_.default, ATEN._index_put_impl_.default):
        return False
    return any(i is not None and i.dtype in (torch.bool, torch.uint8) for i in args[1])


class SyncCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.phase = "boundary"
        self.seen: dict[str, list[str]] = {"boundary": [], "micro_step": []}

    def record(self, name: str) -> None:
        self.seen[self.phase].append(name)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in SYNCING or _bool_index(func, args):
            self.record(str(func))
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def counting_syncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[SyncCounter]:
    counter = SyncCounter()
    for name in ("tolist", "numpy", "cpu"):  # host copies that do not pass through the dispatcher
        original = getattr(torch.Tensor, name)

        def wrapped(self, *args, _original=original, _name=name, **kwargs):
            counter.record(f"Tensor.{_name}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    micro_step = Trainer._micro_step

    def marked(self, **kwargs):
        counter.phase = "micro_step"
        try:
            return micro_step(self, **kwargs)
        finally:
            counter.phase = "boundary"

    monkeypatch.setattr(Trainer, "_micro_step", marked)
    with counter:
        yield counter


def _train(tmp: Path, monkeypatch: pytest.MonkeyPatch, sparse_count: str, masking: dict[str, object],
           arch_options: dict[str, object] | None = None, **train: object) -> SyncCounter:
    data = PreparedData(write_prepared(tmp / "data"))
    train_file, arch_file = write_budgets(tmp, **{"schedule": {"name": "constant"}, **train}, sparse_count=sparse_count,
                                          masking=masking, max_steps=6, batch_ramp=3)
    arch_file.write_text(json.dumps(json.loads(arch_file.read_text()) | (arch_options or {})))
    train, arch = budgets.load("train", train_file), budgets.load("arch", arch_file)
    (tmp / "run").mkdir()
    trainer = Trainer(train, arch, data, tmp / "run", device=torch.device("cpu"), config_key="test")
    with counting_syncs(monkeypatch) as counter:
        trainer.run()
    assert trainer.progress.micro_steps >= 6 and trainer.progress.optimizer_steps >= 3  # it accumulated
    return counter


@pytest.mark.parametrize("masking", [{"scheme": "bernoulli", "rate": 0.15}, {"scheme": "exact", "rate": 0.25}])
def test_a_trainer_micro_step_never_waits_for_the_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        masking: dict[str, object]) -> None:
    counter = _train(tmp_path, monkeypatch, "fixed", masking)  # what `auto` runs on CUDA
    assert counter.seen["micro_step"] == []
    assert counter.seen["boundary"]  # the counter does see syncs: the loss read at each optimizer step


def test_the_modern_preset_options_add_no_wait_to_a_micro_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rotary positions, QK-norm, Muon and the wsd schedule (the `modern` preset's options) on the GPU path."""
    counter = _train(tmp_path, monkeypatch, "fixed", {"scheme": "exact", "rate": 0.25},
                     {"position_embedding": "rotary", "qk_norm": "layer"},
                     schedule={"name": "budget-wsd", "warmup": 0.1, "cooldown": 0.3},
                     optimizer={"name": "muon", "lr": 1e-2, "muon": {"lr": 0.02, "adjust_lr_fn": "original"}})
    assert counter.seen["micro_step"] == []


def test_exact_counting_is_what_the_guard_catches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = _train(tmp_path, monkeypatch, "exact", {"scheme": "bernoulli", "rate": 0.15})
    assert "aten.index.Tensor" in counter.seen["micro_step"]  # the boolean indexing of the masked rows


def test_the_24_preset_runs_the_fixed_count_on_cuda_and_the_original_count_on_cpu() -> None:
    arch, train = budgets.load("arch", "24"), budgets.load("train", "24")
    assert arch.sparse_prediction == "dynamic" and train.sparse_count == "auto"
    assert fixed_prediction_count(arch, train, torch.device("cuda"), compile=False)
    assert not fixed_prediction_count(arch, train, torch.device("cpu"), compile=False)
    assert fixed_prediction_count(arch, train, torch.device("cpu"), compile=True)
    exact = budgets.TrainBudget.model_validate({**train.model_dump(), "sparse_count": "exact"})
    assert not fixed_prediction_count(arch, exact, torch.device("cuda"), compile=False)


def test_the_fixed_count_gives_the_exact_count_loss_and_gradients() -> None:
    from cramcli.model import CrammedBertConfig, CrammedBertForMaskedLM
    from cramcli.train.masking import mask_tokens, static_prediction_rate

    arch = budgets.ArchBudget.model_validate({**budgets.load("arch", "24").model_dump(), "num_layers": 1,
                                              "hidden_size": 32, "num_heads": 2, "intermediate_size": 64,
                                              "vocab_size": 128, "max_seq_length": 32})
    masking = budgets.load("train", "24").masking
    torch.manual_seed(0)
    model = CrammedBertForMaskedLM(CrammedBertConfig.from_arch(arch)).eval()
    ids = torch.randint(7, 128, (16, 32), generator=torch.Generator().manual_seed(1))
    inputs, labels = mask_tokens(ids, masking, mask_id=6, vocab_size=128, special_ids=tuple(range(7)),
                                 generator=torch.Generator().manual_seed(2))
    results = []
    for share in (None, static_prediction_rate(masking, ids.numel())):
        model.zero_grad()
        model.fixed_prediction_share = share
        out = model(inputs, labels=labels)
        out.loss.backward()
        results.append((out.loss.detach(), out.logits.shape[0], model.decoder.weight.grad.clone()))
    (exact, rows_exact, grad_exact), (fixed, rows_fixed, grad_fixed) = results
    assert rows_exact == int((labels != -100).sum()) < rows_fixed  # the fixed count decodes a few spare rows
    torch.testing.assert_close(fixed, exact, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad_fixed, grad_exact, rtol=1e-5, atol=1e-7)
    assert model.config.sparse_prediction == "dynamic"  # a saved model keeps the original's mode
