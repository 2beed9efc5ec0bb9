"""GLUE loaders on fixtures in the exact original layouts, quirks included."""

from __future__ import annotations

from pathlib import Path

import pytest

from cramcli.glue.loaders import load_task, read_tsv
from cramcli.glue.tasks import TASKS, parse_tasks
from cramcli.utils.errors import UsageError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"


def _write(path: Path, text: str, bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def test_cola_no_header_bare_quote_no_trailing_newline(tmp_path: Path) -> None:
    p = _write(tmp_path / "train.tsv", 'gj04\t1\t\tOur friends won\'t buy this analysis.\ngj04\t0\t*\tHe said "no.\n'
               "cl\t1\t\tLast row.")
    rows = read_tsv(p, TASKS["cola"])
    assert rows == [("Our friends won't buy this analysis.", None, 1.0), ('He said "no.', None, 0.0),
                    ("Last row.", None, 1.0)]


def test_sst2_header(tmp_path: Path) -> None:
    p = _write(tmp_path / "dev.tsv", "sentence\tlabel\nit 's a charming \" journey . \t1\nbad . \t0\n")
    assert read_tsv(p, TASKS["sst2"]) == [('it \'s a charming " journey . ', None, 1.0), ("bad . ", None, 0.0)]


def test_mrpc_bom_and_label_first(tmp_path: Path) -> None:
    p = _write(tmp_path / "train.tsv", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
               '1\t702876\t702977\tAmrozi said "he\tReferring to him\n0\t1\t2\tA\tB\n', bom=True)
    assert read_tsv(p, TASKS["mrpc"]) == [('Amrozi said "he', "Referring to him", 1.0), ("A", "B", 0.0)]


def test_qqp_qnli_rte_wnli_stsb(tmp_path: Path) -> None:
    qqp = _write(tmp_path / "qqp.tsv", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t2\t3\tWhy?\tHow?\t1\n")
    assert read_tsv(qqp, TASKS["qqp"]) == [("Why?", "How?", 1.0)]
    qnli = _write(tmp_path / "qnli.tsv", "index\tquestion\tsentence\tlabel\n0\tQ\tS\tnot_entailment\n")
    assert read_tsv(qnli, TASKS["qnli"]) == [("Q", "S", 1.0)]
    rte = _write(tmp_path / "rte.tsv", "index\tsentence1\tsentence2\tlabel\r\n0\tA\tB\tentailment\r\n")
    assert read_tsv(rte, TASKS["rte"]) == [("A", "B", 0.0)]
    wnli = _write(tmp_path / "wnli.tsv", "index\tsentence1\tsentence2\tlabel\n0\tA\tB\t1")
    assert read_tsv(wnli, TASKS["wnli"]) == [("A", "B", 1.0)]
    stsb = _write(tmp_path / "stsb.tsv", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1"
                  "\tsentence2\tscore\n0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man.\tA guy.\t4.750\n")
    assert read_tsv(stsb, TASKS["stsb"]) == [("A man.", "A guy.", 4.75)]


def _mnli_header(n: int) -> str:
    base = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
            "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]
    extra = ["label1", "gold_label"] if n == 12 else ["label1", "label2", "label3", "label4", "label5", "gold_label"]
    return "\t".join(base + extra)


def _mnli_row(n: int, gold: str) -> str:
    return "\t".join(["0", "1", "2", "g", "(", "(", "(", "(", "Prem.", "Hyp."] + ["x"] * (n - 11) + [gold])


def test_mnli_columns_by_header_and_load_task(tmp_path: Path) -> None:
    d = tmp_path / "MNLI"
    _write(d / "train.tsv", f"{_mnli_header(12)}\n{_mnli_row(12, 'neutral')}\n")
    _write(d / "dev_matched.tsv", f"{_mnli_header(16)}\n{_mnli_row(16, 'contradiction')}\n")
    _write(d / "dev_mismatched.tsv", f"{_mnli_header(16)}\n{_mnli_row(16, 'entailment')}")
    data = load_task(TASKS["mnli"], tmp_path)
    assert data.train == [("Prem.", "Hyp.", 1.0)]
    assert data.dev == {"dev_matched": [("Prem.", "Hyp.", 2.0)], "dev_mismatched": [("Prem.", "Hyp.", 0.0)]}
    assert data.source.startswith("tsv:")


def test_bad_inputs_name_file_and_line(tmp_path: Path) -> None:
    p = _write(tmp_path / "rte.tsv", "index\tsentence1\tsentence2\tlabel\n0\tA\tB\tentailment\n1\tA only\n")
    with pytest.raises(UsageError, match=r"rte.tsv:3: malformed row"):
        read_tsv(p, TASKS["rte"])
    p = _write(tmp_path / "rte2.tsv", "index\tsentence1\tsentence2\tlabel\n0\tA\tB\tneutral\n")
    with pytest.raises(UsageError, match=r"rte2.tsv:2: label 'neutral' is not one of"):
        read_tsv(p, TASKS["rte"])
    p = _write(tmp_path / "stsb.tsv", "sentence1\tsentence2\tscore\nA\tB\tfive\n")
    with pytest.raises(UsageError, match=r"stsb.tsv:2: score 'five'"):
        read_tsv(p, TASKS["stsb"])
    with pytest.raises(UsageError, match="no RTE/train.tsv"):
        load_task(TASKS["rte"], tmp_path)
    _write(tmp_path / "RTE" / "train.tsv", "index\tsentence1\tsentence2\tlabel\n")
    with pytest.raises(UsageError, match="missing RTE dev file"):
        load_task(TASKS["rte"], tmp_path)
    with pytest.raises(UsageError, match="unknown task foo"):
        parse_tasks("rte,foo", [])
    assert [t.name for t in parse_tasks("SST-2,sts-b", [])] == ["sst2", "stsb"]


def test_parquet_export(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "rte"
    d.mkdir()
    pq.write_table(pa.table({"sentence1": ["A"], "sentence2": ["B"], "label": [1], "idx": [0]}), d / "train.parquet")
    pq.write_table(pa.table({"sentence1": ["C"], "sentence2": ["D"], "label": [0], "idx": [0]}),
                   d / "validation-00000-of-00001.parquet")
    data = load_task(TASKS["rte"], tmp_path)
    assert data.train == [("A", "B", 1.0)] and data.dev == {"dev": [("C", "D", 0.0)]}


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared GLUE files absent")
def test_real_rte_and_stsb() -> None:
    rte = load_task(TASKS["rte"], SHARED)
    assert (len(rte.train), len(rte.dev["dev"])) == (2490, 277)
    stsb = load_task(TASKS["stsb"], SHARED)
    assert (len(stsb.train), len(stsb.dev["dev"])) == (5749, 1500)
    assert all(0.0 <= y <= 5.0 for *_, y in stsb.train)


def test_offline_without_glue_dir_says_where_to_put_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    # The libraries read the offline switches at import; another test may have imported them already.
    import datasets
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UsageError, match=r"pass --glue-dir DIR with the original folders \(RTE/train.tsv"):
        load_task(TASKS["rte"], None)
