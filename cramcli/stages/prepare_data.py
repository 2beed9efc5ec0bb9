"""Stage `prepare-data`: raw text → normalised, filtered, deduplicated, tokenized, packed rows; or a
pre-tokenized corpus (an `input_ids` column, its own tokenizer beside it) → the same format, rows copied as they are.

The output folder is keyed by a content hash of the budget, the source's identity, the tokenizer and the code
format: the same command twice reuses the cached folder; any change builds a new one. Work happens in a
hidden `.NAME.*.partial` folder beside the output that is renamed only when everything is written, so an
interrupted run never leaves a folder that looks finished; the next run removes the dead leftovers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from cramcli import budgets
from cramcli.data.prepared import DATA_ROOT, pointer_path
from cramcli.data.progress import PhaseBars
from cramcli.stages import options
from cramcli.stages.common import load_budget
from cramcli.utils import atomic, run_folder
from cramcli.utils.console import Output
from cramcli.utils.errors import UsageError

_OWNER = ".owner_pid"


def run(
    output: Output,
    *,
    budget: options.DataBudget = "24",
    source: Annotated[Optional[str], typer.Option("--source", "-s", help="Override the budget's source: hf:NAME[:CONFIG] (raw text or a pre-tokenized corpus), a local file/folder (txt, jsonl[.gz|.zst], json, parquet; or a pre-tokenized layout), or 'embedded'.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default: outputs/data/<source>_<hash>).")] = None,
    tokenizer: Annotated[Optional[Path], typer.Option("--tokenizer", help="Use this tokenizer.json instead of training one.")] = None,
    max_documents: Annotated[Optional[int], typer.Option("--max-documents", help="Override the budget's cap on raw documents.")] = None,
    workers: Annotated[int, typer.Option("--workers", help="Worker processes for normalising/filtering (0 = all cores).")] = 0,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Override the budget's seed (document shuffle, random ordering).")] = None,
    force: options.Force = False,
) -> None:
    """Raw text → normalised, filtered, deduplicated, tokenized, packed rows that [bold]cram pretrain[/] reads.

    The same command twice reuses the cached result; any change to the budget, source or tokenizer rebuilds.
    """
    # Imported here: the pipeline pulls in datasketch and scipy, which `cram --help` must not pay for.
    from cramcli.data import filters, pipeline, pretokenized
    from cramcli.data.sources import open_source
    from cramcli.data.tokenizer import load_tokenizer, tokenizer_hash

    data_budget = load_budget(output, "data", budget, {"source": ("--source", source), "seed": ("--seed", seed),
                                                       "max_documents": ("--max-documents", max_documents)}).budget
    budget_name = budgets.label(budget)  # the name `cram pretrain --budget` looks the pointer up by
    corpus = pretokenized.detect(data_budget.source, split=data_budget.split)
    if corpus is not None:
        if tokenizer is not None:
            raise UsageError(f"--tokenizer {tokenizer}: {corpus.location()} is pre-tokenized and brings its own"
                             " tokenizer (its tokenizer/ folder); drop --tokenizer")
        tok, tok_file = pretokenized.load_corpus_tokenizer(corpus)
        chash = pretokenized.content_hash(data_budget, corpus.identity(), tokenizer_hash(tok))
        final = out if out is not None else DATA_ROOT / f"{corpus.slug()}_{chash}"
        output.debug(f"pre-tokenized corpus {corpus.spec} ({corpus.layout}), content hash {chash}")

        def copy(work: Path, bars: PhaseBars) -> dict[str, Any]:
            return pretokenized.prepare(corpus, data_budget, tok, tok_file, work, progress=bars, chash=chash)

        _build(output, final, chash, budget_name, copy, force)
        return

    src = open_source(
        data_budget.source,
        split=data_budget.split,
        text_field=data_budget.text_field,
        seed=data_budget.seed,
        max_documents=data_budget.max_documents,
    )
    tok = load_tokenizer(tokenizer) if tokenizer is not None else None
    spec = data_budget.filter.tokenizer
    filter_tok = filters.load_filter_tokenizer(spec) if spec and data_budget.filter.enabled else None
    chash = pipeline.content_hash(data_budget, src.identity(), tokenizer_hash(tok) if tok else None,
                                  tokenizer_hash(filter_tok) if filter_tok else None)
    final = out if out is not None else DATA_ROOT / f"{src.slug()}_{chash}"
    num_workers = pipeline.cpu_workers(workers)
    output.debug(f"source {src.spec}, {num_workers} worker(s), content hash {chash}")

    def build(work: Path, bars: PhaseBars) -> dict[str, Any]:
        result = pipeline.prepare(src, data_budget, tok, work, workers=num_workers, progress=bars, chash=chash,
                                  filter_tokenizer=filter_tok)
        for warning in _warnings(src.stats):
            output.warn(warning)
        return result.manifest

    _build(output, final, chash, budget_name, build, force)


def _build(
    output: Output,
    final: Path,
    chash: str,
    budget_name: str,
    build: Callable[[Path, PhaseBars], dict[str, Any]],
    force: bool,
) -> None:
    """Reuse a finished folder with this content hash, or build one in a work folder renamed into place."""
    cached = _cached_manifest(final, chash, force)
    if cached is not None:
        _write_pointer(budget_name, final)
        output.info(f"reused cached {final} (content hash {chash}; same budget, source and tokenizer)")
        report = {"reused": True, "path": str(final), **_summary(cached)}
        output.report(report, _table(cached, final, reused=True))
        return

    _remove_dead_partials(final)
    with _sigterm_as_interrupt(), run_folder.atomic_output(final, command="prepare-data", settings_fingerprint=chash,
                                                           force=True) as work:
        (work / _OWNER).write_text(str(os.getpid()))
        with PhaseBars(output.console) as bars:
            manifest = build(work, bars)
        (work / _OWNER).unlink()
        # manifest.json marks the folder finished: written last, inside the folder that is renamed into place.
        atomic.write_json(work / "manifest.json", manifest)
    _write_pointer(budget_name, final)
    report = {"reused": False, "path": str(final), **_summary(manifest)}
    output.report(report, _table(manifest, final, reused=False), final / "report.json")


def _cached_manifest(final: Path, chash: str, force: bool) -> dict[str, Any] | None:
    """The finished manifest at `final` if it matches; refuse to replace a different result without --force, and
    a folder cram did not make at all."""
    manifest_file = final / "manifest.json"
    if run_folder.check_owner(final, "prepare-data") is None:
        return None
    if manifest_file.is_file():
        try:
            manifest = json.loads(manifest_file.read_text())
        except (OSError, ValueError):
            manifest = {}
        if manifest.get("content_hash") == chash and not force:
            return manifest
        if not force:
            raise UsageError(
                f"{final}: holds prepared data for other settings (content hash {manifest.get('content_hash')},"
                f" this command's is {chash}); pass --force to rebuild it there or choose another --out"
            )
    elif not force:
        raise UsageError(f"{final}: an unfinished prepared-data folder; pass --force to rebuild it or choose another "
                         f"--out")
    return None


def _remove_dead_partials(final: Path) -> None:
    """Delete work folders of earlier runs of this output that were killed (their owner process is gone)."""
    if not final.parent.is_dir():
        return
    for partial in final.parent.glob(f".{final.name}.*.partial"):
        try:
            pid = int((partial / _OWNER).read_text())
            os.kill(pid, 0)
            continue  # still running: another prepare-data owns it
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            pass  # no readable owner: killed before it was written
        shutil.rmtree(partial, ignore_errors=True)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the work folder is cleaned up instead of left behind."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. inside some test runners): keep the default
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _write_pointer(budget_name: str, final: Path) -> None:
    atomic.write_json(pointer_path(budget_name), {"path": str(final.resolve())})


def _warnings(stats: Any) -> list[str]:
    lines = []
    if stats.bad_bytes:
        lines.append(f"{stats.bad_bytes} byte(s) were not UTF-8 and were replaced")
    if stats.bad_lines:
        lines.append(f"{stats.bad_lines} JSON line(s) skipped, e.g. {stats.bad_line_examples[0]}")
    return lines


def _summary(manifest: dict[str, Any]) -> dict[str, Any]:
    total = sum(manifest["timings_s"].values())
    optional = ("removed_share", "lengths", "pretokenized", "special_tokens", "heldout")
    return {
        "content_hash": manifest["content_hash"],
        "data_hash": manifest["data_hash"],
        "num_rows": manifest["num_rows"],
        "num_tokens": manifest["num_tokens"],
        "vocab_size": manifest["vocab_size"],
        "dtype": manifest["dtype"],
        "counts": manifest["counts"],
        "timings_s": manifest["timings_s"],
        "tokens_per_second": round(manifest["counts"]["tokens"] / total, 1) if total else None,
        "ordering": manifest["ordering"],
        **{key: manifest[key] for key in optional if key in manifest},
    }


def _table(manifest: dict[str, Any], path: Path, *, reused: bool) -> Table:
    counts = manifest["counts"]
    table = Table(title=f"prepared data {'(cached) ' if reused else ''}→ {path}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    copied = manifest.get("pretokenized")
    if copied:
        table.add_row("pre-tokenized corpus", f"{manifest['source']['spec']} ({copied['layout']})")
    else:
        read = max(counts["documents_read"], 1)
        table.add_row("documents read", f"{counts['documents_read']:,}")
        for name in ("empty", "too_short", "exact_duplicates", "near_duplicates", "compressibility"):
            table.add_row(f"  removed: {name.replace('_', ' ')}", f"{counts[name]:,} ({counts[name] / read:.1%})")
        table.add_row("documents kept", f"{counts['documents_kept']:,}")
    table.add_row("rows × seq_length", f"{manifest['num_rows']:,} × {manifest['seq_length']} ({manifest['dtype']})")
    table.add_row("tokens", f"{manifest['num_tokens']:,}")
    heldout = manifest.get("heldout")
    how = {"documents": "from {documents:,} whole documents", "blocks": "in blocks of the corpus's rows",
           "validation": "from the corpus's validation split"}
    table.add_row("held-out rows", f"{heldout['num_rows']:,} {how[heldout['origin']].format(**heldout)}" if heldout
                  else "none (validation.share 0)")
    if copied and copied["stopped_at_max_rows"]:
        table.add_row("reading stopped at", f"max_rows = {manifest['num_rows']:,}")
    elif not copied and counts["rows_dropped_by_cap"]:
        table.add_row("rows dropped by max_rows", f"{counts['rows_dropped_by_cap']:,}")
    table.add_row("vocabulary", f"{manifest['vocab_size']:,} (hash {manifest['tokenizer_hash']})")
    if copied:
        table.add_row("special ids", ", ".join(f"{t}={i}" for t, i in manifest["special_tokens"].items()))
    else:
        lengths = manifest["lengths"]
        table.add_row("tokens/char p10 / median / p90",
                      f"{lengths['tokens_per_char_p10']:.2f} / {lengths['tokens_per_char_median']:.2f}"
                      f" / {lengths['tokens_per_char_p90']:.2f}")
    order = manifest["ordering"]
    table.add_row(f"ordering: {order['method']}",
                  f"'.' per row: first 1k {order['sentence_ends_first_rows_mean']:.2f},"
                  f" last 1k {order['sentence_ends_last_rows_mean']:.2f}")
    timings = manifest["timings_s"]
    total = sum(timings.values())
    table.add_row("time", ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    if total:
        table.add_row("throughput", f"{counts['tokens'] / total:,.0f} tokens/s")
    table.add_row("content hash", manifest["content_hash"])
    return table
