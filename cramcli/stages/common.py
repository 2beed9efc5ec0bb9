"""What every stage does the same way: load its budgets with flag overrides, say where each setting came from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cramcli import budgets
from cramcli.utils.console import Output, sources_table


def load_budget(output: Output, kind: str, name: str | Path,
                flags: dict[str, tuple[str, Any]] | None = None) -> budgets.Resolved:
    """The budget `name` with the flags laid over it, validated as one; `--verbose` prints the provenance."""
    resolved = budgets.resolve(kind, name, flags)
    if output.verbose:
        values = {field: value for field, value, _ in budgets.flatten(resolved.budget)}
        output.debug(sources_table(kind, resolved.sources, values))
    return resolved
