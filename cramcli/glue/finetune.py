"""One GLUE fine-tuning trial under the GLUE-sane protocol: tokenize, train for a few epochs, evaluate on dev."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from cramcli.budgets import GlueBudget
from cramcli.glue.loaders import Example
from cramcli.glue.metrics import compute
from cramcli.glue.tasks import Task
from cramcli.utils.errors import UsageError

PAD_ID = 0
PAD_MULTIPLE = 8  # dynamic padding to a multiple of 8, as the original collator did


@dataclass
class Encoded:
    ids: list[list[int]]
    labels: list[float]


def load_glue_tokenizer(checkpoint: Path, max_length: int) -> Tokenizer:
    """The checkpoint's own tokenizer, truncating longest-first to `max_length` (its post-processor adds the
    special tokens: `A <sep>` and `<cls> A <sep> B <sep>`)."""
    path = checkpoint / "tokenizer.json"
    if not path.exists():
        raise UsageError(f"{checkpoint}: no tokenizer.json beside the checkpoint; GLUE needs the pretraining tokenizer")
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_truncation(min(max_length, model_max_length(checkpoint)), strategy="longest_first")
    return tok


def model_max_length(checkpoint: Path) -> int:
    """The longest input the checkpoint takes (its config's max_seq_length, else its tokenizer's model_max_length);
    GLUE inputs are cut to it when the budget's max_length is longer, as a demo model's 64 is."""
    limits = []
    for name, key in (("config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        try:
            value = json.loads((checkpoint / name).read_text()).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, int) and 0 < value < 1_000_000:  # HF writes a huge sentinel when unknown
            limits.append(value)
    return limits[0] if limits else 1_000_000


def encode(tok: Tokenizer, examples: list[Example]) -> Encoded:
    singles = [a for a, b, _ in examples if b is None]
    if len(singles) == len(examples):
        encs = tok.encode_batch(singles)
    else:
        encs = tok.encode_batch([(a, b) for a, b, _ in examples])
    return Encoded([e.ids for e in encs], [y for *_, y in examples])


def _collate(batch: list[tuple[list[int], float]], regression: bool) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in batch)
    width = -(-width // PAD_MULTIPLE) * PAD_MULTIPLE
    ids = torch.full((len(batch), width), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (seq, _) in enumerate(batch):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    labels = torch.tensor([y for _, y in batch], dtype=torch.float if regression else torch.long)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _loader(data: Encoded, batch_size: int, regression: bool, *, shuffle: bool, seed: int) -> torch.utils.data.DataLoader:
    pairs = list(zip(data.ids, data.labels, strict=True))
    gen = torch.Generator().manual_seed(seed)
    # drop_last as in the recipe, unless that would leave no batch at all (tiny --max-train-examples).
    drop = shuffle and len(pairs) >= batch_size
    return torch.utils.data.DataLoader(
        pairs, batch_size=batch_size, shuffle=shuffle, drop_last=drop, generator=gen,
        collate_fn=lambda b: _collate(b, regression),
    )


def lr_lambda(schedule: str, total: int, warmup: int) -> Callable[[int], float]:
    """Per-task schedule: linear warmup over this task's own `warmup` steps, then cosine/linear/constant."""

    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress

    return fn


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_trial(
    model: torch.nn.Module,
    task: Task,
    train: Encoded,
    dev: dict[str, Encoded],
    budget: GlueBudget,
    *,
    epochs: int,
    seed: int,
    device: torch.device,
    on_step: Callable[[int, int, int, float], None] | None = None,
) -> dict[str, dict[str, float]]:
    """Fine-tune `model` (already on `device`, seeded by the caller) and return the metrics of every dev split
    after the last epoch. `on_step(epoch, step, steps_per_epoch, loss)` drives progress bars."""
    regression = task.labels is None
    loader = _loader(train, budget.batch_size, regression, shuffle=True, seed=seed)
    steps_per_epoch = len(loader)
    total = steps_per_epoch * epochs
    warmup = int(budget.warmup * total)
    opt = torch.optim.AdamW(model.parameters(), lr=budget.lr, betas=tuple(budget.betas), eps=budget.eps,
                            weight_decay=budget.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(budget.schedule, total, warmup))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    model.train()
    for epoch in range(epochs):
        for step, batch in enumerate(loader):
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast:
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = _loss(logits.float(), batch["labels"], regression)
            if not torch.isfinite(loss):
                from cramcli.utils.errors import RunError

                raise RunError(f"{task.name}: loss became {loss.item()} in epoch {epoch + 1}; lower the budget's lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if on_step is not None:
                on_step(epoch, step, steps_per_epoch, loss.item())
    return {split: evaluate(model, task, data, budget.batch_size, device) for split, data in dev.items()}


def _loss(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    if regression:
        return F.mse_loss(logits.view(-1), labels.view(-1))
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1))


@torch.no_grad()
def evaluate(model: torch.nn.Module, task: Task, data: Encoded, batch_size: int, device: torch.device) -> dict[str, float]:
    regression = task.labels is None
    model.eval()
    preds: list[np.ndarray] = []
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    for batch in _loader(data, batch_size, regression, shuffle=False, seed=0):
        with autocast:
            logits = model(input_ids=batch["input_ids"].to(device),
                           attention_mask=batch["attention_mask"].to(device)).logits.float()
        preds.append((logits.view(-1) if regression else logits.argmax(-1)).cpu().numpy())
    model.train()
    labels = np.asarray(data.labels, dtype=np.float64 if regression else np.int64)
    return compute(task.name, np.concatenate(preds), labels)


def model_overrides(budget: GlueBudget, legacy_attention_mask: bool) -> dict[str, Any]:
    """Config overrides for fine-tuning: the budget's dropout everywhere, the legacy padding switch."""
    d = budget.dropout
    return {"hidden_dropout": d, "attention_dropout": d, "embedding_dropout": d, "classifier_dropout": d,
            "legacy_ignore_padding": legacy_attention_mask}
