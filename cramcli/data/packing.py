"""Packing token streams into fixed-length rows, ordering the rows, writing memory-mappable shards.

Every document's ids end with the `<sep>` the post-processor appends; documents are concatenated and cut
into `seq_length` rows, so a document may continue in the next row and `<sep>` is the only separator (as
in the recipe; no `<cls>`, no padding). Only the final partial row of the whole corpus is dropped (the
original dropped one per 1,024-document batch). Rows go to a temporary file as they are made; ordering then
needs one sort key per row (a few bytes per row, never the rows themselves) and writes the shards by
gathering rows from that file in small chunks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from cramcli.data.checksum import checksum_text, new_checksum
from cramcli.utils import disk

ORDERINGS = ("sentence-ends", "random", "unigram", "none")
SHARD_ROWS = 1 << 20
"""Rows per output shard (256 MiB at 128 uint16 tokens per row)."""
_GATHER_ROWS = 8192
"""Rows gathered per step while writing shards; bounds the file pages touched at once."""


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.int32)


class Packer:
    """Appends documents' ids to a rolling buffer and writes every complete row to `handle`."""

    def __init__(self, handle: BinaryIO, seq_length: int, dtype: np.dtype, dot_id: int | None) -> None:
        self.handle, self.seq_length, self.dtype, self.dot_id = handle, seq_length, dtype, dot_id
        self.buffer: list[int] = []
        self.num_rows = 0
        self.num_tokens = 0
        self.sentence_ends: list[np.ndarray] = []
        """Count of the "." token per row, in row order (the recipe's ordering key)."""

    def add(self, ids: list[int]) -> None:
        self.buffer.extend(ids)
        if len(self.buffer) >= 1024 * self.seq_length:
            self._flush()

    def _flush(self) -> None:
        full = len(self.buffer) // self.seq_length * self.seq_length
        if not full:
            return
        rows = np.asarray(self.buffer[:full], dtype=self.dtype).reshape(-1, self.seq_length)
        del self.buffer[:full]
        self.handle.write(rows.tobytes())
        self.num_rows += len(rows)
        self.num_tokens += rows.size
        dots = (rows == self.dot_id).sum(axis=1) if self.dot_id is not None else np.zeros(len(rows))
        self.sentence_ends.append(dots.astype(np.uint16))

    def finish(self) -> int:
        """Write the last complete rows; returns the number of tokens dropped in the final partial row."""
        self._flush()
        dropped = len(self.buffer)
        self.buffer = []
        return dropped


def _read_rows(path: Path, dtype: np.dtype, seq_length: int, num_rows: int) -> np.memmap:
    return np.memmap(path, dtype=dtype, mode="r", shape=(num_rows, seq_length))


