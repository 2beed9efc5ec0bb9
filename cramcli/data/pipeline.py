"""The prepare-data pipeline, phase by phase, writing into a work folder the stage later renames.

1. clean: stream documents → normalise, drop empty/short, exact + near dedup (worker processes do the
   per-document work; the main process keeps the dedup state) → a spool file of kept, normalised text.
2. tokenizer: train WordPiece on the spool (or use the given one).
3. pack: tokenize the spool in batches through the Rust tokenizer (parallel), apply the compressibility
   filter, pack into fixed rows → a temporary rows file.
4. order: compute the ordering key per row, cap at max_rows, write the shards.
Memory stays flat in corpus size: documents are streamed, the spool and rows live on disk, and the state
that grows is the dedup index (per document) and one sort key per row.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from cramcli.budgets import DataBudget
from cramcli.data import dedup, filters, packing
from cramcli.data.normalize import build_normalizer
from cramcli.data.prepared import FORMAT
from cramcli.data.sources import Source
from cramcli.data.tokenizer import batched, special_ids, tokenizer_hash, train_tokenizer
from cramcli.utils.errors import UsageError

CODE_VERSION = 1
"""Bump when a code change alters what a given budget + source produces (it is part of the content hash)."""
_CLEAN_BATCH = 256
_ENCODE_BATCH = 1024
_ENCODE_CHARS = 1 << 20
"""Characters per encode_batch call: the Encoding objects cost ~100 bytes per token, so a batch of long
documents must be capped by size, not count."""
_CLEAN_CHARS = 1 << 20
SPOOL, ROWS = "spool.jsonl", "rows.tmp"

Progress = Callable[[str, int | None], Callable[[int], None]]
"""`progress(phase, total)` starts a phase's bar and returns `advance(n)`."""


