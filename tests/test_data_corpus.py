"""prepare-data on pre-tokenized corpora built here in the three layouts (parquet + tokenizer/, the original's
save_to_disk folder, the hub stream served from a local folder): rows and tokenizer copied as they are, a few
pretrain steps on the result, and bad corpora refused with one line naming the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from cramcli.cli import app
from cramcli.data.prepared import PreparedData
from cramcli.stages import pretrain
from cramcli.utils.console import Output
from tests.pretrain_helpers import SEQ, SPECIALS, VOCAB, write_budgets

runner = CliRunner()


def write_tokenizer(folder: Path) -> Path:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {tok: i for i, tok in enumerate(SPECIALS)} | {f"w{i}": i for i in range(len(SPECIALS), VOCAB)}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = WhitespaceSplit()
    tok.add_special_tokens(SPECIALS)
    tok.save(str(folder / "tokenizer.json"))
    return folder / "tokenizer.json"


def token_rows(n: int, seed: int = 0, length: int = SEQ, high: int = VOCAB) -> np.ndarray:
    return np.random.default_rng(seed).integers(len(SPECIALS), high, size=(n, length), dtype=np.int64)


def _table(rows: np.ndarray) -> pa.Table:
    return pa.table({"input_ids": pa.array(rows.tolist(), type=pa.list_(pa.int32()))})


def parquet_corpus(root: Path, rows: list[np.ndarray], tokenizer: bool = True) -> Path:
    """The hub layout downloaded: data/train-*.parquet + tokenizer/tokenizer.json."""
    (root / "data").mkdir(parents=True)
    for i, part in enumerate(rows):
        pq.write_table(_table(part), root / "data" / f"train-{i:05d}-of-{len(rows):05d}.parquet")
    if tokenizer:
        write_tokenizer(root / "tokenizer")
    return root


def saved_corpus(root: Path, rows: np.ndarray) -> Path:
    """The original's processed-corpus folder: save_to_disk output, tokenizer/ and model_config.json."""
    import datasets

    datasets.Dataset.from_dict({"input_ids": rows.tolist()}).save_to_disk(str(root))
    write_tokenizer(root / "tokenizer")
    (root / "model_config.json").write_text(json.dumps({"seq_length": SEQ, "vocab_size": VOCAB}))
    return root


def data_budget(path: Path, **overrides: object) -> Path:
    path.write_text(json.dumps({"source": "embedded", "seq_length": SEQ, "max_rows": 100_000,
                                "validation": {"share": 0}} | overrides))
    return path


def cli(root: Path, *args: str):
    old = os.getcwd()
    os.chdir(root)
    try:
        return runner.invoke(app, ["prepare-data", *args])
    finally:
        os.chdir(old)


def prepared_folders(root: Path) -> list[Path]:
    return sorted(p for p in (root / "outputs" / "data").glob("*") if p.is_dir() and not p.name.startswith("."))


def check_copied(root: Path, folder: Path, rows: np.ndarray, layout: str) -> Path:
    [out] = [p for p in prepared_folders(root) if (p / "manifest.json").exists()]
    data = PreparedData(out)
    manifest = data.manifest
    assert manifest["pretokenized"]["layout"] == layout
    assert manifest["num_rows"] == len(rows) and manifest["seq_length"] == SEQ and manifest["vocab_size"] == VOCAB
    assert manifest["tokenizer_trained"] is False
    assert manifest["special_tokens"]["<mask>"] == SPECIALS.index("<mask>")
    np.testing.assert_array_equal(data.rows(0, len(data)), rows)  # same rows, same order
    assert data.verify()["verified"] == [s["file"] for s in manifest["shards"]]  # each shard's checksum recorded
    assert (out / "tokenizer.json").read_bytes() == (folder / "tokenizer" / "tokenizer.json").read_bytes()
    return out


def short_pretrain(tmp_path: Path, data: Path) -> None:
    train, arch = write_budgets(tmp_path)
    out = tmp_path / "run"
    pretrain.run(Output(quiet=True), budget=str(train), arch=str(arch), data=data, out=out, device="cpu",
                 max_steps=4)
    report = json.loads((out / "report.json").read_text())
    assert report["optimizer_steps"] > 0 and report["data"] == str(data)  # 4 micro-steps → 2 optimizer steps here
    assert report["final_loss"] is not None and np.isfinite(report["final_loss"])


