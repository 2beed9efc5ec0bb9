"""prepare-data end to end on small corpora made here: decoding, packing, dedup, filter, cache, atomicity."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cramcli.budgets import NormalizationBudget
from cramcli.cli import app
from cramcli.data import packing
from cramcli.data.normalize import build_normalizer
from cramcli.data.prepared import PreparedData, default_prepared_dir
from cramcli.data.tokenizer import SEP_ID, load_tokenizer
from cramcli.stages import prepare_data
from cramcli.utils.console import Output
from cramcli.utils.errors import UsageError

REPO = Path(__file__).resolve().parent.parent
WORDS = ["the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at", "from", "his", "her", "it", "an", "were", "are", "which", "this", "be", "also", "had", "city", "river", "music", "school", "world", "house", "water", "light", "story", "paper", "garden", "winter", "summer", "market", "history", "science", "village", "mountain", "station", "library", "animal", "season", "family", "country", "island", "forest", "letter", "window", "travel", "engine", "bridge", "theatre", "museum", "kitchen", "harbour", "valley", "castle", "council"]


def english(rng: random.Random, sentences: int) -> str:
    out = []
    for _ in range(sentences):
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 14))]
        out.append(" ".join(words).capitalize() + ".")
    return " ".join(out)


def junk(rng: random.Random) -> str:
    return " ".join("".join(rng.choice("0123456789#|%~^qzx") for _ in range(rng.randint(2, 6))) for _ in range(60))


def make_corpus(folder: Path, num_docs: int = 120, seed: int = 0) -> dict[str, list[str]]:
    """A jsonl corpus with planted exact duplicates, near duplicates and junk; returns what was planted."""
    rng = random.Random(seed)
    docs = [english(rng, rng.randint(3, 9)) for _ in range(num_docs)]
    long_docs = [english(rng, 12) for _ in range(4)]
    near = []
    for doc in long_docs:
        words = doc.split()
        words[len(words) // 2] = "zebra"
        near.append(" ".join(words))
    exact = [docs[3], docs[7], long_docs[0]]
    junks = [junk(rng) for _ in range(5)]
    stream = docs[:60] + long_docs + exact[:1] + junks + near + docs[60:] + exact[1:]
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w") as handle:
        for text in stream:
            handle.write(json.dumps({"text": text}) + "\n")
    return {"clean": docs + long_docs, "exact": exact, "near": near, "junk": junks}


def budget_file(path: Path, source: Path, **overrides: object) -> Path:
    budget = {
        "source": str(source),
        "max_documents": 10_000,
        "filter": {"max_tokens_per_char": 0.3},
        "tokenizer": {"vocab_size": 300, "max_training_documents": 10_000},
        "seq_length": 32,
        "ordering": "none",
        "max_rows": 100_000,
        "shuffle": False,  # these tests check stream order; test_data_shuffle.py checks the shuffle
        "validation": {"share": 0},  # every document in the training rows; test_heldout.py checks the split
    }
    budget.update(overrides)
    path.write_text(json.dumps(budget))
    return path


def prepare(budget: Path, **flags: object) -> Path:
    args = {"source": None, "out": None, "tokenizer": None, "max_documents": None, "workers": 1, "seed": None,
            "force": False}
    args.update(flags)
    output = Output(quiet=True)
    prepare_data.run(output, budget=str(budget), **args)
    found = default_prepared_dir(Path(budget).stem)
    assert found is not None
    return found


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    planted = make_corpus(tmp_path / "raw")
    return tmp_path, planted


def decoded_documents(path: Path) -> list[str]:
    data = PreparedData(path)
    tok = load_tokenizer(data.tokenizer_path)
    ids = data.rows(0, len(data)).ravel().tolist()
    docs, current = [], []
    for token in ids:
        if token == SEP_ID:
            docs.append(tok.decode(current))
            current = []
        else:
            current.append(token)
    return docs


def squash(text: str) -> str:
    return "".join(text.split())


def _stream_order(root: Path) -> list[str]:
    """Every document of the planted corpus in file order."""
    return [json.loads(line)["text"] for line in (root / "raw" / "corpus.jsonl").read_text().splitlines()]


def expected_documents(root: Path, planted: dict[str, list[str]]) -> list[str]:
    """What should survive, in stream order: normalised, first copy of exact duplicates, no near dups/junk."""
    normalize = build_normalizer(NormalizationBudget()).normalize_str
    dropped = {normalize(t) for t in planted["near"] + planted["junk"]}
    seen: set[str] = set()
    out = []
    for line in (root / "raw" / "corpus.jsonl").read_text().splitlines():
        text = normalize(json.loads(line)["text"])
        if text not in seen and text not in dropped:
            out.append(text)
        seen.add(text)
    return out


def test_shards_decode_back_to_the_normalised_documents_in_order(corpus):
    root, planted = corpus
    out = prepare(budget_file(root / "b.json", root / "raw"))
    expected = [squash(t) for t in expected_documents(root, planted)]
    got = [squash(d) for d in decoded_documents(out)]
    # Ordering "none" keeps stream order; only the document cut by the dropped final partial row is missing.
    assert got == expected[: len(got)]
    assert len(got) == len(expected) - 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "cram-prepared/1" and manifest["dtype"] == "uint16"
    assert manifest["special_tokens"]["<sep>"] == SEP_ID == 5


def test_every_row_has_the_fixed_length_and_separators_sit_between_documents(corpus):
    root, planted = corpus
    out = prepare(budget_file(root / "b.json", root / "raw"))
    data = PreparedData(out)
    manifest = data.manifest
    shard = out / manifest["shards"][0]["file"]
    assert shard.stat().st_size == data.num_rows * 32 * 2
    rows = data.rows(0, len(data))
    assert rows.shape == (manifest["num_rows"], 32)
    flat = rows.ravel()
    seps = np.flatnonzero(flat == SEP_ID)
    assert manifest["counts"]["documents_kept"] == len(seps) + 1  # the last <sep> fell in the dropped tail
    assert (np.diff(seps) > 1).all()  # never two separators in a row (no empty documents)
    tok = load_tokenizer(data.tokenizer_path)
    lengths = [len(tok.encode(t).ids) for t in expected_documents(root, planted)]
    assert manifest["num_tokens"] + manifest["counts"]["tokens_dropped_tail"] == sum(lengths)
    assert np.array_equal(seps + 1, np.cumsum(lengths)[:-1])  # each <sep> closes exactly one document


def test_dedup_removes_planted_exact_and_near_duplicates(corpus):
    root, planted = corpus
    out = prepare(budget_file(root / "b.json", root / "raw"))
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert counts["exact_duplicates"] == len(planted["exact"])
    assert counts["near_duplicates"] == len(planted["near"])
    docs = [squash(d) for d in decoded_documents(out)]
    assert len(docs) == len(set(docs))
    assert not any("zebra" in d for d in docs)


def test_compressibility_filter_removes_planted_junk_only(corpus):
    root, planted = corpus
    out = prepare(budget_file(root / "b.json", root / "raw"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["compressibility"] == len(planted["junk"])
    assert manifest["removed_share"]["compressibility"] == pytest.approx(5 / manifest["counts"]["documents_read"],
                                                                         abs=1e-6)
    assert not any("#" in d or "|" in d for d in decoded_documents(out))


def test_same_command_reuses_cache_and_any_change_rebuilds(corpus, capsys):
    root, _ = corpus
    budget = budget_file(root / "b.json", root / "raw")
    first = prepare(budget)
    mtime = (first / "manifest.json").stat().st_mtime_ns
    output = Output()
    prepare_data.run(output, budget=str(budget), source=None, out=None, tokenizer=None, max_documents=None,
                     workers=1, seed=None, force=False)
    assert "reused cached" in capsys.readouterr().out
    assert (first / "manifest.json").stat().st_mtime_ns == mtime
    # A budget change and a source change each give a new folder.
    changed = prepare(budget_file(root / "b.json", root / "raw", seq_length=16))
    assert changed != first and PreparedData(changed).seq_length == 16
    budget_file(root / "b.json", root / "raw")
    with open(root / "raw" / "corpus.jsonl", "a") as handle:
        handle.write(json.dumps({"text": english(random.Random(5), 5)}) + "\n")
    assert prepare(budget) not in (first, changed)


def test_explicit_out_with_other_settings_needs_force(corpus):
    root, _ = corpus
    budget = budget_file(root / "b.json", root / "raw")
    out = root / "prepared"
    prepare(budget, out=out)
    first_hash = json.loads((out / "manifest.json").read_text())["content_hash"]
    prepare(budget, out=out)  # same settings: reused
    with pytest.raises(UsageError, match="--force"):
        prepare(budget, out=out, seed=7)
    prepare(budget, out=out, seed=7, force=True)
    assert json.loads((out / "manifest.json").read_text())["content_hash"] != first_hash


def fixed_tokenizer(root: Path) -> Path:
    """A tokenizer trained once: WordPiece training breaks count ties in hash-map order (see docs/data.md), so
    runs are compared bit for bit with the same tokenizer."""
    from cramcli.budgets import DataBudget
    from cramcli.data.tokenizer import train_tokenizer

    budget = DataBudget()
    texts = [json.loads(line)["text"] for line in (root / "raw" / "corpus.jsonl").read_text().splitlines()]
    tok = train_tokenizer(texts, budget.tokenizer, budget.normalization, vocab_size=300)
    tok.save(str(root / "tokenizer.json"))
    return root / "tokenizer.json"


def test_worker_processes_produce_identical_rows(corpus):
    root, _ = corpus
    budget = budget_file(root / "b.json", root / "raw")
    tok = fixed_tokenizer(root)
    one = prepare(budget, out=root / "w1", workers=1, tokenizer=tok)
    two = prepare(budget, out=root / "w2", workers=2, tokenizer=tok)
    m1, m2 = (json.loads((p / "manifest.json").read_text()) for p in (one, two))
    assert m1["data_hash"] == m2["data_hash"] and m1["content_hash"] == m2["content_hash"]


def test_error_mid_run_leaves_no_folder_that_looks_finished(corpus, monkeypatch):
    root, _ = corpus
    budget = budget_file(root / "b.json", root / "raw")

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(packing, "write_shards", boom)
    with pytest.raises(RuntimeError):
        prepare(budget)
    data_root = root / "outputs" / "data"
    assert not [p for p in data_root.iterdir() if (p / "manifest.json").exists()]
    assert not list(data_root.glob(".*.partial"))


_SLOW_RUN = """
import sys, time
from cramcli.data import packing
def slow(*args, **kwargs):
    print("writing", flush=True)
    time.sleep(60)
