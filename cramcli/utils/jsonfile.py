"""Reading the JSON files cram and its users write, in one place: a JSON object (configs, budgets, reports) and
JSON lines (`metrics.jsonl`). Every problem is one line naming the file and what to do about it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cramcli.utils.errors import UsageError


def read_object(path: Path, *, fix: str = "rerun the stage that wrote it",
                error: Callable[[str], Exception] = UsageError, strict_numbers: bool = False) -> dict[str, Any]:
    """The JSON object in `path`. Problems raise `error(message)` (a `UsageError` unless the caller's layer has
    its own type); `fix` ends the message. `strict_numbers` refuses NaN/Infinity (not JSON, though Python reads it)."""
    path = Path(path)
    if not path.exists():
        raise error(f"{path}: file not found; {fix}")
    if path.is_dir():
        raise error(f"{path}: is a directory, not a JSON file; {fix}")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror}); {fix}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start}); {fix}") from None
    if not text.strip():
        raise error(f"{path}: file is empty; {fix}")
    try:
        data = json.loads(text, parse_constant=_reject_constant if strict_numbers else None)
    except json.JSONDecodeError as exc:
        raise error(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON ({exc.msg}); {fix}") from None
    except ValueError as exc:
        raise error(f"{path}: invalid JSON ({exc}); {fix}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: must be a JSON object, not {type(data).__name__}; {fix}")
    return data


def read_object_or_none(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when it is missing, unreadable or not an object: for files whose absence
    or damage means "not finished" (a manifest, a folder marker, a finished run's record), not an error."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a valid number")


def _warn_stderr(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[yellow]warning:[/] {message}", highlight=False)


def read_rows(path: Path, warn: Callable[[str], object] | None = None) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file such as `metrics.jsonl` (blank lines skipped); [] when there is none.
    A torn last line (an append cut off by a full disk or a power loss) is dropped with a warning; a bad line
    before it is damage nothing explains, refused naming the line. `warn` defaults to a line on stderr."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = [(n, line) for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").split("\n"), 1)
             if line.strip()]
    rows: list[dict[str, Any]] = []
    for i, (number, line) in enumerate(lines):
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        elif i == len(lines) - 1:
            (warn or _warn_stderr)(f"{path}: the last line (line {number}) is cut off, a write was interrupted; dropped it")
        else:
            raise UsageError(f"{path}: line {number} is not a JSON row; the file is damaged — delete that line "
                             "(it is the run's log; the checkpoints do not depend on it)")
    return rows
