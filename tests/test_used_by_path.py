"""Acceptance (issue 19): the commands people are told to type find each other's work through the default
folders, with no model or checkpoint named: prepare-data → pretrain → glue → convert → card, each saying what it
picked; and GLUE reruns its trials when a resumed pretraining changed the weights."""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cramcli.cli import app
from cramcli.model import runs
from cramcli.utils.digest import weights_sha256
from cramcli.utils.errors import UsageError

sys.path.insert(0, str(Path(__file__).parent))
from special_tokens_helpers import WORDS  # noqa: E402

runner = CliRunner()


def _cram(*args: str) -> str:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.output


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS[:-1]) for _ in range(rng.randint(4, 9))) + " ."


def _text(file: Path) -> Path:
    """A plain-text file (one document a line) of the demo's synthetic world: words enough for its 512 vocab."""
    from cramcli.data.embedded import iter_documents

    file.write_text("\n".join(doc.replace("\n", " ") for doc in iter_documents(0, 1500)) + "\n")
    return file


def _glue(root: Path) -> Path:
    """The demo GLUE budget's tasks (SST-2, RTE, STS-B) in the original TSV layout, tiny."""
    rng = random.Random(1)
    for name in ("SST-2", "RTE", "STS-B"):
        (root / name).mkdir(parents=True)
    for split, n in (("train", 24), ("dev", 8)):
        (root / "SST-2" / f"{split}.tsv").write_text(
            "sentence\tlabel\n" + "".join(f"{_sentence(rng)}\t{i % 2}\n" for i in range(n)))
        (root / "RTE" / f"{split}.tsv").write_text("index\tsentence1\tsentence2\tlabel\n" + "\n".join(
            f"{i}\t{_sentence(rng)}\t{_sentence(rng)}\t{'entailment' if i % 2 else 'not_entailment'}" for i in range(n)))
        head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        (root / "STS-B" / f"{split}.tsv").write_text(head + "".join(
            f"{i}\tg\tf\ty\t{i:04d}\tnone\tnone\t{_sentence(rng)}\t{_sentence(rng)}\t{(i % 6) * 0.8:.3f}\n"
            for i in range(n)))
    return root


@pytest.fixture
def empty_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_the_commands_find_each_other_and_a_changed_model_reruns_glue(empty_folder: Path, tmp_path: Path) -> None:
    text, tasks = _text(tmp_path / "corpus.txt"), _glue(tmp_path / "glue")
    _cram("prepare-data", "--budget", "demo", "--source", str(text))
    _cram("pretrain", "--budget", "demo", "--hours", "0.005", "--device", "cpu", "--max-steps", "4")
    run = Path("outputs/runs/demo")
    first_weights = weights_sha256(run / "final")

    said = _cram("glue", "--budget", "demo", "--trials", "1", "--glue-dir", str(tasks), "--device", "cpu")
    assert f"using {run}" in said  # names what it picked
    trials = sorted((run / "glue" / "trials").glob("*.json"))
    assert [t.name for t in trials] == ["rte_0.json", "sst2_0.json", "stsb_0.json"]
    results = json.loads((run / "glue" / "results.json").read_text())
    assert results["weights_sha256"] == first_weights

    said = _cram("convert", "--attention", "pytorch", "--device", "cpu")
    assert f"using {run}" in said and (run / "final-pytorch" / "config.json").is_file()
    said = _cram("card")
    assert f"using {run}" in said
    card = (run / "final" / "README.md").read_text()
    assert "RTE" in card and (run / "final" / "glue.png").is_file()  # card found the GLUE results by itself

    # Unchanged weights: the finished trials are reused, not retrained.
    stamp = {t.name: t.stat().st_mtime_ns for t in trials}
    _cram("glue", "--budget", "demo", "--trials", "1", "--glue-dir", str(tasks), "--device", "cpu")
    assert {t.name: t.stat().st_mtime_ns for t in trials} == stamp

    # A resumed pretraining writes a new final/: every trial reruns on the new weights, results say so.
    _cram("pretrain", "--budget", "demo", "--device", "cpu", "--resume", "--max-steps", "8")
    second_weights = weights_sha256(run / "final")
    assert second_weights != first_weights
    _cram("glue", "--budget", "demo", "--trials", "1", "--glue-dir", str(tasks), "--device", "cpu")
    for trial in trials:
        record = json.loads(trial.read_text())
        assert record["weights_sha256"] == second_weights, trial.name
    assert json.loads((run / "glue" / "results.json").read_text())["weights_sha256"] == second_weights


def _finished(folder: Path, when: int) -> Path:
    from cramcli.utils.run_folder import write_marker

    (folder / "final").mkdir(parents=True)
    (folder / "final" / "config.json").write_text("{}")
    write_marker(folder, "pretrain", "x")
    (folder / "report.json").write_text("{}")
    os.utime(folder / "report.json", ns=(when, when))
    return folder


def test_pick_run_takes_the_newest_finished_run_and_refuses_a_tie_or_none(empty_folder: Path) -> None:
    said: list[str] = []
    with pytest.raises(UsageError, match=r"no finished pretraining run in outputs/runs/\*.*cram pretrain"):
        runs.pick_run(None, budget=None, flag="--model", say=said.append)
    old = _finished(Path("outputs/runs/24"), 1_000_000_000_000_000_000)
    new = _finished(Path("outputs/runs/demo"), 2_000_000_000_000_000_000)
    unfinished = Path("outputs/runs/v2")
    unfinished.mkdir()  # no report.json: not a candidate, however new
    assert runs.pick_run(None, budget=None, flag="--model", say=said.append) == new
    assert said == [f"using {new} (the newest finished pretraining run in outputs/runs/*; pass --model to choose another)"]
    # --budget narrows by pretrain's naming rule: the preset 24 and its train budget file both mean runs/24.
    assert runs.pick_run(None, budget="24", flag="--model", say=said.append) == old
    assert runs.pick_run(None, budget="budgets/train_budget_hours_24.json", flag="--model", say=said.append) == old
    with pytest.raises(UsageError, match="no finished pretraining run in outputs/runs/v2"):
        runs.pick_run(None, budget="v2", flag="--model", say=said.append)
    os.utime(old / "report.json", ns=(2_000_000_000_000_000_000,) * 2)
    with pytest.raises(UsageError, match="finished at the same moment.*pass --model PATH or --budget"):
        runs.pick_run(None, budget=None, flag="--model", say=said.append)
    assert runs.pick_run(Path("anywhere"), budget=None, flag="--model", say=said.append) == Path("anywhere")


def test_commands_without_a_run_refuse_in_one_line(empty_folder: Path) -> None:
    for args in (["glue", "--trials", "5"], ["convert", "--attention", "pytorch"], ["card"],
                 ["push", "--repo-id", "a/b"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and "no finished pretraining run in outputs/runs/*" in res.output, args
        assert "Traceback" not in res.output


def test_convert_default_folders(empty_folder: Path) -> None:
    run = _finished(Path("outputs/runs/demo"), 1)
    assert runs.converted_folder(run / "final", "flash") == run / "final-flash"
    original = Path("orig/checkpoints/step_9")
    original.mkdir(parents=True)
    assert runs.converted_folder(original, "pytorch") == Path("outputs/converted/orig-pytorch")
    assert runs.converted_folder(Path("hub/crammed-bert"), "pytorch") == Path("outputs/converted/crammed-bert-pytorch")
