"""Imports run one way: cli → stages → train/glue/publish/demo → model → data → utils (and budgets, which every
layer reads); and a stage never imports another stage (only `demo`, which composes them, may)."""

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


STAGE_HELPERS = {"options", "common"}
"""Modules in stages/ that are not stages: the shared option declarations and budget loading."""
COMPOSERS = {"demo"}
"""The one stage that runs other stages (the whole pipeline in one command)."""


def _imported_modules(source: str) -> set[tuple[str, ...]]:
    """Every cramcli module a source imports, as name parts after `cramcli`: `from cramcli.stages import card`
    gives ("stages", "card"), `import cramcli.train.step` gives ("train", "step")."""
    found: set[tuple[str, ...]] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cramcli":
            inner = tuple(node.module.split(".")[1:])
            found.update((*inner, alias.name) for alias in node.names)  # a module or a name inside one
        elif isinstance(node, ast.Import):
            found.update(tuple(a.name.split(".")[1:]) for a in node.names if a.name.startswith("cramcli."))
    return found


def _cramcli_imports(path: Path) -> set[str]:
    """The layers a file imports from."""
    return {parts[0] for parts in _imported_modules(path.read_text()) if parts}


def stage_imports(source: str, stage: str) -> set[str]:
    """The other stages a stage module's source imports (the helpers in stages/ do not count)."""
    stages = {parts[1] for parts in _imported_modules(source) if len(parts) >= 2 and parts[0] == "stages"}
    return stages - STAGE_HELPERS - {stage}


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_one_way(path: Path) -> None:
    layer = _layer(path)
    if layer not in ALLOWED:
        return  # cramcli/__init__.py and __main__.py sit above every layer
    wrong = {name for name in _cramcli_imports(path) if name != layer and name not in ALLOWED[layer]}
    assert not wrong, f"cramcli/{path.relative_to(PACKAGE)} ({layer}) imports {sorted(wrong)}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "stages").glob("*.py")), ids=lambda p: p.name)
def test_no_stage_imports_another_stage(path: Path) -> None:
    if path.stem in COMPOSERS | STAGE_HELPERS | {"__init__"}:
        return
    wrong = stage_imports(path.read_text(), path.stem)
    assert not wrong, f"cramcli/stages/{path.name} imports the stage(s) {sorted(wrong)}; move what they share below"


@pytest.mark.parametrize("planted", [
    "from cramcli.stages import card\n",
    "from cramcli.stages.card import run\n",
    "import cramcli.stages.card\n",
    "def run():\n    from cramcli.stages import options, card\n",
])
def test_the_check_fails_on_a_planted_stage_import(planted: str) -> None:
    """The stage rule catches each way of writing the import (at the top or inside a function); the helpers
    (`options`, `common`) stay allowed."""
    source = (PACKAGE / "stages" / "push.py").read_text() + "\n" + planted
    assert stage_imports(source, "push") == {"card"}
    assert stage_imports("from cramcli.stages import options\nfrom cramcli.stages.common import x\n", "push") == set()


def test_the_check_fails_on_a_planted_layer_import(tmp_path: Path) -> None:
    """A model module importing a stage is caught by the layer rule."""
    planted = tmp_path / "cramcli" / "model" / "bad.py"
    planted.parent.mkdir(parents=True)
    planted.write_text("from cramcli.stages import card\nfrom cramcli.utils import atomic\n")
    assert _cramcli_imports(planted) - ALLOWED["model"] - {"model"} == {"stages"}
