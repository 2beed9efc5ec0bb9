"""Budgets: shipped presets validate, broken files give one readable line each, exit 2, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cramcli import budgets
from cramcli.cli import app

runner = CliRunner()


def _validate(path: Path, kind: str = "train"):
    return runner.invoke(app, ["budgets", "validate", str(path), "--kind", kind])


def test_every_shipped_budget_validates():
    result = runner.invoke(app, ["budgets", "validate"])
    assert result.exit_code == 0, result.output
    assert "16 budget file(s) valid" in result.output


def test_presets_resolve_by_hours_and_name():
    assert budgets.resolve_path("train", "24").name == "train_budget_hours_24.json"
    assert budgets.resolve_path("arch", "v2").name == "arch_budget_v2.json"
    assert set(budgets.preset_names()) >= {"24", "v2", "demo"}


def test_legacy_preset_has_the_recipe_values():
    arch = budgets.load("arch", "24")
    assert (arch.layout, arch.num_layers, arch.hidden_size, arch.num_heads) == ("v1", 16, 768, 12)
    assert (arch.intermediate_size, arch.vocab_size, arch.max_seq_length) == (3072, 32768, 128)
    train = budgets.load("train", "24")
    assert train.schedule.name == "budget-triangle2"
    assert (train.batch_size, train.micro_batch_size, train.batch_ramp, train.grad_clip) == (4096, 128, 300_000, 0.5)
    assert (train.optimizer.lr, train.optimizer.eps, train.masking.rate) == (1e-3, 1e-12, 0.15)
    data = budgets.load("data", "24")
    assert (data.source, data.max_documents, data.max_rows, data.seq_length) == ("hf:allenai/c4:en", 25_000_000, 85_000_000, 128)
    assert data.tokenizer.vocab_size == 32768 and data.filter.max_tokens_per_char == 0.25
    glue = budgets.load("glue", "24")
    assert (glue.lr, glue.betas, glue.eps, glue.batch_size, glue.epochs, glue.warmup) == (4e-5, (0.9, 0.98), 1e-6, 16, 5, 0.1)
    v2 = budgets.load("train", "v2")
    assert (v2.batch_size, v2.batch_ramp, v2.masking.scheme, v2.masking.rate) == (8192, 0.6, "exact", 0.25)
    assert "norm" in v2.optimizer.no_decay


def test_path_to_a_json_file_works(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"hours": 0.5, "batch_size": 256, "micro_batch_size": 64}))
    train = budgets.load("train", str(path))
    assert train.hours == 0.5 and train.batch_size == 256


BROKEN = {
    "bad_json": ('{"hours": 24,,}', "train", "invalid JSON"),
    "unknown_key": ('{"hours": 24, "learning_rate": 0.1}', "train", "learning_rate: unknown key"),
    "wrong_type": ('{"hours": "a day"}', "train", "hours:"),
    "out_of_range_rate": ('{"masking": {"rate": 1.5}}', "train", "masking.rate:"),
    "batch_not_multiple": ('{"batch_size": 100, "micro_batch_size": 64}', "train", "multiple of micro_batch_size"),
    "heads_not_dividing": ('{"hidden_size": 100, "num_heads": 12}', "arch", "divisible by num_heads"),
    "sane_epochs": ('{"epochs": 10}', "glue", "exceeds 5"),
    "bad_choice": ('{"schedule": {"name": "warp-speed"}}', "train", "allowed:"),
    "huge_number": ('{"batch_size": 1e400}', "train", "batch_size:"),
    "huge_int": ('{"micro_batch_size": 99999999999999999999999}', "train", "micro_batch_size:"),
    "not_an_object": ("[1, 2, 3]", "train", "must be a JSON object"),
    "nan": ('{"hours": NaN}', "train", "NaN"),
    "negative_size": ('{"num_layers": -2}', "arch", "num_layers:"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_budget_gives_one_line_per_problem(tmp_path, case):
    text, kind, expected = BROKEN[case]
    path = tmp_path / f"{case}.json"
    path.write_text(text)
    result = _validate(path, kind)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert expected in result.output
    assert str(path) in result.output


def test_multiple_problems_are_all_reported(tmp_path):
    path = tmp_path / "many.json"
    path.write_text('{"hours": -1, "typo": 1, "masking": {"rate": 0}}')
    result = _validate(path)
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 3, result.output


def test_missing_file(tmp_path):
    result = _validate(tmp_path / "nope.json")
    assert result.exit_code == 2 and "not found" in result.output


def test_directory_instead_of_file(tmp_path):
    folder = tmp_path / "dir.json"
    folder.mkdir()
    result = _validate(folder)
    assert result.exit_code == 2 and "is a directory" in result.output


def test_empty_file(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text("  \n")
    result = _validate(path)
    assert result.exit_code == 2 and "empty" in result.output


def test_non_utf8_bytes(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"hours": 24, "note\xe9": 1}')
    result = _validate(path)
    assert result.exit_code == 2 and "not UTF-8" in result.output


def test_unknown_preset_name_lists_presets():
    result = runner.invoke(app, ["budgets", "show", "42", "--kind", "train"])
    assert result.exit_code == 2
    assert "presets: 24, demo, modern, v2" in result.output


def test_show_renders_every_field():
    result = runner.invoke(app, ["budgets", "show", "24", "--kind", "train"])
    assert result.exit_code == 0
    assert "schedule.name" in result.output and "budget-triangle2" in result.output


def test_schema_is_written_for_each_kind(tmp_path):
    result = runner.invoke(app, ["budgets", "schema", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for kind in budgets.KINDS:
        schema = json.loads((tmp_path / f"{kind}_budget.schema.json").read_text())
        assert schema["additionalProperties"] is False
        assert schema["title"] == f"cram {kind} budget"


def test_budget_hash_changes_with_content():
    a = budgets.load("train", "24")
    b = a.model_copy(update={"hours": 12.0})
    assert budgets.budget_hash(a) == budgets.budget_hash(budgets.load("train", "24"))
    assert budgets.budget_hash(a) != budgets.budget_hash(b)
