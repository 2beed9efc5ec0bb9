"""Raw text sources: local formats (txt, WikiExtractor, jsonl, gz, json and parquet via datasets), bad bytes and
lines counted, clear errors for missing paths, the embedded corpus and unreachable hub datasets."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from cramcli.data.sources import open_source
from cramcli.utils.errors import RunError, UsageError

SHARED = Path(__file__).resolve().parents[2] / "shared"


def docs(spec: Path | str, **kwargs: object) -> tuple[list[str], object]:
    source = open_source(str(spec), **kwargs)  # type: ignore[arg-type]
    return list(source.documents()), source


def test_wikiextractor_files_give_one_document_per_article_without_tags(tmp_path):
    (tmp_path / "wiki_00").write_text(
        '<doc id="1" url="u" title="A">\nA\n\nFirst article text.\n</doc>\n'
        '<doc id="2" url="u" title="B">\nB\n\nSecond article.\nMore.\n</doc>\n'
    )
    got, _ = docs(tmp_path)
    assert got == ["A\n\nFirst article text.", "B\n\nSecond article.\nMore."]


def test_plain_text_documents_are_blank_line_separated_and_gz_works(tmp_path):
    (tmp_path / "a.txt").write_text("one\nstill one\n\n\ntwo\n")
    with gzip.open(tmp_path / "b.txt.gz", "wt") as handle:
        handle.write("three\n")
    (tmp_path / ".hidden").write_text("ignored")
    got, source = docs(tmp_path)
    assert got == ["one\nstill one", "two", "three"]
    assert source.stats.files_read == 2


def test_bad_utf8_bytes_are_replaced_and_counted(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"caf\xe9 ok\n\nfine \xff\xfe end\n")
    got, source = docs(tmp_path)
    assert got == ["caf\ufffd ok", "fine \ufffd\ufffd end"]
    assert source.stats.bad_bytes == 3


def test_jsonl_bad_lines_are_counted_with_file_and_line(tmp_path):
    lines = [json.dumps({"text": "good"}), "{broken", json.dumps({"other": 1}), json.dumps({"text": "also"})]
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    got, source = docs(tmp_path)
    assert got == ["good", "also"]
    assert source.stats.bad_lines == 2
    assert source.stats.bad_line_examples[0].endswith("a.jsonl.gz:2: not JSON (Expecting property name enclosed in"
                                                      " double quotes)")
    assert ":3: no string field 'text'" in source.stats.bad_line_examples[1]


def test_json_and_parquet_go_through_hf_datasets(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["p1", "p2"], "n": [1, 2]}), tmp_path / "a.parquet")
    (tmp_path / "b.json").write_text(json.dumps([{"body": "j1"}, {"body": "j2"}]))
    got, _ = docs(tmp_path, text_field="body")
    assert got == ["p1", "p2", "j1", "j2"]
    with pytest.raises(UsageError, match="no text field 'text'"):
        docs(tmp_path / "a.parquet")


def test_identity_changes_when_a_file_changes(tmp_path):
    (tmp_path / "a.txt").write_text("one\n")
    before = open_source(str(tmp_path)).identity()
    assert open_source(str(tmp_path)).identity() == before
    (tmp_path / "a.txt").write_text("one, edited\n")
    assert open_source(str(tmp_path)).identity() != before


def test_missing_path_and_empty_folder_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="no such file or folder"):
        open_source(str(tmp_path / "missing"))
    with pytest.raises(UsageError, match="no files"):
        open_source(str(tmp_path))


def test_unreachable_hub_dataset_says_how_to_use_local_files(monkeypatch):
    import datasets

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Couldn't reach 'allenai/c4' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    source = open_source("hf:allenai/c4:en")
    assert source.identity() == {"kind": "hf", "name": "allenai/c4", "config": "en", "split": "train"}
    with pytest.raises(RunError, match="use local files instead: --source ./folder"):
        list(source.documents())


def test_embedded_source_streams_the_requested_number_of_documents():
    try:
        import cramcli.data.embedded  # noqa: F401
    except ImportError:
        with pytest.raises(RunError, match="embedded corpus"):
            list(open_source("embedded", max_documents=3).documents())
        return
    got, source = docs("embedded", max_documents=3, seed=1)
    assert len(got) == 3 and all(isinstance(t, str) and t for t in got)
    assert source.identity()["kind"] == "embedded"


def test_real_corpus_samples_read_cleanly():
    corpus = SHARED / "data" / "corpus"
    if not corpus.is_dir():
        pytest.skip("../shared/data/corpus is not present")
    c4, source = docs(corpus / "c4-en-sample")
    assert len(c4) == 1000 and source.stats.bad_lines == 0
    wiki = open_source(str(corpus / "enwiki-2015-sample" / "wiki_00"))
    first = next(wiki.documents())
    assert first.startswith("Anarchism") and "<doc" not in first and "</doc>" not in first
