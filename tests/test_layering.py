"""Imports run one way: cli → stages → train/data/model/glue → utils (and budgets, which every layer reads)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cramcli"
# What each layer may import from cramcli (besides itself).
ALLOWED = {
    "cli": {"stages", "utils", "budgets"},
    "stages": {"train", "data", "model", "glue", "utils", "budgets", "publish", "demo"},
    "train": {"data", "model", "utils", "budgets"},
    "glue": {"data", "model", "utils", "budgets"},
    "model": {"data", "utils", "budgets"},
    "data": {"utils", "budgets"},
    "publish": {"model", "glue", "utils", "budgets"},
    "demo": {"data", "utils", "budgets"},
    "utils": {"budgets"},
    "budgets": {"utils"},
}


def _layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0] if len(parts) > 1 else parts[0].removeprefix("__init__") or "package"


def _cramcli_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cramcli":
            inner = node.module.split(".")[1:]  # `from cramcli.train.step import x` → train
            found.update(inner[:1] if inner else [alias.name for alias in node.names])  # `from cramcli import budgets`
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("cramcli."))
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_one_way(path: Path) -> None:
    layer = _layer(path)
    if layer not in ALLOWED:
        return  # cramcli/__init__.py and __main__.py sit above every layer
    wrong = {name for name in _cramcli_imports(path) if name != layer and name not in ALLOWED[layer]}
    assert not wrong, f"cramcli/{path.relative_to(PACKAGE)} ({layer}) imports {sorted(wrong)}"
