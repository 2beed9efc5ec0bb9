"""Budget files: finding a preset or a path, reading and validating it, laying command-line flags over it (one
validation for both), where each value came from, and the JSON Schema.

A budget is named on the command line by a preset name (`24`, `v2`, `modern`, `demo`) that resolves to
`budgets/<kind>_budget_<name>.json` (`24` → `hours_24`), or by a path to a JSON file. Every problem in a file is
reported as one line `file: field.path: message (allowed: ...)`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from cramcli.budgets.models import KINDS, MODELS
from cramcli.utils.errors import UsageError
from cramcli.utils.jsonfile import read_object


def budgets_dir() -> Path:
    """Shipped budgets: inside the installed package, or `budgets/` of a source checkout."""
    installed = Path(__file__).resolve().parents[1] / "_budgets"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[2] / "budgets"


def preset_names() -> list[str]:
    """Preset names that have a file for every kind (`24`, `v2`, `demo`, ...)."""
    names: dict[str, set[str]] = {}
    for path in budgets_dir().glob("*_budget_*.json"):
        kind, _, stem = path.stem.partition("_budget_")
        names.setdefault(stem, set()).add(kind)
    return sorted((_display_name(s) for s, kinds in names.items() if kinds >= set(KINDS)), key=_sort_key)


def _display_name(stem: str) -> str:
    return stem.removeprefix("hours_") if stem.startswith("hours_") else stem


def _sort_key(name: str) -> tuple[int, str]:
    return (0, f"{float(name):012.3f}") if _is_number(name) else (1, name)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def resolve_path(kind: str, name_or_path: str | Path) -> Path:
    """A preset name (`24`, `v2`, `modern`, `demo`) or a path to a JSON file → the file to read."""
    text = str(name_or_path)
    if text.endswith(".json") or "/" in text or Path(text).exists():
        return Path(text)
    stem = f"hours_{text}" if _is_number(text) else text
    path = budgets_dir() / f"{kind}_budget_{stem}.json"
    if not path.exists():
        raise UsageError(
            f"--budget {text}: no {kind} budget named {text!r} (expected {path});"
            f" presets: {', '.join(preset_names()) or 'none'}, or pass a path to a JSON file"
        )
    return path


def label(name_or_path: str | Path) -> str:
    """The one short name a budget goes by in default folder names: `24` for the preset `24` and for the file
    `budgets/train_budget_hours_24.json` alike (so every kind of the same preset finds the others' folders); a
    custom file's name without `.json` otherwise."""
    text = str(name_or_path)
    if not (text.endswith(".json") or "/" in text):
        return text
    stem = Path(text).stem
    kind, sep, rest = stem.partition("_budget_")
    return _display_name(rest) if sep and kind in KINDS else stem


def file_label(kind: str, name_or_path: str | Path) -> str:
    """The name a budget goes by in published file names: `hours_24` for the preset 24
    (`train_budget_hours_24.json`), `X` for a file `train_budget_X.json`, else the file's stem."""
    stem = resolve_path(kind, name_or_path).stem
    return stem.partition("_budget_")[2] or stem


def load(kind: str, name_or_path: str | Path) -> Any:
    """Read and validate one budget; every problem becomes one line of a `UsageError` (exit 2)."""
    path = resolve_path(kind, name_or_path)
    return parse(kind, path, _read_json(path))


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise UsageError(f"{path}: budget file not found; pass a preset name ({', '.join(preset_names())}) or a path")
    return read_object(path, fix="a budget is a JSON object, e.g. {} for all defaults", strict_numbers=True)


def parse(kind: str, path: Path | str, data: Any) -> Any:
    model = MODELS[kind]
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a {kind} budget must be a JSON object, not {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise UsageError(*(f"{path}: {format_error(err)}" for err in exc.errors())) from None


@dataclass(frozen=True)
class Resolved:
    """A validated budget and where each of its fields came from: the preset or file, a flag, or the default."""

    budget: Any
    sources: dict[str, str]


def resolve(kind: str, name_or_path: str | Path, flags: dict[str, tuple[str, Any]] | None = None) -> Resolved:
    """Load a budget with command-line overrides, validated as one document, so a flag gets exactly the checks a
    value in the file gets. `flags` maps a field path (`hours`, `optimizer.lr`) to (the flag as typed, its value);
    a None value means the flag was not given."""
    path = resolve_path(kind, name_or_path)
    raw = _read_json(path)
    given = {field: fv for field, fv in (flags or {}).items() if fv[1] is not None}
    merged = copy.deepcopy(raw)
    for field, (_, value) in given.items():
        _set_path(merged, field, value)
    try:
        budget = MODELS[kind].model_validate(merged)
    except ValidationError as exc:
        raise UsageError(*(_override_error(path, err, given) for err in exc.errors())) from None
    origin = f"file {path}" if Path(str(name_or_path)).suffix == ".json" or "/" in str(name_or_path) else \
        f"preset {name_or_path} ({path.name})"
    sources = {field: (given[field][0] if field in given else origin if _has_path(raw, field) else "default")
               for field, _, _ in flatten(budget)}
    return Resolved(budget, sources)


def _set_path(data: dict[str, Any], field: str, value: Any) -> None:
    *parents, leaf = field.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[leaf] = value


def _has_path(data: Any, field: str) -> bool:
    for part in field.split("."):
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


def _override_error(path: Path, err: Any, given: dict[str, tuple[str, Any]]) -> str:
    loc = ".".join(str(part) for part in err["loc"] if not str(part).startswith("function-after"))
    if loc in given:
        flag, value = given[loc]
        return f"{flag} {value}: {format_error(err).partition(': ')[2]}"
    with_flags = " with " + " ".join(f"{flag} {value}" for flag, value in given.values()) if given else ""
    return f"{path}{with_flags}: {format_error(err)}"


def format_error(err: Any) -> str:
    """One pydantic error → `field.path: message (allowed: ...)`."""
    loc = ".".join(str(part) for part in err["loc"] if not str(part).startswith("function-after")) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    ctx = err.get("ctx") or {}
    kind = err["type"]
    if kind == "extra_forbidden":
        msg = "unknown key (check the spelling; `cram budgets schema` lists the fields)"
    elif kind == "literal_error" and "expected" in ctx:
        msg = f"got {err.get('input')!r}; allowed: {ctx['expected']}"
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal") or kind.endswith("_type") or kind.endswith("_parsing"):
        msg = f"{msg}, got {_short(err.get('input'))}"
    return f"{loc}: {msg}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def budget_hash(budget: BaseModel) -> str:
    """Stable short hash of a budget's content (sorted JSON), used to key caches and runs."""
    blob = json.dumps(budget.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def flatten(budget: BaseModel) -> list[tuple[str, Any, str]]:
    """(field.path, value, description) rows, for tables and the reference docs."""
    rows: list[tuple[str, Any, str]] = []
    _flatten(budget, "", rows)
    return rows


def _flatten(obj: BaseModel, prefix: str, rows: list[tuple[str, Any, str]]) -> None:
    for name, field in type(obj).model_fields.items():
        value = getattr(obj, name)
        if isinstance(value, BaseModel):
            _flatten(value, f"{prefix}{name}.", rows)
        else:
            rows.append((f"{prefix}{name}", value, (field.description or "").replace("\n", " ")))


def json_schema(kind: str) -> dict[str, Any]:
    schema = MODELS[kind].model_json_schema()
    schema["title"] = f"cram {kind} budget"
    return schema
