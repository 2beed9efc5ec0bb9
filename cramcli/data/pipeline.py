"""The prepare-data pipeline, phase by phase, writing into a work folder the stage later renames.

1. clean: stream documents → normalise, drop empty/short (and, with `filter.tokenizer`, those that
   compress badly as raw text), exact + near dedup (worker processes do the per-document work; the main
   process keeps the dedup state) → a spool file of kept, normalised text, plus the spool offset of every
   document read (-1 for dropped ones).
   shuffle: rewrite the spool in the order of a seeded permutation of all documents read (`shuffle_spool`).
2. tokenizer: train WordPiece on the spool (or use the given one).
3. pack: tokenize the spool in batches through the Rust tokenizer (parallel), apply the compressibility
   filter (unless `filter.tokenizer` already did), pack into fixed rows → a temporary rows file.
   Documents chosen for the held-out split (`validation`) are packed into rows of their own, so a held-out
   document is held out whole and no training row holds any of its text.
4. order: compute the ordering key per row, cap at max_rows, write the shards (and the held-out shards).
Memory stays flat in corpus size: documents are streamed, the spool and rows live on disk, and the state
that grows is the dedup index and the shuffle permutation (per document) and one sort key per row.
"""

from __future__ import annotations

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
from cramcli.data import dedup, filters, packing, prepared
from cramcli.data.normalize import build_normalizer
from cramcli.data.sources import Source
from cramcli.data.tokenizer import batched, special_ids, tokenizer_hash, train_tokenizer
from cramcli.utils import disk
from cramcli.utils.errors import UsageError

CODE_VERSION = 3
"""Bump when a code change alters what a given budget + source produces (it is part of the content hash)."""
_CLEAN_BATCH = 256
_ENCODE_BATCH = 1024
_ENCODE_CHARS = 1 << 20
"""Characters per encode_batch call: the Encoding objects cost ~100 bytes per token, so a batch of long
documents must be capped by size, not count."""
_CLEAN_CHARS = 1 << 20
SPOOL, ROWS, OFFSETS, HELDOUT = "spool.jsonl", "rows.tmp", "offsets.tmp", "heldout.tmp"
_SHUFFLE_CHUNK = 1 << 16

Progress = Callable[[str, int | None], Callable[[int], None]]
"""`progress(phase, total)` starts a phase's bar and returns `advance(n)`."""


def content_hash(
    budget: DataBudget, source_identity: dict[str, Any], tokenizer_id: str | None, filter_tokenizer_id: str | None = None
) -> str:
    """What determines the prepared rows: budget, source identity, tokenizer (and the filter tokenizer's content,
    when the budget names one), and this pipeline's code version."""
    return prepared.content_hash(CODE_VERSION, {"budget": budget.model_dump(mode="json"), "source": source_identity,
                                                "tokenizer": tokenizer_id, "filter_tokenizer": filter_tokenizer_id})


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
    heldout_documents: int = 0
    heldout_rows: int = 0


@dataclass
class Result:
    counts: Counts = field(default_factory=Counts)
    timings: dict[str, float] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------
# phase 1: clean (runs in worker processes)

_worker: dict[str, Any] = {}


def _init_worker(budget_json: str, filter_json: str | None = None, in_pool: bool = False) -> None:
    if in_pool:
        # The main process handles Ctrl-C and stops the pool; workers stay quiet instead of each printing
        # a traceback, and pool.terminate()'s SIGTERM simply ends them.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    budget = DataBudget.model_validate_json(budget_json)
    _worker["budget"] = budget
    _worker["normalizer"] = build_normalizer(budget.normalization)
    _worker["filter"] = Tokenizer.from_str(filter_json) if filter_json and budget.filter.enabled else None


