"""What reading a checkpoint gives (`Source`), shared by cram's own format (model/checkpoint.py) and the original
cramming layouts (model/original.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cramcli.data.tokenizer import SpecialIds
from cramcli.model.errors import CheckpointError


@dataclass
class Source:
    """What `read_checkpoint` found: the config fields, where the weights are, the tokenizer's special ids."""

    folder: Path
    format: str
    """`cram`, `cramming-v1` or `cramming-v2`."""
    config: dict[str, Any]
    """CrammedBertConfig fields."""
    weights_file: Path
    head: str
    """The head the checkpoint was saved with (`mlm`, `cls`, `base`)."""
    special: SpecialIds | None
    """The ids of the tokenizer beside the weights; None when the folder has no tokenizer."""
    state: dict[str, torch.Tensor] | None = None
    """Original checkpoints only: the weights renamed to cram's names (cram's own load with from_pretrained)."""
    notes: list[str] = field(default_factory=list)


def check_finite(file: Path, tensors: Any) -> None:
    bad = [k for k, v in tensors if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise CheckpointError(f"{file}: tensor {bad[0]} holds NaN/inf values{more}; use an earlier checkpoint")