packing.write_shards = slow
from cramcli.cli import app
app(sys.argv[1:])
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_leaves_no_finished_folder_and_rerun_matches_uninterrupted(corpus, sig):
    root, _ = corpus
    budget = budget_file(root / "b.json", root / "raw")
    tok = fixed_tokenizer(root)
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_RUN, "prepare-data", "--budget", str(budget), "--workers", "1", "--quiet",
         "--tokenizer", str(tok)],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},  # this checkout's cramcli, not an installed one
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "writing"
    data_root = root / "outputs" / "data"
    assert list(data_root.glob(".*.partial"))  # work in progress, hidden
    proc.send_signal(sig)
    proc.wait(timeout=30)
    assert not [p for p in data_root.iterdir() if (p / "manifest.json").exists()]
    assert default_prepared_dir("b") is None
    if sig == signal.SIGTERM:
        assert not list(data_root.glob(".*.partial"))  # SIGTERM unwinds and cleans up
    rerun = prepare(budget, tokenizer=tok)
    assert not list(data_root.glob(".*.partial"))  # the killed run's leftovers are gone
    clean = prepare(budget, out=root / "uninterrupted", tokenizer=tok)
    m1, m2 = (json.loads((p / "manifest.json").read_text()) for p in (rerun, clean))
    assert (m1["content_hash"], m1["data_hash"]) == (m2["content_hash"], m2["data_hash"])