def _clean_batch(texts: list[str]) -> list[tuple[str, str | None, int, np.ndarray | None]]:
    """(normalised text, drop reason, exact key, MinHash signature) per document."""
    budget: DataBudget = _worker["budget"]
    normalize = _worker["normalizer"].normalize_str
    raw_counts = filters.raw_tokens(_worker["filter"], texts) if _worker["filter"] else None
    out = []
    for i, raw in enumerate(texts):
        text = normalize(raw).strip()
        reason = filters.drop_reason(text, budget.filter)
        if not reason and raw_counts and filters.compresses_badly(raw_counts[i], len(raw), budget.filter):
            reason = "compressibility"
        if reason:
            out.append(("", reason, 0, None))
            continue
        key = dedup.exact_key(text)
        sig = dedup.signature(text, budget.dedup) if budget.dedup.near else None
        out.append((text, None, key, sig))
    return out


def _cleaned(
    docs: Iterator[str], budget: DataBudget, workers: int, filter_json: str | None
) -> Iterator[tuple[str, str | None, int, Any]]:
    """Cleaned documents in source order; at most 2 batches per worker in flight (bounded memory)."""
    batches = batched(docs, _CLEAN_BATCH, max_chars=_CLEAN_CHARS)
    if workers <= 1:
        _init_worker(budget.model_dump_json(), filter_json)
        for batch in batches:
            yield from _clean_batch(batch)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(workers, initializer=_init_worker, initargs=(budget.model_dump_json(), filter_json, True)) as pool:
        pending: deque[Any] = deque()
        for batch in batches:
            pending.append(pool.apply_async(_clean_batch, (batch,)))
            if len(pending) >= 2 * workers:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()


def clean(
    source: Source,
    budget: DataBudget,
    workdir: Path,
    workers: int,
    progress: Progress,
    counts: Counts,
    filter_tokenizer: Tokenizer | None = None,
) -> None:
    """Spool the kept documents (one JSON string per line) and record every read document's spool offset."""
    advance = progress("read, normalise, dedup", budget.max_documents if budget.source == "embedded" else None)
    deduper = dedup.Deduplicator(budget.dedup)
    docs = islice(source.documents(), budget.max_documents)
    filter_json = filter_tokenizer.to_str() if filter_tokenizer is not None else None
    offsets: list[int] = []
    position = 0
    with open(workdir / SPOOL, "wb") as spool, open(workdir / OFFSETS, "wb") as offsets_file:
        for text, reason, key, sig in _cleaned(docs, budget, workers, filter_json):
            counts.documents_read += 1
            advance(1)
            dup = None if reason else deduper.check(key, sig)
            if reason:
                setattr(counts, reason, getattr(counts, reason) + 1)
            elif dup == "exact":
                counts.exact_duplicates += 1
            elif dup == "near":
                counts.near_duplicates += 1
            if reason or dup:
                offsets.append(-1)
            else:
                counts.documents_kept += 1
                counts.characters_kept += len(text)
                line = (json.dumps(text) + "\n").encode()  # ASCII-escaped JSON: one line per document
                offsets.append(position)
                spool.write(line)
                position += len(line)
            if len(offsets) == _SHUFFLE_CHUNK:
                offsets_file.write(np.asarray(offsets, dtype=np.int64).tobytes())
                offsets.clear()
        offsets_file.write(np.asarray(offsets, dtype=np.int64).tobytes())


