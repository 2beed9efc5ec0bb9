"""The real `Trainer` on a CUDA GPU, end to end (skipped without one; `bash bench/gpu_check.sh` runs these).

`-m gpu` selects them. On a GPU they check what a CPU cannot: a bf16 run through `cram pretrain` that learns,
resumes and exports, and no host–device synchronisation inside a micro-step (torch's sync debug mode raises
on any).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from cramcli.stages import pretrain
from cramcli.train.trainer import Trainer
from cramcli.utils.console import Output

sys.path.insert(0, str(Path(__file__).parent))
from pretrain_helpers import write_budgets, write_prepared  # noqa: E402

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _run(tmp: Path, out: str, **flags) -> dict:
    pretrain.run(Output(quiet=True), budget=str(tmp / "train.json"), arch=str(tmp / "arch.json"),
                 data=tmp / "data", out=tmp / out, device="cuda", **flags)
    return json.loads((tmp / out / "report.json").read_text())


def test_pretrain_on_cuda_learns_resumes_and_never_syncs_inside_a_micro_step(tmp_path: Path, monkeypatch) -> None:
    write_prepared(tmp_path / "data")
    # bf16 autocast, v1 Bernoulli masking, dynamic sparse prediction (run with a fixed count on CUDA), accumulation;
    # 128 × 32 = 4096 ids per micro-batch, so the embedding's backward takes its sort-based path (> 3072 ids)
    write_budgets(tmp_path, precision="bf16", schedule={"name": "budget-one-cycle"}, batch_size=256,
                  micro_batch_size=128, batch_ramp=4, schedule_clock="steps", max_steps=150)
    micro_step = Trainer._micro_step
    checked = []

    def strict(self, **kwargs):
        torch.cuda.set_sync_debug_mode("error")  # any synchronising call raises
        try:
            return micro_step(self, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")
            checked.append(True)

    monkeypatch.setattr(Trainer, "_micro_step", strict)
    report = _run(tmp_path, "run")
    assert report["device"].startswith("cuda") and report["micro_steps"] == 150 == len(checked)
    assert report["final_loss"] < 0.75 * report["first_loss"]  # it learned the synthetic corpus
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    resumed = _run(tmp_path, "run", max_steps=160, resume=True)
    assert resumed["micro_steps"] == 160
