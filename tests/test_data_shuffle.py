"""prepare-data's raw-text options: the seeded document shuffle, `filter.tokenizer` on the raw text, and
`.jsonl.zst` sources (multi-frame, and a file cut short)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from cramcli.budgets import NormalizationBudget
from cramcli.data.normalize import build_normalizer
from cramcli.data.prepared import PreparedData
from tests.test_data_pipeline import WORDS, _cli, budget_file, decoded_documents, english, junk, prepare, squash

SMALL_VOCAB = {"vocab_size": 150, "max_training_documents": 10_000}


@pytest.fixture
def distinct(tmp_path, monkeypatch):
    """60 distinct English documents, nothing for the filters or dedup to drop."""
    monkeypatch.chdir(tmp_path)
    rng = random.Random(0)
    docs = list(dict.fromkeys(f"Doc {i} " + english(rng, 4) for i in range(60)))
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "c.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return tmp_path, docs


def same_prefix(got: list[str], expected: list[str]) -> None:
    """The packer drops the last partial row, so the final document or two may be cut off."""
    assert len(got) >= len(expected) - 2
    assert [squash(d) for d in got] == [squash(d) for d in expected[: len(got)]]


def _prepared(root: Path, docs_dir: Path, name: str, **overrides: object) -> list[str]:
    budget = budget_file(root / f"{name}.json", docs_dir, filter={"enabled": False}, tokenizer=SMALL_VOCAB,
                         **overrides)
    return decoded_documents(prepare(budget))


def test_shuffle_is_the_seeded_permutation_of_the_documents_read(distinct):
    root, docs = distinct
    normalize = build_normalizer(NormalizationBudget()).normalize_str
    in_order = _prepared(root, root / "raw", "plain", shuffle=False)
    same_prefix(in_order, [normalize(d) for d in docs])
    a = _prepared(root, root / "raw", "a", shuffle=True, seed=1)
    a_again = _prepared(root, root / "raw", "a_again", shuffle=True, seed=1)
    b = _prepared(root, root / "raw", "b", shuffle=True, seed=2)
    assert a == a_again and a != b
    order = np.random.default_rng(1).permutation(len(docs))  # what datasets.Dataset.shuffle(seed=1) does
    same_prefix(a, [normalize(docs[i]) for i in order])
    same_prefix(b, [normalize(docs[i]) for i in np.random.default_rng(2).permutation(len(docs))])


def test_shuffle_leaves_out_dropped_documents(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = random.Random(3)
    docs = [f"Doc {i} " + english(rng, 3) for i in range(30)]
    stream = docs[:10] + [docs[2]] + docs[10:]  # one exact duplicate, read 11th
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "c.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in stream))
    shuffled = _prepared(tmp_path, tmp_path / "raw", "s", shuffle=True, seed=5)
    normalize = build_normalizer(NormalizationBudget()).normalize_str
    order = [i for i in np.random.default_rng(5).permutation(len(stream)) if i != 10]
    same_prefix(shuffled, [normalize(stream[i]) for i in order])
    manifest = PreparedData(sorted((tmp_path / "outputs" / "data").glob("raw_*"))[-1]).manifest
    assert manifest["shuffled"] == {"seed": 5, "documents": 31}


def _bpe_tokenizer(path: Path) -> Path:
    """A small BPE trained on English: words stay whole, junk breaks into characters (like ALBERT's model)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    rng = random.Random(1)
    text = [english(rng, 5) for _ in range(300)] + [" ".join(WORDS)]
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=400, special_tokens=["[UNK]"]))
    tok.save(str(path))
    return path


def test_filter_tokenizer_drops_junk_measured_on_the_raw_text(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = random.Random(2)
    clean = [f"Doc {i} " + english(rng, 4) for i in range(40)]
    junks = [junk(rng) for _ in range(6)]
    (tmp_path / "raw").mkdir()
    stream = clean[:20] + junks + clean[20:]
    (tmp_path / "raw" / "c.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in stream))
    tok = _bpe_tokenizer(tmp_path / "albert-like.json")
    budget = budget_file(tmp_path / "f.json", tmp_path / "raw",
                         filter={"max_tokens_per_char": 0.35, "tokenizer": str(tok)}, tokenizer=SMALL_VOCAB)
    out = prepare(budget)
    manifest = PreparedData(out).manifest
    assert manifest["counts"]["compressibility"] == len(junks)
    assert manifest["counts"]["documents_kept"] == len(clean)
    assert manifest["filter_tokenizer"]["spec"] == str(tok)
    normalize = build_normalizer(NormalizationBudget()).normalize_str
    same_prefix(decoded_documents(out), [normalize(d) for d in clean])

    missing = budget_file(tmp_path / "m.json", tmp_path / "raw", filter={"tokenizer": str(tmp_path / "nope.json")})
    result = _cli(tmp_path, "--budget", str(missing), "--workers", "1")
    assert result.exit_code == 2 and "filter.tokenizer" in result.output and "Traceback" not in result.output


def _zst(path: Path, lines: list[str], frames: int = 2) -> bytes:
    import zstandard

    data = "".join(lines).encode()
    cut = len(data) // frames
    parts = [data[i * cut : (i + 1) * cut if i < frames - 1 else len(data)] for i in range(frames)]
    blob = b"".join(zstandard.ZstdCompressor().compress(p) for p in parts)  # the Pile's shards hold several frames
    path.write_bytes(blob)
    return blob


def test_jsonl_zst_source_reads_every_frame_and_refuses_a_file_cut_short(distinct):
    root, docs = distinct
    (root / "zst").mkdir()
    blob = _zst(root / "zst" / "00.jsonl.zst", [json.dumps({"text": d}) + "\n" for d in docs])
    from_zst = _prepared(root, root / "zst", "z", shuffle=False)
    from_jsonl = _prepared(root, root / "raw", "j", shuffle=False)
    assert from_zst == from_jsonl
    same_prefix(from_zst, [build_normalizer(NormalizationBudget()).normalize_str(d) for d in docs])

    (root / "cut").mkdir()
    (root / "cut" / "00.jsonl.zst").write_bytes(blob[: len(blob) - 7])
    budget = budget_file(root / "c.json", root / "cut", tokenizer=SMALL_VOCAB)
    result = _cli(root, "--budget", str(budget), "--workers", "1")
    text = result.output.strip()
    assert result.exit_code == 2 and "00.jsonl.zst" in text and "cut short" in text.replace("\n", " "), text
    assert "Traceback" not in text
    finished = [p for p in (root / "outputs" / "data").glob("cut_*") if (p / "manifest.json").exists()]
    assert finished == []
