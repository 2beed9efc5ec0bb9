"""The user guide cannot drift: every `cram` command line in docs/ and README.md parses, budgets.md is current."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from cramcli.cli import app

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
_FENCE = re.compile(r"```[a-z]*\n(.*?)```", re.S)
_INLINE = re.compile(r"(?<!`)`(cram [^`]+)`(?!`)")


def _commands_in_blocks(text: str) -> list[str]:
    """Full command lines from fenced blocks: `cram ...`, `python -m cramcli ...`, `torchrun ... -m cramcli ...`."""
    out = []
    for block in _FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            line = re.split(r"\s(?:\||>|&&|;)\s", line)[0]
            if line.startswith("cram "):
                out.append(line)
            elif " -m cramcli " in f" {line} ":
                out.append("cram " + line.split(" -m cramcli ", 1)[1])
    return out


def _all_commands() -> list[tuple[str, str, bool]]:
    """(page, command line, is a full line from a code block)."""
    found = []
    for page in PAGES:
        text = page.read_text()
        found += [(page.name, c, True) for c in _commands_in_blocks(text)]
        found += [(page.name, " ".join(c.split()), False) for c in _INLINE.findall(_FENCE.sub("", text))]
    return found


def _resolve(args: list[str]) -> tuple[Any, list[str], list[str]]:
    """Walk sub-command names from the root: (command, the names walked, remaining args). Groups are
    recognised by their `commands` table (typer ships its own copy of click, so no isinstance checks)."""
    cmd: Any = typer.main.get_command(app)
    path: list[str] = []
    while getattr(cmd, "commands", None) is not None and args and args[0] != "..." and not args[0].startswith("-"):
        sub = cmd.commands.get(args[0])
        assert sub is not None, f"`cram {' '.join([*path, args[0]])}`: no such command"
        cmd, path, args = sub, [*path, args[0]], args[1:]
    return cmd, path, args


COMMANDS = _all_commands()


def test_docs_show_commands() -> None:
    pages = {page for page, _, _ in COMMANDS}
    assert {"README.md", "commands.md", "index.md", "recipe-24h.md"} <= pages
    assert len(COMMANDS) > 40


@pytest.mark.parametrize(("page", "line", "full"), COMMANDS, ids=[f"{p}: {c}" for p, c, _ in COMMANDS])
def test_command_line_parses(page: str, line: str, full: bool) -> None:
    cmd, path, rest = _resolve(shlex.split(line)[1:])
    if getattr(cmd, "commands", None) is not None:  # a group: bare, with --help, or "cram budgets ..." in prose
        assert set(rest) <= {"--help", "-h", "..."}, f"{page}: `{line}`: `cram {' '.join(path)}` has no command {rest[0]}"
        return
    known = {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts)}
    for token in rest:
        if token.startswith("-") and token != "-":
            assert token.split("=")[0] in known, f"{page}: `{line}`: `cram {' '.join(path)}` has no option {token}"
    if full and "--help" not in rest and "-h" not in rest:
        # A complete line must also parse: values convert, required options are given, no stray arguments.
        cmd.make_context(f"cram {' '.join(path)}", list(rest))


def test_budget_reference_is_current() -> None:
    spec = importlib.util.spec_from_file_location("gen_budget_docs", ROOT / "scripts" / "gen_budget_docs.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    current = (ROOT / "docs" / "budgets.md").read_text()
    assert current == gen.render(), "docs/budgets.md is stale; run: python scripts/gen_budget_docs.py"
    for kind in ("data", "arch", "train", "glue"):
        assert f"`{kind}`" in current


def test_docs_link_targets_exist() -> None:
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).is_file(), f"{page.name}: link to missing {target}"