def unigram_scores(path: Path, dtype: np.dtype, seq_length: int, num_rows: int, vocab_size: int) -> np.ndarray:
    """Mean log2 of the add-one-smoothed corpus unigram probability of each row's tokens (low = rare)."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for start in range(0, num_rows, _GATHER_ROWS):
        rows = np.array(_read_rows(path, dtype, seq_length, num_rows)[start : start + _GATHER_ROWS])
        counts += np.bincount(rows.ravel(), minlength=vocab_size)[:vocab_size]
    logp = np.log2((counts + 1) / (counts.sum() + vocab_size)).astype(np.float32)
    scores = np.empty(num_rows, dtype=np.float32)
    for start in range(0, num_rows, _GATHER_ROWS):
        rows = np.array(_read_rows(path, dtype, seq_length, num_rows)[start : start + _GATHER_ROWS])
        scores[start : start + len(rows)] = logp[rows].mean(axis=1)
    return scores


def row_order(ordering: str, num_rows: int, seed: int, scores: np.ndarray | None) -> np.ndarray:
    """Row permutation: `sentence-ends` → highest score ("." count) first; `unigram` → lowest score (rarest)
    first; `random`; `none` = as made. Sorts are stable, so ties keep their reading order."""
    if ordering == "none":
        return np.arange(num_rows)
    if ordering == "random":
        return np.random.default_rng(seed).permutation(num_rows)
    if scores is None:
        raise ValueError(f"ordering {ordering!r} needs one score per row")
    if ordering == "sentence-ends":
        return np.argsort(-scores.astype(np.int64), kind="stable")
    if ordering == "unigram":
        return np.argsort(scores, kind="stable")
    raise ValueError(f"unknown ordering {ordering!r}")


class ShardWriter:
    """Writes rows, in the order given, into `tokens_NNNNN.bin` shards of SHARD_ROWS rows each, hashing every
    token byte on the way: the data hash of all rows, and each shard's checksum,
    which `cram pretrain` and `cram prepare-data --verify` check the files against (data/checksum.py).

    `expected_rows` (when known) lets it warn through `warn` before a shard that will not fit on the disk.
    `prefix` names the files (`heldout` for the held-out split's shards)."""

    def __init__(self, out_dir: Path, on_rows: Callable[[int], None] | None = None, *,
                 expected_rows: int | None = None, warn: Callable[[str], object] | None = None,
                 prefix: str = "tokens") -> None:
        self.out_dir, self.on_rows, self.prefix = out_dir, on_rows, prefix
        self.expected_rows, self.warn = expected_rows, warn
        self.shards: list[dict[str, Any]] = []
        self.digest = hashlib.sha256()
        self._handle: BinaryIO | None = None
        self._checksum = new_checksum()
        self._written = 0

    def write(self, rows: np.ndarray) -> None:
        while len(rows):
            if self._handle is None or self.shards[-1]["rows"] == SHARD_ROWS:
                self._next_shard(rows[0].nbytes)
            assert self._handle is not None
            take = SHARD_ROWS - self.shards[-1]["rows"]
            data = rows[:take].tobytes()
            try:
                self._handle.write(data)
            except OSError as exc:
                raise disk.named(exc, self.out_dir / self.shards[-1]["file"]) from None
            self.digest.update(data)
            self._checksum.update(data)
            self.shards[-1]["rows"] += len(rows[:take])
            self._written += len(rows[:take])
            if self.on_rows:
                self.on_rows(len(rows[:take]))
            rows = rows[take:]

    def _next_shard(self, row_bytes: int) -> None:
        self._close_shard()
        name = f"{self.prefix}_{len(self.shards):05d}.bin"
        if self.warn is not None and self.expected_rows is not None:
            rows = min(SHARD_ROWS, max(self.expected_rows - self._written, 0))
            low = disk.low_space_warning(self.out_dir, rows * row_bytes, f"shard {name}")
            if low:
                self.warn(low)
        self._handle = open(self.out_dir / name, "wb")  # noqa: SIM115 (kept open across write() calls)
        self.shards.append({"file": name, "rows": 0})

    def _close_shard(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            try:
                handle.close()  # flushes the buffered tail: a full disk may show here first
            except OSError as exc:
                raise disk.named(exc, self.out_dir / self.shards[-1]["file"]) from None
            self.shards[-1]["checksum"] = checksum_text(self._checksum)
            self._checksum = new_checksum()

    def close(self) -> tuple[list[dict[str, Any]], str]:
        """The shard list (file, rows, checksum) and the data hash."""
        self._close_shard()
        return self.shards, self.digest.hexdigest()[:16]


def write_shards(
    src: Path,
    order: np.ndarray,
    dtype: np.dtype,
    seq_length: int,
    num_rows: int,
    out_dir: Path,
    on_rows: Callable[[int], None] | None = None,
    warn: Callable[[str], object] | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """Gather rows of `src` in `order` into shards; returns the shard list and the data hash."""
    writer = ShardWriter(out_dir, on_rows, expected_rows=len(order), warn=warn)
    for start in range(0, len(order), _GATHER_ROWS):
        # A fresh map per chunk releases the pages read so far, keeping RSS flat in corpus size.
        writer.write(np.asarray(_read_rows(src, dtype, seq_length, num_rows)[order[start : start + _GATHER_ROWS]]))
    return writer.close()
