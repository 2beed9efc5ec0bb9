"""Exact and near-duplicate removal over normalised documents, with compact state.

Exact: a 64-bit BLAKE2b digest of the text. Near: a `datasketch` MinHash signature of the word shingles,
cut into `b` bands of `r` rows (the banding that minimises the weighted false positive and negative rates at
the threshold, as datasketch's MinHashLSH chooses it); a document is a near-duplicate when any band of its
signature equals the same band of an earlier kept document, i.e. when MinHash LSH would return a candidate.

State: only 64-bit keys (one per kept document for exact dedup, `b` per document for near dedup; b = 9 at
128 permutations and threshold 0.8), kept in a sorted numpy array plus a small insertion buffer. That is
8·(1+b) bytes per kept document (80 B: 2 GB for the 25 M documents of the 24-hour budget), where
datasketch's in-memory MinHashLSH index takes ~3 kB per document (75 GB). Signatures are computed in the
worker processes; only the keys live in the main process.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
from datasketch import MinHash

from cramcli.budgets import DedupBudget

_SEED = 1
_SHINGLE_BATCH = 2048


def exact_key(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def shingles(text: str, size: int) -> list[bytes]:
    """Word `size`-grams (a document shorter than that is one shingle)."""
    words = text.split()
    if len(words) <= size:
        return [" ".join(words).encode("utf-8")]
    return [" ".join(words[i : i + size]).encode("utf-8") for i in range(len(words) - size + 1)]


def signature(text: str, budget: DedupBudget) -> np.ndarray:
    """MinHash signature (uint32[num_perm]) of the document's word shingles."""
    mh = MinHash(num_perm=budget.num_perm, seed=_SEED, scheme="affine32")
    grams = shingles(text, budget.shingle_words)
    # update_batch builds a [num_perm, len(batch)] uint64 matrix: feed long documents in slices.
    for start in range(0, len(grams), _SHINGLE_BATCH):
        mh.update_batch(grams[start : start + _SHINGLE_BATCH])
    return mh.hashvalues


@lru_cache(maxsize=16)
def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) minimising ½·false-positive + ½·false-negative area, as datasketch does."""
    best, best_error = (1, num_perm), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            lo = np.linspace(0.0, threshold, 200)
            hi = np.linspace(threshold, 1.0, 200)
            fp = np.trapezoid(1 - (1 - lo**r) ** b, lo)
            fn = np.trapezoid((1 - hi**r) ** b, hi)
            if 0.5 * fp + 0.5 * fn < best_error:
                best, best_error = (b, r), 0.5 * fp + 0.5 * fn
    return best


def band_keys(sig: np.ndarray, bands: int, rows: int) -> list[int]:
    """One 64-bit key per band; the band index is hashed in, so all bands share one key set."""
    data = np.ascontiguousarray(sig[: bands * rows]).reshape(bands, rows)
    return [
        int.from_bytes(hashlib.blake2b(band.tobytes(), digest_size=8, salt=i.to_bytes(8, "little")).digest(), "little")
        for i, band in enumerate(data)
    ]


class KeySet:
    """A set of 64-bit keys: a sorted uint64 array plus a Python set buffer merged in when it grows
    (geometric merges, so inserting n keys costs O(n log n) and memory is ~8 bytes per key)."""

    def __init__(self) -> None:
        self.sorted = np.empty(0, dtype=np.uint64)
        self.buffer: set[int] = set()

    def __len__(self) -> int:
        return len(self.sorted) + len(self.buffer)

    def contains_any(self, keys: list[int]) -> bool:
        if any(k in self.buffer for k in keys):
            return True
        if not len(self.sorted):
            return False
        probe = np.array(keys, dtype=np.uint64)
        pos = np.minimum(np.searchsorted(self.sorted, probe), len(self.sorted) - 1)
        return bool((self.sorted[pos] == probe).any())

    def add(self, keys: list[int]) -> None:
        self.buffer.update(keys)
        if len(self.buffer) > max(1 << 16, len(self.sorted) // 4):
            merged = np.concatenate([self.sorted, np.fromiter(self.buffer, dtype=np.uint64, count=len(self.buffer))])
            merged.sort()
            self.sorted, self.buffer = merged, set()


class Deduplicator:
    """Decides, in stream order, whether each document repeats an earlier kept one."""

    def __init__(self, budget: DedupBudget) -> None:
        self.budget = budget
        self.exact = KeySet()
        self.near = KeySet()
        self.bands, self.rows = lsh_bands(budget.near_threshold, budget.num_perm)

    def check(self, key: int, sig: np.ndarray | None) -> str | None:
        """`exact`, `near` or None (kept, and remembered)."""
        if self.budget.exact and self.exact.contains_any([key]):
            return "exact"
        if self.budget.near and sig is not None:
            bands = band_keys(sig, self.bands, self.rows)
            if self.near.contains_any(bands):
                return "near"
            self.near.add(bands)
        if self.budget.exact:
            self.exact.add([key])
        return None