@pytest.mark.parametrize("ordering", ["sentence-ends", "random", "unigram"])
def test_orderings_permute_the_same_rows(corpus, ordering):
    root, _ = corpus
    tok = fixed_tokenizer(root)
    base = PreparedData(prepare(budget_file(root / "b.json", root / "raw"), tokenizer=tok))
    ordered = PreparedData(prepare(budget_file(root / "o.json", root / "raw", ordering=ordering), tokenizer=tok))
    rows, others = base.rows(0, len(base)), ordered.rows(0, len(ordered))
    assert sorted(map(bytes, rows.astype(np.int32))) == sorted(map(bytes, others.astype(np.int32)))
    assert not np.array_equal(rows, others)
    if ordering == "sentence-ends":
        dot = load_tokenizer(ordered.tokenizer_path).token_to_id(".")
        counts = (others == dot).sum(axis=1)
        assert (np.diff(counts) <= 0).all()
    if ordering == "unigram":
        info = ordered.manifest["ordering"]
        assert info["unigram_score_first"] < info["unigram_score_last"]  # rarest tokens first


def test_min_chars_drops_short_documents(corpus):
    root, planted = corpus
    budget = budget_file(root / "b.json", root / "raw", filter={"max_tokens_per_char": 0.3, "min_chars": 400})
    counts = PreparedData(prepare(budget, tokenizer=fixed_tokenizer(root))).manifest["counts"]
    normalize = build_normalizer(NormalizationBudget()).normalize_str
    short = sum(len(normalize(t)) < 400 for t in _stream_order(root))
    assert counts["too_short"] == short > 0


