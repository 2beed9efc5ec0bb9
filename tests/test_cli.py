"""The command line: every stage and alias is listed and has a working --help; the installed script runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cramcli.cli import app

runner = CliRunner()
COMMANDS = ["prepare-data", "train-tokenizer", "pretrain", "finetune-glue", "glue", "convert-attention", "convert",
            "demo", "bench", "budgets"]


def test_top_level_help_lists_stages_and_aliases():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_aliases_share_flags():
    glue = runner.invoke(app, ["glue", "--help"]).output
    assert "--trials" in glue and "--model" in glue
    convert = runner.invoke(app, ["convert", "--help"]).output
    assert "--attention" in convert and "pytorch" in convert


def test_unknown_flag_is_a_usage_error():
    result = runner.invoke(app, ["pretrain", "--no-such-flag"])
    assert result.exit_code == 2


def test_gpu_on_a_machine_without_one_suggests_cpu():
    import torch

    from cramcli.utils.device import resolve_device
    from cramcli.utils.errors import UsageError

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(UsageError, match="--device cpu"):
        resolve_device(None, 0)


def test_installed_console_script_and_module_entry_point():
    script = shutil.which("cram")
    commands = [[sys.executable, "-m", "cramcli", "--help"]] + ([[script, "--help"]] if script else [])
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "prepare-data" in done.stdout


def test_ci_runs_exactly_the_readme_test_command():
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    block = readme.split("Run the tests:", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0].strip()
    ci = (root / ".ci" / "run").read_text().splitlines()
    assert block in ci, f"README's test command {block!r} is not a line of .ci/run"


def test_quiet_still_prints_the_final_report(capsys) -> None:
    from rich.table import Table

    from cramcli.utils.console import Output

    output = Output(quiet=True)
    output.info("a progress note")
    table = Table(title="report")
    table.add_column("the final column")
    output.report({"x": 1}, table)
    printed = capsys.readouterr().out
    assert "the final column" in printed and "a progress note" not in printed
