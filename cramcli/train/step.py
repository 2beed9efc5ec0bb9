"""The masked-LM training step that `cram pretrain`, `cram bench` and the GPU check share, so a benchmark times
exactly the step training runs: masking, the autocast forward and backward, and the gradient update (unscale,
clip, optimizer step, zero)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from cramcli.budgets import ArchBudget, MaskingBudget, TrainBudget
from cramcli.data.tokenizer import SpecialIds
from cramcli.train.masking import mask_tokens
from cramcli.utils.device import resolve_precision


def mask_batch(ids: torch.Tensor, masking: MaskingBudget, vocab_size: int, generator: torch.Generator, *,
               special: SpecialIds, rate: float | None = None, row_offset: int = 0,
               total_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, S] token ids → (masked inputs, labels) with the run's tokenizer's `<mask>` id; v1 masking never
    selects any of its special tokens (`special_ids(tokenizer)`, wherever they sit in the vocabulary). `rate`:
    a scheduled masking rate instead of the budget's `rate`. `ids` may be one rank's rows of a larger batch (see
    `mask_tokens`)."""
    return mask_tokens(ids, masking, mask_id=special.mask, vocab_size=vocab_size, special_ids=special.all,
                       generator=generator, rate=rate, row_offset=row_offset, total_rows=total_rows)


def forward_loss(forward: Callable[..., object], inputs: torch.Tensor, labels: torch.Tensor,
                 dtype: torch.dtype | None) -> torch.Tensor:
    """The MLM loss of one micro-batch, under autocast when `dtype` is set."""
    with torch.autocast(inputs.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        return forward(inputs, labels=labels).loss


def apply_gradients(model: torch.nn.Module, optimizers: list[torch.optim.Optimizer], scaler: torch.amp.GradScaler,
                    grad_clip: float) -> None:
    """Unscale (fp16), clip the global gradient norm (over every optimizer's parameters) when `grad_clip` > 0,
    step each optimizer, update the scale once, and clear the gradients."""
    if grad_clip > 0:
        for optimizer in optimizers:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    for optimizer in optimizers:
        scaler.step(optimizer)
    scaler.update()
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)


def fixed_prediction_count(arch: ArchBudget, train: TrainBudget, device: torch.device, compile: bool) -> bool:
    """Whether an arch's `dynamic` sparse prediction runs with a fixed count (`sparse_count`). Exact counting
    indexes by a boolean mask, whose size the host must read from the device every micro-step: the CPU cannot
    queue the next batch's copy and masking while the GPU computes. Under torch.compile the changing shapes
    would also mean graph breaks and recompiles, so compile always uses the fixed count."""
    if arch.sparse_prediction != "dynamic":
        return False
    if compile or train.sparse_count == "fixed":
        return True
    return train.sparse_count == "auto" and device.type == "cuda"


class TrainStep:
    """The model, its optimizers (AdamW, plus Muon with `optimizer.name: muon`) and loss scaler, and the one
    training step that `cram pretrain`, `cram bench` and the GPU check all run: autocast forward and backward of a
    masked micro-batch, then the optimizer update. A trainer part: it saves and restores the weights, the
    optimizers and the scaler."""

    def __init__(self, arch: ArchBudget, train: TrainBudget, device: torch.device, *, tokens_per_micro_batch: int,
                 special: SpecialIds, world: int = 1, compile: bool | None = None,
                 say: Callable[[str], None] | None = None) -> None:
        from cramcli.model import CrammedBertConfig, CrammedBertForMaskedLM
        from cramcli.train.masking import static_prediction_rate
        from cramcli.train.optim import make_optimizers

        compile = train.compile if compile is None else compile
        share = static_prediction_rate(train.masking, tokens_per_micro_batch)
        overrides: dict[str, object] = {"sparse_rate": share} if arch.sparse_prediction == "static" else {}
        # The config records the tokenizer's special ids, so the saved config.json names them.
        config = CrammedBertConfig.from_arch(arch, **overrides, **special.config_fields())
        self.model = CrammedBertForMaskedLM(config).to(device)
        if fixed_prediction_count(arch, train, device, compile):
            self.model.fixed_prediction_share = share
        self.model.eval()  # recipe §2.6: pretraining runs with dropout off; gradients still flow
        self.optimizers = make_optimizers(self.model, train.optimizer)
        precision = resolve_precision(train.precision, device, say)  # `say`: the bf16 → fp16 fallback line
        self.scaler = torch.amp.GradScaler("cuda", enabled=precision.scaler)
        self.dtype = precision.autocast
        self.precision = precision.name
        self.grad_clip = train.grad_clip
        self.forward: torch.nn.Module = self.model
        if world > 1:
            self.forward = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        if compile:
            self.forward = torch.compile(self.forward)  # type: ignore[assignment]
        self._ddp = world > 1

    def micro_step(self, inputs: torch.Tensor, labels: torch.Tensor, accumulation: int = 1,
                   sync: bool = True) -> torch.Tensor:
        """Forward and backward of one micro-batch; gradients add up over `accumulation` micro-batches. Under DDP
        only the last micro-batch of a batch (`sync`) all-reduces gradients."""
        no_sync = self.forward.no_sync() if self._ddp and not sync else contextlib.nullcontext()  # type: ignore[operator]
        with no_sync:
            loss = forward_loss(self.forward, inputs, labels, self.dtype)
            self.scaler.scale(loss / accumulation).backward()
        return loss.detach()

    def update(self, lr_factor: float) -> None:
        """One optimizer step with every peak LR scaled by the schedule's `lr_factor`."""
        from cramcli.train.optim import set_lr

        set_lr(self.optimizers, lr_factor)
        apply_gradients(self.model, self.optimizers, self.scaler, self.grad_clip)

    def drop_gradients(self) -> None:
        """Forget a partial accumulation (a run that stops between optimizer steps)."""
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any]:
        adamw, *muon = self.optimizers
        state = {"weights": self.model.state_dict(), "optimizer": adamw.state_dict(),
                 "scaler": self.scaler.state_dict()}
        if muon:
            state["muon"] = muon[0].state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        adamw, *muon = self.optimizers
        if bool(muon) != ("muon" in state):
            raise ValueError("the checkpoint's optimizers differ from this budget's optimizer.name; resume with the "
                             "budget the run started with")
        self.model.load_state_dict(state["weights"])
        adamw.load_state_dict(state["optimizer"])
        if muon:
            muon[0].load_state_dict(state["muon"])
        self.scaler.load_state_dict(state["scaler"])
