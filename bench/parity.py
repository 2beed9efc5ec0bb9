"""Mixed-precision training parity: the trainer's own step in fp32 and under bf16 (or fp16) autocast, on real text.

Both runs start from the same weights and see the same rows and masks: rows of the embedded corpus
(cramcli/data/embedded.py) with a word-level vocabulary, so the loss falls from ~ln V within a few steps. Per
optimizer step it compares, relative to fp32, the loss, the global gradient norm (before clipping) and the
gradient norm of every parameter tensor. The per-tensor norms are what catch a precision fault: a global norm
is dominated by the few largest gradients, while a bf16 LayerNorm (a bf16 residual stream) or a dropped fp16 loss
scaler (small gradients flushed to zero) shows in the tensors with small gradients. The tolerances sit above
what autocast itself costs and below what those faults cost; tests/test_bench.py plants both on a CPU and the
check must fail on each.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

PARITY_STEPS = 8
PARITY_ROWS = 64
LOSS_TOLERANCE = 0.01
"""Largest relative loss difference per step."""
GRAD_NORM_TOLERANCE = 0.02
"""Largest relative difference of the global gradient norm per step."""
TENSOR_GRAD_NORM_TOLERANCE = 0.04
"""Largest relative difference of one parameter tensor's gradient norm. Measured on CPU test archs: autocast
itself ≤ 0.015 (bf16) and ≤ 0.01 (fp16), ≤ 0.03 with every modern option on (zero-initialised output
projections leave some gradients small); a bf16 LayerNorm ≥ 0.07; a dropped fp16 loss scaler with a 32768-word
decoder ≥ 0.1."""


def text_rows(rows: int, seq: int, vocab_size: int) -> torch.Tensor:
    """[rows, seq] ids of the embedded corpus: documents joined by `<sep>`, words numbered by frequency from id
    7 up (cram's special ids are 0–6), words beyond the vocabulary `<unk>`."""
    from cramcli.data.embedded import iter_documents
    from cramcli.data.tokenizer import CRAM_SPECIAL_IDS as SPECIAL

    words: list[str] = []
    for doc in iter_documents(seed=0, num_documents=rows * seq // 8):
        words += [*doc.split(), "<sep>"]
        if len(words) >= rows * seq:
            break
    if len(words) < rows * seq:
        raise ValueError(f"the embedded corpus gave {len(words)} tokens, {rows * seq} needed")
    counts = Counter(w for w in words if w != "<sep>")
    ids = {w: 7 + i for i, (w, _) in enumerate(counts.most_common(vocab_size - 7))}
    ids["<sep>"] = SPECIAL.sep
    flat = [ids.get(w, SPECIAL.unk) for w in words[: rows * seq]]
    return torch.tensor(flat, dtype=torch.long).view(rows, seq)


def _curve(arch: Any, train: Any, dev: torch.device, dtype: torch.dtype | None, rows: torch.Tensor,
           steps: int) -> dict[str, Any]:
    """Losses, global and per-tensor pre-clip gradient norms of `steps` optimizer steps under `dtype`."""
    from cramcli.data.tokenizer import CRAM_SPECIAL_IDS
    from cramcli.train.step import TrainStep, mask_batch

    torch.manual_seed(0)
    step = TrainStep(arch, train, dev, compile=False, tokens_per_micro_batch=rows.numel(), special=CRAM_SPECIAL_IDS)
    step.dtype = dtype  # on a CPU too (the trainer keeps CPUs in fp32), so the tests can run this check
    if dtype == torch.float16 and not step.scaler.is_enabled():  # a CPU: the loss scaler CUDA's fp16 runs with
        step.scaler = torch.amp.GradScaler(dev.type)
    names = [name for name, _ in step.model.named_parameters()]
    gen = torch.Generator(device=dev).manual_seed(0)
    ids = rows.to(dev)
    losses, norms, tensor_norms = [], [], []
    for _ in range(steps):
        inputs, labels = mask_batch(ids, train.masking, arch.vocab_size, gen, special=CRAM_SPECIAL_IDS)
        losses.append(float(step.micro_step(inputs, labels)))
        scale = float(step.scaler.get_scale()) if step.scaler.is_enabled() else 1.0
        per = torch.stack([torch.linalg.vector_norm(p.grad.float()) if p.grad is not None else p.new_zeros(())
                           for p in step.model.parameters()]) / scale
        norms.append(float(torch.linalg.vector_norm(per)))
        tensor_norms.append(per.tolist())
        step.update(1.0)  # the peak LRs
    return {"loss": losses, "grad_norm": norms, "tensor_grad_norms": tensor_norms, "names": names}


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), 1e-12)


def precision_parity(arch: Any, train: Any, dev: torch.device, precision: str = "bf16", *,
                     steps: int = PARITY_STEPS, rows: int = PARITY_ROWS) -> dict[str, Any]:
    """fp32 against `precision` (bf16, or fp16 with the loss scaler); `ok` when every step is within all three
    tolerances."""
    from cramcli import budgets

    budget = budgets.TrainBudget.model_validate({**train.model_dump(), "precision": precision})
    data = text_rows(rows, arch.max_seq_length, arch.vocab_size)
    ref = _curve(arch, budget, dev, None, data, steps)
    low = _curve(arch, budget, dev, torch.bfloat16 if precision == "bf16" else torch.float16, data, steps)
    loss_diff = max(map(_rel, ref["loss"], low["loss"]))
    norm_diff = max(map(_rel, ref["grad_norm"], low["grad_norm"]))
    tensor_diff, step_at, name = max((_rel(a, b), i, n) for i, (ra, rb) in
                                     enumerate(zip(ref["tensor_grad_norms"], low["tensor_grad_norms"], strict=True))
                                     for n, a, b in zip(ref["names"], ra, rb, strict=True))
    return {"precision": precision, "steps": steps, "rows": rows, "seq": arch.max_seq_length,
            "data": "embedded corpus, word-level ids",
            "fp32": {"loss": ref["loss"], "grad_norm": ref["grad_norm"]},
            precision: {"loss": low["loss"], "grad_norm": low["grad_norm"]},
            "max_rel_loss_diff": loss_diff, "max_rel_grad_norm_diff": norm_diff,
            "max_rel_tensor_grad_norm_diff": tensor_diff, "worst_tensor": f"{name} (step {step_at})",
            "tolerances": {"loss": LOSS_TOLERANCE, "grad_norm": GRAD_NORM_TOLERANCE,
                           "tensor_grad_norm": TENSOR_GRAD_NORM_TOLERANCE},
            "ok": loss_diff <= LOSS_TOLERANCE and norm_diff <= GRAD_NORM_TOLERANCE
            and tensor_diff <= TENSOR_GRAD_NORM_TOLERANCE}
