"""The demo's synthetic tasks: original GLUE layouts read by the real GLUE loader, deterministic, meaningful,
and named for what they are."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from cramcli.data import embedded
from cramcli.demo import tasks
from cramcli.glue.loaders import load_task
from cramcli.glue.tasks import TASKS


def test_glue_tasks_layouts_and_baselines(tmp_path: Path) -> None:
    info = tasks.write_glue_tasks(tmp_path, seed=0, num_train=60, num_dev=30)
    assert set(info["tasks"]) == {"sst2", "rte", "stsb"} and info["synthetic"] is True
    for name, folder in (("sst2", "SST-2"), ("rte", "RTE"), ("stsb", "STS-B")):
        assert info["tasks"][name]["description"].startswith(f"synthetic {folder}-style task from the embedded corpus")
    sst = (tmp_path / "SST-2" / "train.tsv").read_text().split("\n")
    assert sst[0] == "sentence\tlabel" and sst[-1] == ""
    assert all(line.split("\t")[1] in ("0", "1") for line in sst[1:-1])
    rte = (tmp_path / "RTE" / "dev.tsv").read_text().split("\n")
    assert rte[0] == "index\tsentence1\tsentence2\tlabel"
    assert all(line.split("\t")[3] in ("entailment", "not_entailment") for line in rte[1:-1])
    assert [line.split("\t")[0] for line in rte[1:-1]] == [str(i) for i in range(30)]
    sts = (tmp_path / "STS-B" / "dev.tsv").read_text().split("\n")
    assert sts[0].split("\t") == ["index", "genre", "filename", "year", "old_index", "source1", "source2",
                                  "sentence1", "sentence2", "score"]
    for line in sts[1:-1]:
        cols = line.split("\t")
        assert len(cols) == 10 and 0.0 <= float(cols[9]) <= 5.0
    for name, task in info["tasks"].items():
        assert Path(task["train"]).is_file() and Path(task["dev"]).is_file()
        data = load_task(TASKS[name], tmp_path)  # the very loader `cram glue` uses
        assert len(data.train) == 60 and len(data.dev["dev"]) == 30
        labels = [e[2] for e in data.dev["dev"]]
        if name == "stsb":
            assert task["baseline"] == 0.0 and task["metric"] == "pearson"
            assert set(labels) == {0.0, 1.0, 2.0, 3.0, 4.0, 5.0}
        else:
            assert task["metric"] == "accuracy"
            assert task["baseline"] == max(Counter(labels).values()) / len(labels) == 0.5


def test_glue_tasks_deterministic_and_meaningful(tmp_path: Path) -> None:
    tasks.write_glue_tasks(tmp_path / "a", seed=5, num_train=40, num_dev=20)
    tasks.write_glue_tasks(tmp_path / "b", seed=5, num_train=40, num_dev=20)
    tasks.write_glue_tasks(tmp_path / "c", seed=6, num_train=40, num_dev=20)
    for folder in ("SST-2", "RTE", "STS-B"):
        a = (tmp_path / "a" / folder / "train.tsv").read_text()
        assert a == (tmp_path / "b" / folder / "train.tsv").read_text()
        assert a != (tmp_path / "c" / folder / "train.tsv").read_text()
    # STS-B scores count shared attributes: identical attributes score 5, a score of 0 shares no name
    for line in (tmp_path / "a" / "STS-B" / "train.tsv").read_text().splitlines()[1:]:
        cols = line.split("\t")
        if float(cols[9]) == 0.0:
            assert set(cols[7].split()) & set(embedded.PEOPLE) != set(cols[8].split()) & set(embedded.PEOPLE)
    # RTE entailment: the hypothesis' value is stated in sentence 1 (directly or through the stated country)
    w = embedded.world()
    for line in (tmp_path / "a" / "RTE" / "train.tsv").read_text().splitlines()[1:]:
        _, s1, s2, label = line.split("\t")
        if label == "entailment":
            value = s2.split()[-2]
            assert value in s1.split() or value in {k.name for k in w.countries}, line
