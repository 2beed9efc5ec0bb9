"""Content digests: which weights a result was made with, independent of where the folder now lives."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file, read in 4 MiB chunks (a 24-hour model's weights are ~0.5 GB)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(chunk):
            h.update(block)
    return h.hexdigest()


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
"""A checkpoint's weight file, in the order cramcli/model/checkpoint.py reads them."""


def weights_sha256(checkpoint: Path) -> str | None:
    """Digest of a checkpoint folder's weight file: ties a result (GLUE) to these weights, wherever the folder
    moves, and a converted copy with bit-identical tensors to the same results. None when there is no weight file."""
    for name in WEIGHT_FILES:
        if (Path(checkpoint) / name).is_file():
            return file_sha256(Path(checkpoint) / name)
    return None
