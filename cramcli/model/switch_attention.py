"""Rewriting a checkpoint for another attention backend (what `cram convert` does), importing the original
cramming v1/v2 layouts on the way, and proving parity on a probe batch before anything is written.

cram keeps one fused-QKV weight layout for every backend ([Q | K | V], see model/attention.py), so the weights are
copied bit for bit; what changes in the written checkpoint is the `attention` field of config.json. Original
checkpoints are renamed (and v2's per-head interleaved QKV permuted) by model/convert.py on reading.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from cramcli.data.tokenizer import CRAM_SPECIAL_IDS, check_config_ids, special_ids
from cramcli.model.checkpoint import TOKENIZER_FILES, build_model, read_checkpoint, save_checkpoint
from cramcli.utils.errors import RunError

TARGETS = ("pytorch", "flash")
PROBE_BATCH, PROBE_SEQ = 4, 64
# fp32 on CPU: SDPA vs the explicit reference differ by rounding only. bf16 (flash on CUDA): a few ulps of bf16.
TOLERANCE = {"float32": 1e-3, "bfloat16": 0.25}
FLASH_NOT_CHECKED = "flash not checked (no CUDA/flash-attn)"


def switch_attention(checkpoint: Path, out: Path, attention: str, dev: torch.device, real_flash: bool, *,
                     force: bool) -> dict[str, Any]:
    """Read `checkpoint` (any supported layout), check the rewritten model against it on a probe batch, then write
    it to `out`; returns the report (what was read, the parity numbers, the notes)."""
    started = time.perf_counter()
    source = read_checkpoint(checkpoint)

    # Parity runs both models in one precision; a backend that cannot run here is replaced by the reference
    # implementation, which computes the same function (softmax(QKᵀ/√d)·V with the same mask).
    dtype = torch.bfloat16 if real_flash else torch.float32

    def runnable(backend: str) -> str:
        return backend if backend != "flash" or real_flash else "reference"

    src_backend, dst_backend = runnable(source.config.get("attention", "pytorch")), runnable(attention)
    has_tokenizer = (source.folder / "tokenizer.json").is_file()
    special, notes = _special_ids(source) if has_tokenizer else (None, [])
    ids = special.config_fields() if special else {}
    reference = build_model(source, attention=src_backend, **ids).to(dev)
    converted = build_model(source, attention=attention, **ids)
    # Same tensors, bit for bit: the conversion is a relabelling of the backend, never a numerical change.
    src_state, dst_state = reference.state_dict(), converted.state_dict()
    differing = [k for k in dst_state if not torch.equal(dst_state[k], src_state[k].cpu())]
    if differing:
        raise RunError(f"conversion changed tensor {differing[0]}; nothing written")
    probe_model = build_model(source, attention=dst_backend, **ids).to(dev)
    delta = _parity(reference, probe_model, dev, dtype, special)
    if not delta <= TOLERANCE[str(dtype).removeprefix('torch.')]:
        raise RunError(f"parity check failed: max |Δlogits| = {delta:.3g} > {TOLERANCE[str(dtype).removeprefix('torch.')]:g} between the "
                       f"source ({src_backend}) and converted ({dst_backend}) model; nothing written")

    save_checkpoint(converted, out, tokenizer_path=source.folder if has_tokenizer else None, force=force)
    tokenizer_files = [n for n in TOKENIZER_FILES if (out / n).is_file()]
    notes = [*source.notes, *notes]
    # Which flash parity this is: a CPU run compares SDPA with the reference maths, which says nothing about the
    # flash-attn kernel, so it must not be reported as a flash parity.
    flash_side = "flash" in (source.config.get("attention", "pytorch"), attention)
    flash_kernel = None if not flash_side else "checked" if real_flash else FLASH_NOT_CHECKED
    if flash_kernel == FLASH_NOT_CHECKED:
        notes.append(f"{FLASH_NOT_CHECKED}: the parity check compared {src_backend} with {dst_backend} (the same "
                     "maths); run the conversion on a GPU with flash-attn to check the kernel")
    if not has_tokenizer:
        notes.append("the source has no tokenizer.json; add one before fine-tuning (GLUE needs it)")
    report: dict[str, Any] = {
        "source": str(source.folder), "source_format": source.format,
        "source_attention": source.config.get("attention", "pytorch"), "target_attention": attention,
        "out": str(out), "head": source.head, "layout": converted.config.layout,
        "num_parameters": sum(p.numel() for p in converted.parameters()), "num_tensors": len(dst_state),
        "weights_bit_identical": True, "parity": {
            "probe": [PROBE_BATCH, min(PROBE_SEQ, converted.config.max_seq_length)], "device": str(dev),
            "dtype": str(dtype).removeprefix("torch."), "source_backend": src_backend,
            "converted_backend": dst_backend, "max_abs_delta_logits": delta, "tolerance": TOLERANCE[str(dtype).removeprefix('torch.')],
            "flash_kernel": flash_kernel},
        "special_ids": source.special.as_dict() if source.special else None,
        "tokenizer_files": tokenizer_files, "notes": notes, "seconds": round(time.perf_counter() - started, 3),
    }
    return report


def _special_ids(source: Any) -> tuple[Any, list[str]]:
    """The source tokenizer's special ids (they go into the written config.json). A cram config that names
    other ids is refused; an original's config is known to say pad 0 whatever its tokenizer says (recipe §3.3)."""
    special = special_ids(source.folder / "tokenizer.json")
    if source.format == "cram":
        check_config_ids(special, source.config, str(source.folder / "config.json"))
        return special, []
    stated = source.config.get("pad_token_id")
    if stated is not None and stated != special.pad:
        return special, [f"the original config says pad id {stated}; the tokenizer's <pad> is {special.pad}, "
                         "written to config.json"]
    return special, []


def _parity(a: torch.nn.Module, b: torch.nn.Module, dev: torch.device, dtype: torch.dtype, special: Any) -> float:
    """Max |Δlogits| over the real tokens of a seeded probe batch of ordinary tokens whose last row is half
    padding (pad and special ids from the source's tokenizer, else the config's pad id and cram's layout)."""
    config = a.config
    seq = min(PROBE_SEQ, config.max_seq_length)
    gen = torch.Generator().manual_seed(0)
    pad = special.pad if special else config.pad_token_id or 0
    reserved = set((special or CRAM_SPECIAL_IDS).all) | {pad}
    ordinary = torch.tensor([i for i in range(config.vocab_size) if i not in reserved])
    ids = ordinary[torch.randint(len(ordinary), (PROBE_BATCH, seq), generator=gen)]
    mask = torch.ones_like(ids)
    mask[-1, seq // 2:] = 0
    ids = ids.masked_fill(mask == 0, pad)
    ids, mask = ids.to(dev), mask.to(dev)
    with torch.no_grad(), torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32):
        la, lb = (m(input_ids=ids, attention_mask=mask).logits.float() for m in (a, b))
    real = mask.bool()
    if la.dim() == 2:  # classification logits [B, labels]
        real = real[:, 0]
    return float((la[real] - lb[real]).abs().max())