def shuffle_spool(workdir: Path, documents_read: int, seed: int, progress: Progress) -> None:
    """Rewrite the spool in the order `np.random.default_rng(seed).permutation(documents_read)` puts the read
    documents, leaving out the dropped ones: exactly the order `datasets.Dataset.shuffle(seed)` of the raw
    documents followed by per-document filters gives (the original's shuffle, seed 89). Costs the permutation
    (8 bytes per document read) in memory; the offsets stay on disk, the text is copied line by line."""
    advance = progress("shuffle documents", documents_read)
    order = np.random.default_rng(seed).permutation(documents_read)
    offsets = np.memmap(workdir / OFFSETS, dtype=np.int64, mode="r", shape=(documents_read,))
    shuffled = workdir / (SPOOL + ".shuffled")
    with open(workdir / SPOOL, "rb") as src, open(shuffled, "wb") as dst:
        for start in range(0, documents_read, _SHUFFLE_CHUNK):
            for offset in offsets[order[start : start + _SHUFFLE_CHUNK]].tolist():
                if offset >= 0:
                    src.seek(offset)
                    dst.write(src.readline())
            advance(min(_SHUFFLE_CHUNK, documents_read - start))
    del offsets
    os.replace(shuffled, workdir / SPOOL)


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
    filter_tokenizer: Tokenizer | None = None,
    warn: Callable[[str], object] | None = None,
) -> Result:
    """Run all phases into `workdir`; leaves manifest.json, tokenizer.json and the shards there. `warn` hears
    of a shard that will not fit on the disk before it is written."""
    result = Result()
    counts = result.counts
    t0 = time.perf_counter()
    clean(source, budget, workdir, workers, progress, counts, filter_tokenizer)
    result.timings["clean"] = time.perf_counter() - t0
    _check_not_empty(source, counts)
    if budget.shuffle:
        t0 = time.perf_counter()
        shuffle_spool(workdir, counts.documents_read, budget.seed, progress)
        result.timings["shuffle"] = time.perf_counter() - t0
    (workdir / OFFSETS).unlink()

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
    with disk.os_errors(workdir / "tokenizer.json"):
        tokenizer.save(str(workdir / "tokenizer.json"))
    result.timings["tokenizer"] = time.perf_counter() - t0

    vocab_size = tokenizer.get_vocab_size()
    dtype = packing.token_dtype(vocab_size)
    t0 = time.perf_counter()
    raw_filtered = filter_tokenizer is not None
    packer, doc_lengths, ratios = _pack(workdir, tokenizer, budget, dtype, counts, progress, raw_filtered)
    heldout = _write_heldout(workdir, budget, dtype, counts)
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
        workdir / ROWS, order, dtype, budget.seq_length, counts.rows, workdir, advance, warn
    )
    (workdir / ROWS).unlink()
    (workdir / SPOOL).unlink()
    result.timings["order_write"] = time.perf_counter() - t0

    kept_ends = sentence_ends[order]
    result.manifest = prepared.new_manifest(
        content_hash=chash, data_hash=data_hash, seq_length=budget.seq_length, vocab_size=vocab_size,
        num_rows=int(len(order)), shards=shards, tokenizer_hash=tokenizer_hash(tokenizer),
        special_tokens=special_ids(tokenizer).tokens,
        source={"spec": source.spec, **source.identity(), **asdict(source.stats)},
        budget=budget.model_dump(mode="json"),
        tokenizer_trained=trained,
        heldout=heldout,
        filter_tokenizer=(
            {"spec": budget.filter.tokenizer, "hash": tokenizer_hash(filter_tokenizer)} if filter_tokenizer else None
        ),
        shuffled={"seed": budget.seed, "documents": counts.documents_read} if budget.shuffle else None,
        counts=asdict(counts),
        removed_share=_removed_share(counts),
        lengths=_length_stats(doc_lengths, ratios),
        ordering={
            "method": budget.ordering,
            "sentence_ends_per_row_mean": float(kept_ends.mean()),
            "sentence_ends_first_rows_mean": float(kept_ends[:1000].mean()),
            "sentence_ends_last_rows_mean": float(kept_ends[-1000:].mean()),
            **({"unigram_score_first": float(scores[order[0]]), "unigram_score_last": float(scores[order[-1]])}
               if budget.ordering == "unigram" and scores is not None else {}),
        },
        timings_s={k: round(v, 3) for k, v in result.timings.items()},
    )
    return result


def _counted(texts: Iterator[str], advance: Callable[[int], None]) -> Iterator[str]:
    for text in texts:
        advance(1)
        yield text