def content_hash(budget: DataBudget, source_identity: dict[str, Any], tokenizer_id: str | None) -> str:
    """Hash of everything that determines the prepared rows: budget, source identity, tokenizer, code format."""
    key = {
        "format": FORMAT,
        "code": CODE_VERSION,
        "budget": budget.model_dump(mode="json"),
        "source": source_identity,
        "tokenizer": tokenizer_id,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Counts:
    documents_read: int = 0
    empty: int = 0
    too_short: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    compressibility: int = 0
    documents_kept: int = 0
    characters_kept: int = 0
    rows: int = 0
    tokens: int = 0
    tokens_dropped_tail: int = 0
    rows_dropped_by_cap: int = 0


@dataclass
class Result:
    counts: Counts = field(default_factory=Counts)
    timings: dict[str, float] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------
# phase 1: clean (runs in worker processes)

_worker: dict[str, Any] = {}


def _init_worker(budget_json: str, in_pool: bool = False) -> None:
    if in_pool:
        # The main process handles Ctrl-C and stops the pool; workers stay quiet instead of each printing
        # a traceback, and pool.terminate()'s SIGTERM simply ends them.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    budget = DataBudget.model_validate_json(budget_json)
    _worker["budget"] = budget
    _worker["normalizer"] = build_normalizer(budget.normalization)


def _clean_batch(texts: list[str]) -> list[tuple[str, str | None, int, np.ndarray | None]]:
    """(normalised text, drop reason, exact key, MinHash signature) per document."""
    budget: DataBudget = _worker["budget"]
    normalize = _worker["normalizer"].normalize_str
    out = []
    for raw in texts:
        text = normalize(raw).strip()
        reason = filters.drop_reason(text, budget.filter)
        if reason:
            out.append(("", reason, 0, None))
            continue
        key = dedup.exact_key(text)
        sig = dedup.signature(text, budget.dedup) if budget.dedup.near else None
        out.append((text, None, key, sig))
    return out


def _cleaned(docs: Iterator[str], budget: DataBudget, workers: int) -> Iterator[tuple[str, str | None, int, Any]]:
    """Cleaned documents in source order; at most 2 batches per worker in flight (bounded memory)."""
    batches = batched(docs, _CLEAN_BATCH, max_chars=_CLEAN_CHARS)
    if workers <= 1:
        _init_worker(budget.model_dump_json())
        for batch in batches:
            yield from _clean_batch(batch)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(workers, initializer=_init_worker, initargs=(budget.model_dump_json(), True)) as pool:
        pending: deque[Any] = deque()
        for batch in batches:
            pending.append(pool.apply_async(_clean_batch, (batch,)))
            if len(pending) >= 2 * workers:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()


def clean(source: Source, budget: DataBudget, workdir: Path, workers: int, progress: Progress, counts: Counts) -> None:
    advance = progress("read, normalise, dedup", budget.max_documents if budget.source == "embedded" else None)
    deduper = dedup.Deduplicator(budget.dedup)
    docs = islice(source.documents(), budget.max_documents)
    with open(workdir / SPOOL, "w", encoding="utf-8") as spool:
        for text, reason, key, sig in _cleaned(docs, budget, workers):
            counts.documents_read += 1
            advance(1)
            if reason:
                setattr(counts, reason, getattr(counts, reason) + 1)
                continue
            dup = deduper.check(key, sig)
            if dup == "exact":
                counts.exact_duplicates += 1
            elif dup == "near":
                counts.near_duplicates += 1
            else:
                counts.documents_kept += 1
                counts.characters_kept += len(text)
                spool.write(json.dumps(text) + "\n")


def spool_texts(workdir: Path, limit: int | None = None) -> Iterator[str]:
    with open(workdir / SPOOL, encoding="utf-8") as spool:
        for line in islice(spool, limit):
            yield json.loads(line)


# ----------------------------------------------------------------------------------------------------------
# phases 2-4


def prepare(
    source: Source,
    budget: DataBudget,
    tokenizer: Tokenizer | None,
    workdir: Path,
    *,
    workers: int,
    progress: Progress,
    chash: str,
) -> Result:
    """Run all phases into `workdir`; leaves manifest.json, tokenizer.json and the shards there."""
    result = Result()
    counts = result.counts
    t0 = time.perf_counter()
    clean(source, budget, workdir, workers, progress, counts)
    result.timings["clean"] = time.perf_counter() - t0
    _check_not_empty(source, counts)

    t0 = time.perf_counter()
    if tokenizer is None:
        limit = min(budget.tokenizer.max_training_documents, counts.documents_kept)
        advance = progress("train tokenizer", limit)
        tokenizer = train_tokenizer(
            _counted(spool_texts(workdir, limit), advance), budget.tokenizer, budget.normalization,
            length=limit, what=lambda: f"the {counts.documents_kept} kept documents",
        )
        trained = True
    else:
        trained = False
    tokenizer.save(str(workdir / "tokenizer.json"))
    result.timings["tokenizer"] = time.perf_counter() - t0

    vocab_size = tokenizer.get_vocab_size()
    dtype = packing.token_dtype(vocab_size)
    t0 = time.perf_counter()
    packer, doc_lengths, ratios = _pack(workdir, tokenizer, budget, dtype, counts, progress)
    result.timings["tokenize_pack"] = time.perf_counter() - t0
    if counts.rows == 0:
        raise UsageError(
            f"--source {source.spec}: the corpus filters down to nothing: {_summary(counts)};"
            " use more or longer documents, or relax filter.max_tokens_per_char in the data budget"
        )

    t0 = time.perf_counter()
    advance = progress("order and write shards", min(counts.rows, budget.max_rows))
    sentence_ends = np.concatenate(packer.sentence_ends)
    scores: np.ndarray | None = None
    if budget.ordering == "sentence-ends":
        scores = sentence_ends
    elif budget.ordering == "unigram":
        scores = packing.unigram_scores(workdir / ROWS, dtype, budget.seq_length, counts.rows, vocab_size)
    order = packing.row_order(budget.ordering, counts.rows, budget.seed, scores)[: budget.max_rows]
    counts.rows_dropped_by_cap = counts.rows - len(order)
    shards, data_hash = packing.write_shards(
        workdir / ROWS, order, dtype, budget.seq_length, counts.rows, workdir, advance
    )
    (workdir / ROWS).unlink()
    (workdir / SPOOL).unlink()
    result.timings["order_write"] = time.perf_counter() - t0

    kept_ends = sentence_ends[order]
    result.manifest = {
        "format": FORMAT,
        "content_hash": chash,
        "data_hash": data_hash,
        "seq_length": budget.seq_length,
        "vocab_size": vocab_size,
        "dtype": dtype.name,
        "num_rows": int(len(order)),
        "num_tokens": int(len(order) * budget.seq_length),
        "shards": shards,
        "tokenizer": "tokenizer.json",
        "tokenizer_hash": tokenizer_hash(tokenizer),
        "tokenizer_trained": trained,
        "special_tokens": special_ids(tokenizer).tokens,
        "source": {"spec": source.spec, **source.identity(), **asdict(source.stats)},
        "budget": budget.model_dump(mode="json"),
        "counts": asdict(counts),
        "removed_share": _removed_share(counts),
        "lengths": _length_stats(doc_lengths, ratios),
        "ordering": {
            "method": budget.ordering,
            "sentence_ends_per_row_mean": float(kept_ends.mean()),
            "sentence_ends_first_rows_mean": float(kept_ends[:1000].mean()),
            "sentence_ends_last_rows_mean": float(kept_ends[-1000:].mean()),
            **({"unigram_score_first": float(scores[order[0]]), "unigram_score_last": float(scores[order[-1]])}
               if budget.ordering == "unigram" and scores is not None else {}),
        },
        "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
    }
    return result


def _counted(texts: Iterator[str], advance: Callable[[int], None]) -> Iterator[str]:
    for text in texts:
        advance(1)
        yield text


def _pack(
    workdir: Path, tokenizer: Tokenizer, budget: DataBudget, dtype: np.dtype, counts: Counts, progress: Progress
) -> tuple[packing.Packer, np.ndarray, np.ndarray]:
    advance = progress("tokenize and pack", counts.documents_kept)
    dot_id = tokenizer.token_to_id(".")
    sep_id = special_ids(tokenizer).sep
    # Histograms, not lists, keep the length statistics O(1) in corpus size.
    doc_lengths = np.zeros(33, dtype=np.int64)  # log2 buckets of tokens per document
    ratios = np.zeros(101, dtype=np.int64)  # tokens per character, in steps of 0.01
    with open(workdir / ROWS, "wb") as handle:
        packer = packing.Packer(handle, budget.seq_length, dtype, dot_id)
        for batch in batched(spool_texts(workdir), _ENCODE_BATCH, max_chars=_ENCODE_CHARS):
            for text, enc in zip(batch, tokenizer.encode_batch(batch), strict=True):
                ids = enc.ids
                num_tokens = len(ids) - (1 if ids and ids[-1] == sep_id else 0)
                ratio = num_tokens / max(len(text), 1)
                ratios[min(int(ratio * 100), 100)] += 1
                if filters.compresses_badly(num_tokens, len(text), budget.filter):
                    counts.compressibility += 1
                    counts.characters_kept -= len(text)
                    continue
                doc_lengths[min(max(num_tokens, 1).bit_length() - 1, 32)] += 1
                packer.add(ids)
            advance(len(batch))
        counts.tokens_dropped_tail = packer.finish()
    counts.rows, counts.tokens = packer.num_rows, packer.num_tokens
    counts.documents_kept -= counts.compressibility
    return packer, doc_lengths, ratios


def _check_not_empty(source: Source, counts: Counts) -> None:
    bad = source.stats.bad_line_examples
    if counts.documents_read == 0:
        detail = f"; all {source.stats.bad_lines} lines were bad, e.g. {bad[0]}" if bad else ""
        raise UsageError(f"--source {source.spec}: no documents found{detail}")
    if counts.documents_kept == 0:
        raise UsageError(f"--source {source.spec}: the corpus filters down to nothing: {_summary(counts)}")


def _summary(counts: Counts) -> str:
    return (
        f"{counts.documents_read} read, {counts.empty} empty, {counts.too_short} too short,"
        f" {counts.exact_duplicates} exact and {counts.near_duplicates} near duplicates,"
        f" {counts.compressibility} failed the compressibility filter"
    )


def _removed_share(counts: Counts) -> dict[str, float]:
    read = max(counts.documents_read, 1)
    names = ("empty", "too_short", "exact_duplicates", "near_duplicates", "compressibility")
    return {name: round(getattr(counts, name) / read, 6) for name in names}


def _length_stats(doc_lengths: np.ndarray, ratios: np.ndarray) -> dict[str, Any]:
    def quantile(hist: np.ndarray, q: float) -> int:
        return int(np.searchsorted(np.cumsum(hist), q * hist.sum()))

    return {
        "doc_tokens_log2_histogram": {f"{1 << i}+": int(n) for i, n in enumerate(doc_lengths) if n},
        "doc_tokens_median_bucket": 1 << quantile(doc_lengths, 0.5),
        "tokens_per_char_p10": quantile(ratios, 0.1) / 100,
        "tokens_per_char_median": quantile(ratios, 0.5) / 100,
        "tokens_per_char_p90": quantile(ratios, 0.9) / 100,
    }


def cpu_workers(requested: int) -> int:
    """`--workers 0` = every core this process may use."""
    if requested > 0:
        return requested
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