def test_parquet_folder_is_copied_with_its_own_tokenizer_and_pretrains(tmp_path):
    parts = [token_rows(40, 0), token_rows(24, 1)]
    corpus = parquet_corpus(tmp_path / "pile", parts)
    budget = data_budget(tmp_path / "b.json")
    result = cli(tmp_path, "--budget", str(budget), "--source", str(corpus))
    assert result.exit_code == 0, result.output
    out = check_copied(tmp_path, corpus, np.concatenate(parts), "parquet")
    again = cli(tmp_path, "--budget", str(budget), "--source", str(corpus), "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["reused"] is True
    short_pretrain(tmp_path, out)


def test_max_rows_stops_reading_the_corpus(tmp_path):
    parts = [token_rows(40, 0), token_rows(24, 1)]
    corpus = parquet_corpus(tmp_path / "pile", parts)
    result = cli(tmp_path, "--budget", str(data_budget(tmp_path / "b.json", max_rows=50)), "--source", str(corpus))
    assert result.exit_code == 0, result.output
    [out] = prepared_folders(tmp_path)
    data = PreparedData(out)
    assert len(data) == 50 and data.manifest["pretokenized"]["stopped_at_max_rows"] is True
    np.testing.assert_array_equal(data.rows(0, 50), np.concatenate(parts)[:50])


def test_save_to_disk_folder_of_the_original_is_copied(tmp_path):
    rows = token_rows(48, 2)
    saved = saved_corpus(tmp_path / "corpus", rows)
    budget = data_budget(tmp_path / "b.json")
    result = cli(tmp_path, "--budget", str(budget), "--source", str(saved))
    assert result.exit_code == 0, result.output
    out = check_copied(tmp_path, saved, rows, "save_to_disk")
    assert PreparedData(out).manifest["pretokenized"]["corpus_config"]["seq_length"] == SEQ
    short_pretrain(tmp_path, out)


def test_hub_corpus_streams_rows_and_fetches_only_its_tokenizer(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub

    rows = token_rows(30, 3)
    repo = tmp_path / "hub" / "snapshots" / "abc123"
    parquet_corpus(repo, [rows])
    calls: dict[str, object] = {}
    real_load = datasets.load_dataset

    def load_dataset(name, config=None, *, split, streaming, revision=None, **kwargs):
        assert streaming is True
        calls.setdefault("revisions", []).append(revision)  # type: ignore[union-attr]
        files = sorted(str(p) for p in (repo / "data").glob("*.parquet"))
        return real_load("parquet", data_files={split: files}, split=split, streaming=True)

    def snapshot_download(name, *, repo_type, allow_patterns, **kwargs):
        calls["snapshot"] = (name, repo_type, allow_patterns)
        return str(repo)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    name = "JonasGeiping/the_pile_WordPiecex32768_2efdb9d060d1ae95faf952ec1a50f020"
    result = cli(tmp_path, "--budget", str(data_budget(tmp_path / "b.json")), "--source", f"hf:{name}")
    assert result.exit_code == 0, result.output
    check_copied(tmp_path, repo, rows, "hub")
    assert calls["snapshot"] == (name, "dataset", ["tokenizer/*"])
    assert calls["revisions"][-1] == "abc123"  # type: ignore[index]  # rows read at the tokenizer's commit


def _bad(root: Path, corpus: Path, needle: str, budget: Path | None = None) -> None:
    budget = budget or data_budget(root / "b.json")
    result = cli(root, "--budget", str(budget), "--source", str(corpus))
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert "Traceback" not in text and needle in text, text
    assert len(text.splitlines()) <= 3, text  # one message (rich may wrap it)
    assert not [p for p in prepared_folders(root) if (p / "manifest.json").exists()]


def test_rows_of_another_length_are_refused_naming_the_file(tmp_path):
    corpus = parquet_corpus(tmp_path / "c", [token_rows(8, 0), token_rows(8, 1, length=SEQ + 1)])
    _bad(tmp_path, corpus, "train-00001-of-00002.parquet: row 8 has 33 tokens")


def test_ids_outside_the_vocabulary_are_refused_naming_the_file(tmp_path):
    rows = token_rows(8, 0)
    rows[5, 3] = VOCAB
    corpus = parquet_corpus(tmp_path / "c", [rows])
    _bad(tmp_path, corpus, f"train-00000-of-00001.parquet: row 5 holds token id {VOCAB}")


def test_corpus_without_tokenizer_is_refused(tmp_path):
    corpus = parquet_corpus(tmp_path / "c", [token_rows(8, 0)], tokenizer=False)
    _bad(tmp_path, corpus, "tokenizer")
    result = cli(tmp_path, "--budget", str(data_budget(tmp_path / "b.json")), "--source", str(corpus))
    assert str(corpus / "tokenizer" / "tokenizer.json") in result.output.replace("\n", "")


def test_model_config_disagreeing_with_the_budget_is_refused(tmp_path):
    saved = saved_corpus(tmp_path / "corpus", token_rows(8, 0))
    _bad(tmp_path, saved, "model_config.json: the corpus was built with seq_length 32",
         budget=data_budget(tmp_path / "b.json", seq_length=64))


def test_own_tokenizer_flag_is_refused_for_a_pretokenized_corpus(tmp_path):
    corpus = parquet_corpus(tmp_path / "c", [token_rows(8, 0)])
    tok = write_tokenizer(tmp_path / "other")
    result = cli(tmp_path, "--budget", str(data_budget(tmp_path / "b.json")), "--source", str(corpus), "--tokenizer", str(tok))
    assert result.exit_code == 2 and "drop --tokenizer" in result.output.replace("\n", " ")