def _pack(
    workdir: Path,
    tokenizer: Tokenizer,
    budget: DataBudget,
    dtype: np.dtype,
    counts: Counts,
    progress: Progress,
    raw_filtered: bool,
) -> tuple[packing.Packer, np.ndarray, np.ndarray]:
    """Tokenize and pack the spool; the compressibility filter runs here unless the filter tokenizer already
    applied it to the raw text in phase 1."""
    advance = progress("tokenize and pack", counts.documents_kept)
    dot_id = tokenizer.token_to_id(".")
    sep_id = special_ids(tokenizer).sep
    # Histograms, not lists, keep the length statistics O(1) in corpus size.
    doc_lengths = np.zeros(33, dtype=np.int64)  # log2 buckets of tokens per document
    ratios = np.zeros(101, dtype=np.int64)  # tokens per character, in steps of 0.01
    chosen = heldout_documents(counts.documents_kept, budget.validation.share, budget.seed)
    heldout_cap = budget.validation.max_rows * budget.seq_length
    with open(workdir / ROWS, "wb") as handle, open(workdir / HELDOUT, "wb") as heldout_handle:
        packer = packing.Packer(handle, budget.seq_length, dtype, dot_id)
        heldout = packing.Packer(heldout_handle, budget.seq_length, dtype, dot_id)
        index = -1
        for batch in batched(spool_texts(workdir), _ENCODE_BATCH, max_chars=_ENCODE_CHARS):
            for text, enc in zip(batch, tokenizer.encode_batch(batch), strict=True):
                index += 1
                ids = enc.ids
                num_tokens = len(ids) - (1 if ids and ids[-1] == sep_id else 0)
                ratio = num_tokens / max(len(text), 1)
                ratios[min(int(ratio * 100), 100)] += 1
                if not raw_filtered and filters.compresses_badly(num_tokens, len(text), budget.filter):
                    counts.compressibility += 1
                    counts.characters_kept -= len(text)
                    continue
                doc_lengths[min(max(num_tokens, 1).bit_length() - 1, 32)] += 1
                # A chosen document is held out while the held-out rows are below the cap, else it trains.
                if chosen[index] and heldout.num_tokens + len(heldout.buffer) < heldout_cap:
                    heldout.add(ids)
                    counts.heldout_documents += 1
                else:
                    packer.add(ids)
            advance(len(batch))
        counts.tokens_dropped_tail = packer.finish()
        heldout.finish()
        counts.heldout_rows = min(heldout.num_rows, budget.validation.max_rows)
    counts.rows, counts.tokens = packer.num_rows, packer.num_tokens
    if not raw_filtered:
        counts.documents_kept -= counts.compressibility
    return packer, doc_lengths, ratios


def heldout_documents(documents: int, share: float, seed: int) -> np.ndarray:
    """Which of `documents` (in spool order) are held out: round(share × documents) of them, at least one when
    `share` > 0 and at most all but one, chosen by a generator of their own keyed to the seed."""
    chosen = np.zeros(documents, dtype=bool)
    count = min(max(round(share * documents), 1), documents - 1) if share > 0 else 0
    if count > 0:
        chosen[np.random.default_rng([seed, prepared.HELDOUT_STREAM]).choice(documents, count, replace=False)] = True
    return chosen


def _write_heldout(workdir: Path, budget: DataBudget, dtype: np.dtype, counts: Counts) -> dict[str, Any] | None:
    """The held-out rows (capped at validation.max_rows) into `heldout_NNNNN.bin` shards; their manifest record."""
    path = workdir / HELDOUT
    rows = np.fromfile(path, dtype=dtype).reshape(-1, budget.seq_length)[: counts.heldout_rows]
    writer = packing.ShardWriter(workdir, prefix="heldout")
    writer.write(rows)
    shards, data_hash = writer.close()
    path.unlink()
    return prepared.heldout_record(shards, data_hash, budget.seq_length, origin="documents", documents=counts.heldout_documents,
                          share=budget.validation.share, seed=budget.seed)


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
