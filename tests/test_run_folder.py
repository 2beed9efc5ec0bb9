"""The run-folder policy: cram's marker, --force only on cram's folders, one writer at a time, one naming rule."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cramcli import budgets
from cramcli.stages import pretrain
from cramcli.utils import run_folder
from cramcli.utils.console import Output
from cramcli.utils.errors import UsageError

sys.path.insert(0, str(Path(__file__).parent))
from pretrain_helpers import write_budgets, write_prepared  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    write_prepared(tmp_path / "data")
    write_budgets(tmp_path, schedule={"name": "constant"})
    return tmp_path


def _pretrain(tmp: Path, out: Path, output: Output | None = None, **flags) -> None:
    pretrain.run(output or Output(quiet=True), budget=str(tmp / "train.json"), arch=str(tmp / "arch.json"),
                 data=tmp / "data", out=out, device="cpu", **flags)


def test_force_refuses_a_folder_cram_did_not_make_and_leaves_it_untouched(tmp):
    foreign = tmp / "notes"
    foreign.mkdir()
    (foreign / "ideas.txt").write_text("my notes")
    with pytest.raises(UsageError, match="did not create"):
        _pretrain(tmp, foreign, max_steps=2, force=True)
    assert sorted(p.name for p in foreign.iterdir()) == ["ideas.txt"]
    assert (foreign / "ideas.txt").read_text() == "my notes"


def test_force_replaces_cram_own_run(tmp):
    run = tmp / "run"
    _pretrain(tmp, run, max_steps=2)
    marker = run_folder.read_marker(run)
    assert marker["command"] == "pretrain" and len(marker["fingerprint"]) == 16
    (run / "scratch.txt").write_text("inside a cram folder")
    _pretrain(tmp, run, max_steps=4, force=True)
    assert not (run / "scratch.txt").exists()
    assert json.loads((run / "report.json").read_text())["micro_steps"] == 4


def test_another_commands_folder_is_refused(tmp):
    folder = tmp / "glue-out"
    folder.mkdir()
    run_folder.write_marker(folder, "finetune-glue", "x")
    (folder / "results.json").write_text("{}")
    with pytest.raises(UsageError, match="cram finetune-glue"):
        _pretrain(tmp, folder, max_steps=2, force=True)
    assert (folder / "results.json").read_text() == "{}"


def test_second_writer_gets_one_line_naming_the_holder(tmp):
    run = tmp / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom cramcli.utils import run_folder\n"
         "with run_folder.locked(__import__('pathlib').Path(sys.argv[1]), 'pretrain'):\n"
         "    print('held', flush=True); time.sleep(60)", str(run)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UsageError) as err:
            _pretrain(tmp, run, max_steps=2)
        message = str(err.value)
        assert "in use by `cram pretrain`" in message and f"pid {holder.pid}" in message and "\n" not in message
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    _pretrain(tmp, run, max_steps=2)  # the lock died with its holder
    assert (run / "final").is_dir()


def test_verbose_prints_provenance_and_run_config_stores_it(tmp, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one table row per line
    run = tmp / "run"
    _pretrain(tmp, run, output=Output(verbose=True), max_steps=2, hours=0.5, precision="fp16")
    printed = capsys.readouterr().out
    assert "--hours" in printed and "default" in printed and str(tmp / "train.json") in printed
    sources = json.loads((run / "run-config.json").read_text())["sources"]
    assert sources["train"]["hours"] == "--hours" and sources["train"]["max_steps"] == "--max-steps"
    assert sources["train"]["precision"] == "--precision"
    assert json.loads((run / "run-config.json").read_text())["train"]["precision"] == "fp16"
    assert sources["train"]["batch_size"] == f"file {tmp / 'train.json'}"
    assert sources["train"]["masking.rate"] == "default"
    assert sources["arch"]["hidden_size"] == f"file {tmp / 'arch.json'}"


def test_flag_overrides_are_validated_like_the_file(tmp):
    with pytest.raises(UsageError, match=r"^--hours -1.0: Input should be greater than 0"):
        _pretrain(tmp, tmp / "run", hours=-1.0)
    with pytest.raises(UsageError, match="with --micro-batch-size 5: .*multiple of micro_batch_size 5"):
        _pretrain(tmp, tmp / "run", micro_batch_size=5)
    assert not (tmp / "run").exists()


def test_budget_file_and_preset_share_one_default_folder_name(tmp_path, monkeypatch):
    from cramcli.data.prepared import open_for_training, write_pointer

    assert budgets.label("budgets/data_budget_hours_24.json") == budgets.label("24") == "24"
    assert budgets.label("budgets/train_budget_v2.json") == "v2" and budgets.label("mine/tiny.json") == "tiny"
    monkeypatch.chdir(tmp_path)
    data = write_prepared(tmp_path / "prepared")
    write_pointer(budgets.label("budgets/data_budget_demo.json"), data)
    arch = budgets.parse("arch", "a.json", {"vocab_size": 64, "max_seq_length": 32, "hidden_size": 32,
                                             "num_heads": 2, "intermediate_size": 64, "num_layers": 1})
    found = open_for_training(None, budgets.label("budgets/train_budget_demo.json"), arch)
    assert found.path == data.resolve()


def test_every_stage_refuses_a_foreign_out_even_with_force(tmp_path):
    from typer.testing import CliRunner

    from cramcli.cli import app

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    for args in (["prepare-data", "--budget", "demo", "--source", "embedded", "--max-documents", "20"],
                 ["train-tokenizer", "--budget", "demo", "--source", "embedded", "--max-documents", "20"]):
        result = CliRunner().invoke(app, [*args, "--out", str(foreign), "--force"])
        assert result.exit_code == 2 and "did not create" in result.output, result.output
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"] and (foreign / "notes.txt").read_text() == "keep me"
