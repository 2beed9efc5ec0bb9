"""A reduced `cram demo` end to end through the CLI: every artefact exists and loads; a rerun reuses everything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cramcli.cli import app

pytestmark = pytest.mark.slow  # ~1 minute on 2 CPU cores: real tokenizer, data, pretraining, fine-tuning, convert

REDUCED = ["--documents", "1500", "--minutes", "0.3", "--trials", "1", "--task-examples", "160", "--quiet"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo") / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), *REDUCED, "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_report_and_summary(demo: tuple[Path, dict]) -> None:
    out, report = demo
    assert report == json.loads((out / "report.json").read_text())
    assert set(report["stages"]) == {"train-tokenizer", "prepare-data", "pretrain", "glue tasks", "glue",
                                     "convert → flash", "convert → pytorch", "card"}
    assert not any(step["reused"] for step in report["stages"].values())
    for path in report["artefacts"].values():
        assert Path(path).exists(), path
    mlm = report["mlm"]
    assert mlm["end"] < mlm["start"]  # a short run still learns; the full demo's bar (< 50 %) is in the summary
    assert mlm["ok"] == (mlm["end"] < 0.5 * mlm["start"])
    assert set(report["tasks"]) == {"sst2", "rte", "stsb"}
    assert report["tasks"]["sst2"]["baseline"] == report["tasks"]["rte"]["baseline"] == 0.5
    assert report["tasks"]["stsb"]["baseline"] == 0.0 and report["tasks"]["stsb"]["metric"] == "pearson"
    for task in report["tasks"].values():
        assert -1.0 <= task["score"] <= 1.0 and task["trials"] == 1
    for parity in report["convert"].values():
        assert parity["max_abs_delta_logits"] <= parity["tolerance"]


def test_artefacts_load(demo: tuple[Path, dict]) -> None:
    from cramcli.data.prepared import PreparedData
    from cramcli.data.tokenizer import load_tokenizer
    from cramcli.model.checkpoint import load_pretrained

    out, _ = demo
    tok = load_tokenizer(out / "tokenizer" / "tokenizer.json")
    assert tok.token_to_id("<mask>") == 6
    data = PreparedData(out / "data")
    rows = data.rows(0, 4)
    assert rows.shape == (4, data.seq_length) and int(rows.max()) < data.vocab_size
    ids = torch.as_tensor(rows[:2].astype("int64"))
    final = load_pretrained(out / "run", head="mlm").eval()
    back = load_pretrained(out / "convert" / "pytorch", head="mlm").eval()
    with torch.no_grad():
        assert torch.allclose(final(ids).logits, back(ids).logits, atol=1e-5)
    assert load_pretrained(out / "convert" / "flash", head="base", attention="pytorch") is not None
    results = json.loads((out / "glue" / "results.json").read_text())
    assert set(results["tasks"]) == {"sst2", "rte", "stsb"}
    for folder in ("SST-2", "RTE", "STS-B"):
        assert (out / "glue_data" / folder / "train.tsv").is_file()
    lines = (out / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) >= 2 and (out / "run" / "training.png").is_file()
    card = (out / "run" / "final" / "README.md").read_text()
    assert "| Task | MNLI-(m/mm) |" in card and "](training.png)" in card and "](glue.png)" in card
    assert (out / "run" / "final" / "glue.png").is_file() and (out / "run" / "final" / "train_budget_demo.json").is_file()


def test_rerun_reuses_and_other_settings_need_fresh(demo: tuple[Path, dict]) -> None:
    out, first = demo
    runner = CliRunner()
    again = runner.invoke(app, ["demo", "--out", str(out), *REDUCED, "--json"])
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert all(step["reused"] for step in report["stages"].values())
    assert report["mlm"] == first["mlm"] and report["tasks"] == first["tasks"]
    other = runner.invoke(app, ["demo", "--out", str(out), "--minutes", "0.5"])
    assert other.exit_code == 2 and "--fresh" in other.output


def test_refuses_foreign_folder_and_bad_flags(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    runner = CliRunner()
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--fresh"])
    assert result.exit_code == 2 and "not a demo folder" in result.output
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "new"), "--minutes", "0"])
    assert result.exit_code == 2 and "--minutes" in result.output
