"""Stage `budgets`: list the shipped presets, show a budget with what each field means, validate budget files,
write their JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from cramcli import budgets
from cramcli.utils import atomic
from cramcli.utils.console import Output
from cramcli.utils.errors import CramError, UsageError

Kind = Annotated[Optional[str], typer.Option("--kind", "-k", help="Budget kind: data, arch, train or glue.")]


def list_presets(output: Output) -> None:
    """List the shipped presets and their files."""
    rows = [{"preset": name, **{kind: str(budgets.resolve_path(kind, name)) for kind in budgets.KINDS}}
            for name in budgets.preset_names()]
    table = Table("preset", *budgets.KINDS, title=f"Budgets in {budgets.budgets_dir()}")
    for row in rows:
        table.add_row(row["preset"], *(Path(row[k]).name for k in budgets.KINDS))
    output.report(rows, table)


def show(
    output: Output,
    name: Annotated[str, typer.Argument(help="Preset name (24, v2, modern, demo) or a budget JSON file.")],
    kind: Kind = None,
) -> None:
    """Render a budget as a table (every field, its value and what it means)."""
    loaded = {k: budgets.load(k, name) for k in _kinds_for(name, kind)}
    tables = []
    for k, b in loaded.items():
        table = Table("field", "value", "meaning", title=f"{k} budget — {budgets.resolve_path(k, name)}")
        for field, value, doc in budgets.flatten(b):
            table.add_row(field, json.dumps(value), doc)
        tables.append(table)
    from rich.console import Group

    output.report({k: b.model_dump(mode="json") for k, b in loaded.items()}, Group(*tables))


def validate(
    output: Output,
    files: Annotated[Optional[list[Path]], typer.Argument(help="Budget files (default: every shipped budget). The kind comes from the file name or --kind.")] = None,
    kind: Kind = None,
) -> None:
    """Validate budget files; prints one line per problem and exits 2 if any file is bad."""
    paths = files or sorted(budgets.budgets_dir().glob("*_budget_*.json"))
    problems: list[str] = []
    for path in paths:
        try:
            budgets.load(_kinds_for(str(path), kind)[0] if kind else _kind_of_file(path), path)
            output.info(f"[green]ok[/]   {path}")
        except CramError as exc:
            problems.extend(exc.lines)
    if problems:
        raise UsageError(*problems)
    output.info(f"{len(paths)} budget file(s) valid")


def schema(
    output: Output,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for <kind>_budget.schema.json files (default: print to stdout).")] = None,
) -> None:
    """Write the JSON Schema of each budget kind, so editors can validate budget files."""
    schemas: dict[str, Any] = {kind: budgets.json_schema(kind) for kind in budgets.KINDS}
    if out is None:
        print(json.dumps(schemas, indent=2))
        return
    for kind, body in schemas.items():
        atomic.write_json(out / f"{kind}_budget.schema.json", body)
    output.err.print(f"wrote {len(schemas)} schemas to {out}")


def _kinds_for(name: str, kind: str | None) -> list[str]:
    if kind is not None:
        if kind not in budgets.KINDS:
            raise UsageError(f"--kind {kind!r}: allowed: {', '.join(budgets.KINDS)}")
        return [kind]
    if name.endswith(".json") or Path(name).is_file():
        return [_kind_of_file(Path(name))]
    return list(budgets.KINDS)


def _kind_of_file(path: Path) -> str:
    prefix = path.name.partition("_budget")[0]
    if prefix in budgets.KINDS:
        return prefix
    raise UsageError(f"{path}: cannot tell the budget kind from the file name; pass --kind data|arch|train|glue")
