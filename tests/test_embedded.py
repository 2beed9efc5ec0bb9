"""The embedded corpus and its GLUE-layout tasks: deterministic, structured, read by the real GLUE loader."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest

from cramcli.data import embedded
from cramcli.glue.loaders import load_task
from cramcli.glue.tasks import TASKS


def test_documents_are_deterministic_per_seed() -> None:
    a = list(embedded.iter_documents(seed=3, num_documents=50))
    assert a == list(embedded.iter_documents(seed=3, num_documents=50))
    assert a != list(embedded.iter_documents(seed=4, num_documents=50))
    assert len(a) == 50
    # a prefix is a prefix: asking for more documents does not change the first ones
    assert list(embedded.iter_documents(seed=3, num_documents=10)) == a[:10]


def test_documents_have_learnable_structure() -> None:
    docs = list(embedded.iter_documents(seed=0, num_documents=2000))
    assert all(3 <= d.count(" .") <= 12 for d in docs)  # a few sentences each
    words = Counter(w for d in docs for w in d.split())
    n = sum(words.values())
    entropy = -sum(c / n * math.log(c / n) for c in words.values())
    assert 3.5 < entropy < 6.0  # a real spread of words, far above what MLM must reach in the demo
    assert all(d == d.lower() and d.isascii() for d in docs)
    # facts come from the table and are stated consistently
    w = embedded.world()
    text = " ".join(docs)
    k = w.countries[0]
    assert f"the capital of {k.name} is {k.capital} ." in text
    for other in w.countries[1:]:
        assert f"the capital of {k.name} is {other.capital} ." not in text
    assert "an eagle" in text and " a eagle" not in text


@pytest.mark.parametrize("grammatical", [True, False])
def test_grammar_agreement(grammatical: bool) -> None:
    import random

    rng = random.Random(0)
    sing_verbs = {s for s, _ in embedded._INTRANSITIVE + embedded._COPULA + embedded._TRANSITIVE}
    plur_verbs = {p for _, p in embedded._INTRANSITIVE + embedded._COPULA + embedded._TRANSITIVE}
    sing_nouns = set(embedded._PROFESSIONS) | set(embedded._ANIMALS)
    plur_nouns = {p + "s" for p in embedded._PROFESSIONS} | {p for p, _ in embedded._ANIMALS.values()}
    checked = 0
    for _ in range(300):
        words = embedded._articles(embedded.grammar_sentence(rng, grammatical=grammatical)).split()
        if "that" in words or "who" in words:  # only plain clauses: "det [adj] noun verb ..."
            continue
        noun = words[2] if words[1] in embedded._ADJECTIVES else words[1]
        verb = words[words.index(noun) + 1]
        assert noun in sing_nouns | plur_nouns and verb in sing_verbs | plur_verbs, words
        assert ((noun in plur_nouns) == (verb in plur_verbs)) == grammatical, words
        checked += 1
    assert checked > 50


def test_glue_tasks_layouts_and_baselines(tmp_path: Path) -> None:
    info = embedded.write_glue_tasks(tmp_path, seed=0, num_train=60, num_dev=30)
    assert set(info["tasks"]) == {"sst2", "rte", "stsb"}
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
    embedded.write_glue_tasks(tmp_path / "a", seed=5, num_train=40, num_dev=20)
    embedded.write_glue_tasks(tmp_path / "b", seed=5, num_train=40, num_dev=20)
    embedded.write_glue_tasks(tmp_path / "c", seed=6, num_train=40, num_dev=20)
    for folder in ("SST-2", "RTE", "STS-B"):
        a = (tmp_path / "a" / folder / "train.tsv").read_text()
        assert a == (tmp_path / "b" / folder / "train.tsv").read_text()
        assert a != (tmp_path / "c" / folder / "train.tsv").read_text()
    # STS-B scores count shared attributes: identical attributes score 5, a score of 0 shares no name
    for line in (tmp_path / "a" / "STS-B" / "train.tsv").read_text().splitlines()[1:]:
        cols = line.split("\t")
        if float(cols[9]) == 0.0:
            assert set(cols[7].split()) & set(embedded._PEOPLE) != set(cols[8].split()) & set(embedded._PEOPLE)
    # RTE entailment: the hypothesis' value is stated in sentence 1 (directly or through the stated country)
    w = embedded.world()
    for line in (tmp_path / "a" / "RTE" / "train.tsv").read_text().splitlines()[1:]:
        _, s1, s2, label = line.split("\t")
        if label == "entailment":
            value = s2.split()[-2]
            assert value in s1.split() or value in {k.name for k in w.countries}, line
