"""Stage `prepare-data`: raw text → normalised, filtered, deduplicated, tokenized, packed rows; or a
pre-tokenized corpus (an `input_ids` column, its own tokenizer beside it) → the same format, rows copied as they are.

The output folder is keyed by a content hash of the budget, the source's identity, the tokenizer and the code
format: the same command twice reuses the cached folder; any change builds a new one (safely: data/build.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cramcli import budgets
from cramcli.data.build import build_folder, cached_manifest
from cramcli.data.prepared import DATA_ROOT, write_pointer
from cramcli.data.progress import PhaseBars
from cramcli.data.report import source_warnings, summary, table
from cramcli.stages import options
from cramcli.stages.common import load_budget
from cramcli.utils.console import Output, summary_table
from cramcli.utils.errors import UsageError


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
    verify: Annotated[Optional[Path], typer.Option("--verify", metavar="DIR", help="Only check the prepared-data folder DIR: every shard against the checksum in its manifest, every token id against the vocabulary. Builds nothing.")] = None,
) -> None:
    """Raw text → normalised, filtered, deduplicated, tokenized, packed rows that [bold]cram pretrain[/] reads.

    The same command twice reuses the cached result; any change to the budget, source or tokenizer rebuilds.
    [bold]--verify DIR[/] checks a prepared folder instead (exit 0 when it is intact).
    """
    if verify is not None:
        _verify(output, verify)
        return
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
            return pretokenized.prepare(corpus, data_budget, tok, tok_file, work, progress=bars, chash=chash,
                                        warn=output.warn)

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
                                  filter_tokenizer=filter_tok, warn=output.warn)
        for warning in source_warnings(src.stats):
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
    """Reuse a finished folder with this content hash, or build one (data/build.py); point the budget at it."""
    cached = cached_manifest(final, chash, force)
    if cached is not None:
        write_pointer(budget_name, final)
        output.info(f"reused cached {final} (content hash {chash}; same budget, source and tokenizer)")
        output.report({"reused": True, "path": str(final), **summary(cached)}, table(cached, final, reused=True))
        return

    def work_in(work: Path) -> dict[str, Any]:
        with PhaseBars(output.console) as bars:
            return build(work, bars)

    manifest = build_folder(final, chash, work_in)
    write_pointer(budget_name, final)
    report = {"reused": False, "path": str(final), **summary(manifest)}
    output.report(report, table(manifest, final, reused=False), final / "report.json")


def _verify(output: Output, folder: Path) -> None:
    from cramcli.data.prepared import PreparedData

    report = PreparedData(folder).verify(ids=True)
    if report["unchecked"]:
        output.warn(f"{len(report['unchecked'])} shard(s) have no checksum in the manifest (prepared by an earlier "
                    "cram): their ids were checked, their bytes could not be")
    output.report(report, summary_table(f"verified {folder}", {
        "shards verified": len(report["verified"]), "shards without checksum": len(report["unchecked"]),
        "token ids in vocabulary": "all", "bytes read": f"{report['bytes']:,}", "seconds": report["seconds"]}))
