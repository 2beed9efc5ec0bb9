"""Stage `train-tokenizer`: a WordPiece tokenizer with fixed special-token ids, trained on raw text.

Raw documents from any source are streamed into the trainer, which normalises them with the data budget's
normaliser (stored in the tokenizer) and keeps only word counts in memory. The folder gets `tokenizer.json`
(loadable by `tokenizers`, `PreTrainedTokenizerFast(tokenizer_file=...)` and `AutoTokenizer`) and report.json.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from cramcli.data.progress import PhaseBars
from cramcli.data.sources import Source, open_source
from cramcli.data.tokenizer import SPECIAL_IDS, save_tokenizer, tokenizer_hash, train_tokenizer
from cramcli.stages import options
from cramcli.stages.common import load_budget
from cramcli.utils import run_folder
from cramcli.utils.console import Output
from cramcli.utils.errors import UsageError


def run(
    output: Output,
    *,
    source: options.Source = None,
    budget: Annotated[str, typer.Option("--budget", "-b", help="Data budget for normalisation and tokenizer settings.")] = "24",
    vocab_size: Annotated[Optional[int], typer.Option("--vocab-size", help="Vocabulary size (default: the budget's, 32768 for 24).")] = None,
    max_documents: Annotated[Optional[int], typer.Option("--max-documents", help="Train on at most this many documents.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for tokenizer.json and its report.")] = Path("outputs/tokenizer"),
    force: options.Force = False,
) -> None:
    """Train a WordPiece tokenizer with fixed special-token ids on normalised raw text."""
    resolved = load_budget(output, "data", budget, {
        "source": ("--source", source), "tokenizer.vocab_size": ("--vocab-size", vocab_size),
        "tokenizer.max_training_documents": ("--max-documents", max_documents)})
    data_budget = resolved.budget
    size, limit, spec = data_budget.tokenizer.vocab_size, data_budget.tokenizer.max_training_documents, data_budget.source
    src = open_source(spec, split=data_budget.split, text_field=data_budget.text_field, seed=data_budget.seed,
                      max_documents=limit)
    out = Path(out)
    fingerprint = run_folder.fingerprint(data_budget.model_dump(mode="json"))

    seen = {"documents": 0, "characters": 0}
    start = time.perf_counter()
    with run_folder.atomic_output(out, command="train-tokenizer", settings_fingerprint=fingerprint,
                                  force=force) as work:
        with PhaseBars(output.console) as bars:
            advance = bars("train tokenizer", limit if spec == "embedded" else None)
            tok = train_tokenizer(
                _counted(src, limit, seen, advance), data_budget.tokenizer, data_budget.normalization,
                vocab_size=size, what=lambda: f"--source {spec} ({seen['documents']} documents)",
            )
        if seen["documents"] == 0:
            raise UsageError(f"--source {spec}: no documents found")
        save_tokenizer(tok, work, model_max_length=data_budget.seq_length)
    seconds = time.perf_counter() - start
    for line in _warnings(src):
        output.warn(line)

    report = {
        "path": str(out / "tokenizer.json"),
        "vocab_size": tok.get_vocab_size(),
        "tokenizer_hash": tokenizer_hash(tok),
        "special_tokens": dict(SPECIAL_IDS),
        "source": spec,
        "documents": seen["documents"],
        "characters": seen["characters"],
        "seconds": round(seconds, 3),
        "normalization": data_budget.normalization.model_dump(mode="json"),
    }
    table = Table(title=f"tokenizer → {out / 'tokenizer.json'}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("vocabulary", f"{report['vocab_size']:,} WordPiece (hash {report['tokenizer_hash']})")
    table.add_row("special ids", ", ".join(f"{t}={i}" for t, i in SPECIAL_IDS.items()))
    table.add_row("trained on", f"{seen['documents']:,} documents, {seen['characters']:,} characters from {spec}")
    table.add_row("time", f"{seconds:.1f}s")
    output.report(report, table, out / "report.json")


def _counted(src: Source, limit: int, seen: dict[str, int], advance: object) -> Iterator[str]:
    for text in islice(src.documents(), limit):
        seen["documents"] += 1
        seen["characters"] += len(text)
        advance(1)  # type: ignore[operator]
        yield text


def _warnings(src: Source) -> list[str]:
    lines = []
    if src.stats.bad_bytes:
        lines.append(f"{src.stats.bad_bytes} byte(s) were not UTF-8 and were replaced")
    if src.stats.bad_lines:
        lines.append(f"{src.stats.bad_lines} JSON line(s) skipped, e.g. {src.stats.bad_line_examples[0]}")
    return lines