def test_max_rows_caps_the_output(corpus):
    root, _ = corpus
    data = PreparedData(prepare(budget_file(root / "b.json", root / "raw", max_rows=7)))
    assert len(data) == 7 and data.manifest["counts"]["rows_dropped_by_cap"] > 0


def test_reader_crosses_shards(corpus, monkeypatch):
    root, _ = corpus
    monkeypatch.setattr(packing, "SHARD_ROWS", 10)
    data = PreparedData(prepare(budget_file(root / "b.json", root / "raw")))
    assert len(data.manifest["shards"]) > 2
    whole = np.concatenate([np.fromfile(data.path / s["file"], dtype=np.uint16).reshape(-1, 32)
                            for s in data.manifest["shards"]])
    assert np.array_equal(data.rows(7, 9), whole[7:16])
    assert np.array_equal(data.rows(0, len(data)), whole)


def test_reader_rejects_missing_and_truncated_folders(corpus):
    root, _ = corpus
    with pytest.raises(UsageError, match="cram prepare-data"):
        PreparedData(root / "nothing")
    out = prepare(budget_file(root / "b.json", root / "raw"))
    shard = out / "tokens_00000.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(UsageError, match="tokens_00000.bin"):
        PreparedData(out)


def test_token_dtype_is_uint16_only_when_the_vocab_fits():
    assert packing.token_dtype(65535) == np.uint16
    assert packing.token_dtype(65536) == np.int32


# ----------------------------------------------------------------------------------------------------------
# bad input through the command line: one line, exit code 2, nothing that looks finished

runner = CliRunner()


def _cli(root: Path, *args: str):
    old = os.getcwd()
    os.chdir(root)
    try:
        return runner.invoke(app, ["prepare-data", *args])
    finally:
        os.chdir(old)


def test_bad_inputs_give_one_line_errors(tmp_path):
    budget = budget_file(tmp_path / "b.json", tmp_path / "raw")
    cases = {}
    cases["missing path"] = ("--source", str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("\n\n")
    cases["empty corpus"] = ("--source", str(tmp_path / "empty"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jsonl").write_text('{"text": 1}\nnot json\n')
    cases["all lines bad"] = ("--source", str(tmp_path / "bad"))
    (tmp_path / "junk").mkdir()
    rng = random.Random(1)
    (tmp_path / "junk" / "a.txt").write_text("\n\n".join(junk(rng) for _ in range(30)))
    cases["filters to nothing"] = ("--source", str(tmp_path / "junk"))
    make_corpus(tmp_path / "small", num_docs=10)
    expected = {"missing path": "no such file", "empty corpus": "no documents", "all lines bad": "a.jsonl:1",
                "filters to nothing": "filters down to nothing"}
    for name, args in cases.items():
        result = _cli(tmp_path, "--budget", str(budget), *args, "--workers", "1")
        assert result.exit_code == 2, (name, result.output)
        assert expected[name] in result.output.replace("\n", " "), (name, result.output)
        assert "Traceback" not in result.output
    big = budget_file(tmp_path / "big.json", tmp_path / "small", tokenizer={"vocab_size": 50_000})
    result = _cli(tmp_path, "--budget", str(big), "--workers", "1")
    assert result.exit_code == 2 and "larger than" in result.output
    finished = [p for p in (tmp_path / "outputs" / "data").glob("*") if (p / "manifest.json").exists()]
    assert finished == []


def test_json_report_and_hub_error_message(tmp_path, monkeypatch):
    make_corpus(tmp_path / "raw")
    budget = budget_file(tmp_path / "b.json", tmp_path / "raw")
    result = _cli(tmp_path, "--budget", str(budget), "--workers", "1", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["num_rows"] > 0 and report["counts"]["documents_read"] == 136

    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'allenai/c4' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    result = _cli(tmp_path, "--budget", str(budget), "--source", "hf:allenai/c4:en", "--workers", "1")
    assert result.exit_code == 1
    assert "use local files instead" in result.output and "Traceback" not in result.output
