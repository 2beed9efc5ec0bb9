"""The shard checksum of prepared data: xxh3_64 of a file's bytes, written `xxh3_64:HEX` in the manifest.
Fast enough (several GB/s) to re-read a whole corpus before training."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import xxhash


def new_checksum() -> Any:
    return xxhash.xxh3_64()


def checksum_text(hasher: Any) -> str:
    return f"xxh3_64:{hasher.hexdigest()}"


def shard_checksum(file: Path, on_bytes: Callable[[int], object] | None = None, chunk: int = 8 << 20) -> str:
    """The checksum of `file`, read in chunks (`on_bytes(n)` after each)."""
    hasher = new_checksum()
    with open(file, "rb") as handle:
        while block := handle.read(chunk):
            hasher.update(block)
            if on_bytes is not None:
                on_bytes(len(block))
    return checksum_text(hasher)
