"""What `cram prepare-data` reports: the summary saved as JSON and the table people read, from the manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table


def source_warnings(stats: Any) -> list[str]:
    lines = []
    if stats.bad_bytes:
        lines.append(f"{stats.bad_bytes} byte(s) were not UTF-8 and were replaced")
    if stats.bad_lines:
        lines.append(f"{stats.bad_lines} JSON line(s) skipped, e.g. {stats.bad_line_examples[0]}")
    return lines


def summary(manifest: dict[str, Any]) -> dict[str, Any]:
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


def table(manifest: dict[str, Any], path: Path, *, reused: bool) -> Table:
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
