"""One GLUE fine-tuning trial under the GLUE-sane protocol: tokenize, train for a few epochs, evaluate on dev.

Padding and the special tokens of pair inputs come from the checkpoint's own tokenizer (an original's may have
`<pad>` at any id); the arithmetic (bf16, fp16 with loss scaling, fp32: utils/device.py's one rule) and the warmup rule from the
budget."""

from __future__ import annotations

import json
import math
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from cramcli.budgets import GlueBudget
from cramcli.data.tokenizer import SpecialIds, check_config_ids, special_ids
from cramcli.glue.loaders import Example
from cramcli.glue.metrics import compute
from cramcli.glue.tasks import Task
from cramcli.utils.device import Precision, resolve_precision
from cramcli.utils.errors import RunError, UsageError

PAD_MULTIPLE = 8  # dynamic padding to a multiple of 8, as the original collator did


@dataclass
class Encoded:
    ids: list[list[int]]
    labels: list[float]
    pad: int
    """The tokenizer's `<pad>` id, which the collator pads with."""


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


def glue_special_ids(checkpoint: Path, tok: Tokenizer) -> SpecialIds:
    """The tokenizer's special ids (the one rule, data/tokenizer.special_ids), checked for GLUE: a config.json
    naming other ones (cram writes them) is refused, and pairs must get a separator. An original checkpoint's
    config names none at the top level (its hard-coded pad 0 sits inside `arch`, recipe §3.3)."""
    ids = special_ids(tok, str(checkpoint / "tokenizer.json"), folder=checkpoint)
    try:
        config = json.loads((checkpoint / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    if isinstance(config, dict):
        check_config_ids(ids, config, str(checkpoint / "config.json"))
    if ids.sep not in tok.encode("a", "b").ids:
        raise UsageError(f"{checkpoint / 'tokenizer.json'}: its post-processor puts no separator between the texts"
                         " of a pair; GLUE pairs need the pretraining template (`<cls> A <sep> B <sep>`)")
    return ids


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


def encode(tok: Tokenizer, examples: list[Example], pad: int) -> Encoded:
    """Token ids through the tokenizer's own template (it adds the special tokens); `pad` pads batches later."""
    singles = [a for a, b, _ in examples if b is None]
    if len(singles) == len(examples):
        encs = tok.encode_batch(singles)
    else:
        encs = tok.encode_batch([(a, b) for a, b, _ in examples])
    return Encoded([e.ids for e in encs], [y for *_, y in examples], pad)


def _collate(batch: list[tuple[list[int], float]], regression: bool, pad: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in batch)
    width = -(-width // PAD_MULTIPLE) * PAD_MULTIPLE
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
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
        collate_fn=lambda b: _collate(b, regression, data.pad),
    )


def trial_steps(n_train: int, budget: GlueBudget) -> int:
    """Optimizer steps of one trial on `n_train` examples: the train loader's batches × epochs."""
    per_epoch = n_train // budget.batch_size if n_train >= budget.batch_size else min(n_train, 1)
    return per_epoch * budget.epochs


def warmup_steps(budget: GlueBudget, n_train: int, first_task_n_train: int) -> int:
    """Warmup steps of a task with `n_train` examples: int(warmup × its own steps), or under `first-task`
    int(warmup × the first task's steps), the number the original's in-place conversion left for every task
    (CoLA's 8,551 examples: 534 batches × 5 epochs = 2,670 steps → 267)."""
    n = first_task_n_train if budget.warmup_mode == "first-task" else n_train
    return int(budget.warmup * trial_steps(n, budget))


def lr_lambda(schedule: str, total: int, warmup: int) -> Callable[[int], float]:
    """The LR factor at optimizer step `step` (0-based), HF's formulas as the original used them: linear warmup
    from 0 over `warmup` steps, then half a cosine (or a line) to 0 at `total`, or constant."""

    def fn(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress)

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
    warmup: int | None = None,
    scaler: torch.amp.GradScaler | None = None,
    on_step: Callable[[int, int, int, float], None] | None = None,
) -> dict[str, dict[str, float]]:
    """Fine-tune `model` (already on `device`, seeded by the caller) and return the metrics of every dev split
    after the last epoch. `warmup`: warmup steps (default: the budget's share of this trial's steps);
    `scaler`: the loss scaler (default: one enabled for fp16). `on_step(epoch, step, steps_per_epoch, loss)`
    drives progress bars."""
    regression = task.labels is None
    precision = resolve_precision(budget.precision, device)
    loader = _loader(train, budget.batch_size, regression, shuffle=True, seed=seed)
    steps_per_epoch = len(loader)
    total = steps_per_epoch * epochs
    warmup = int(budget.warmup * total) if warmup is None else warmup
    opt = torch.optim.AdamW(model.parameters(), lr=budget.lr, betas=tuple(budget.betas), eps=budget.eps,
                            weight_decay=budget.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(budget.schedule, total, warmup))
    scaler = scaler or torch.amp.GradScaler(device.type, enabled=precision.scaler)
    model.train()
    with warnings.catch_warnings():
        # The schedule advances every batch, also when the scaler skips an overflowing fp16 step (as the original).
        warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler.step\(\)` before", UserWarning)
        for epoch in range(epochs):
            for step, batch in enumerate(loader):
                batch = {k: v.to(device) for k, v in batch.items()}
                with _autocast(precision, device):
                    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                loss = _loss(logits.float(), batch["labels"], regression)
                if not torch.isfinite(loss):
                    raise RunError(f"{task.name}: loss became {loss.item()} in epoch {epoch + 1}; lower the budget's"
                                   " lr" + (" or use precision bf16/fp32" if precision.scaler else ""))
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)  # unscales first; skips the step when a gradient overflowed
                scaler.update()
                sched.step()
                if on_step is not None:
                    on_step(epoch, step, steps_per_epoch, loss.item())
    return {split: evaluate(model, task, data, budget.batch_size, device, precision) for split, data in dev.items()}


def _autocast(precision: Precision, device: torch.device) -> torch.autocast:
    return torch.autocast(device.type, dtype=precision.autocast or torch.float32, enabled=precision.autocast is not None)


def _loss(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    if regression:
        return F.mse_loss(logits.view(-1), labels.view(-1))
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1))


@torch.no_grad()
def evaluate(model: torch.nn.Module, task: Task, data: Encoded, batch_size: int, device: torch.device,
             precision: Precision) -> dict[str, float]:
    regression = task.labels is None
    model.eval()
    preds: list[np.ndarray] = []
    for batch in _loader(data, batch_size, regression, shuffle=False, seed=0):
        with _autocast(precision, device):
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
