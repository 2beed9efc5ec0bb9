"""Acceptance: a tokenizer whose special tokens sit at non-default ids (after the words, in another order), end
to end through the CLI: prepare-data --tokenizer → pretrain → glue → convert → fill-mask."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cramcli import budgets
from cramcli.cli import app

sys.path.insert(0, str(Path(__file__).parent))
from special_tokens_helpers import IDS, VOCAB, WORDS, permuted_tokenizer  # noqa: E402

runner = CliRunner()


def _cram(*args: str) -> dict:
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS[:-1]) for _ in range(rng.randint(4, 9))) + " ."


def _corpus(folder: Path) -> Path:
    rng = random.Random(0)
    folder.mkdir(parents=True)
    docs = [" ".join(_sentence(rng) for _ in range(6)) for _ in range(300)]
    (folder / "a.txt").write_text("\n\n".join(docs) + "\n")
    return folder


def _glue(root: Path) -> Path:
    rng = random.Random(1)
    for name in ("RTE", "CoLA"):
        (root / name).mkdir(parents=True)
    for split, n in (("train", 48), ("dev", 16)):
        rows = [f"{i}\t{_sentence(rng)}\t{_sentence(rng)}\t{'entailment' if i % 2 else 'not_entailment'}"
                for i in range(n)]
        (root / "RTE" / f"{split}.tsv").write_text("index\tsentence1\tsentence2\tlabel\n" + "\n".join(rows))
        (root / "CoLA" / f"{split}.tsv").write_text("".join(f"s\t{i % 2}\t\t{_sentence(rng)}\n" for i in range(n)))
    return root


def _budgets(folder: Path) -> tuple[Path, Path, Path]:
    data = budgets.load("data", "demo").model_dump(mode="json")
    data.update(max_documents=300, seq_length=32, ordering="random")
    data["dedup"]["near"] = False
    arch = {"layout": "v2", "num_layers": 2, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64,
            "vocab_size": VOCAB, "max_seq_length": 32, "classifier": {"head_dim": 32}}
    train = {"hours": 1.0, "schedule": {"name": "budget-one-cycle"}, "schedule_clock": "steps", "max_steps": 6, "batch_size": 16, "micro_batch_size": 8,
             "batch_ramp": 0, "precision": "fp32", "log_every_steps": 2, "checkpoint_every_minutes": 60,
             "masking": {"scheme": "exact", "rate": 0.25}, "optimizer": {"lr": 1e-2}}
    paths = folder / "data_budget_x.json", folder / "arch_budget_x.json", folder / "train_budget_x.json"
    for path, value in zip(paths, (data, arch, train), strict=True):
        path.write_text(json.dumps(value))
    return paths


def test_permuted_special_ids_end_to_end(tmp_path: Path) -> None:
    tok_file = permuted_tokenizer(tmp_path / "tok" / "tokenizer.json")
    data_budget, arch_budget, train_budget = _budgets(tmp_path)
    fields = {"pad_token_id": IDS["<pad>"], "cls_token_id": IDS["<cls>"], "sep_token_id": IDS["<sep>"],
              "mask_token_id": IDS["<mask>"]}

    # prepare-data with the given tokenizer: rows end documents with its <sep>, the manifest names its ids.
    _cram("prepare-data", "--budget", str(data_budget), "--source", str(_corpus(tmp_path / "raw")),
          "--tokenizer", str(tok_file), "--out", str(tmp_path / "data"))
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["special_tokens"] == IDS and manifest["vocab_size"] == VOCAB
    from cramcli.data.prepared import PreparedData

    rows = PreparedData(tmp_path / "data").rows(0, 8)
    assert (rows == IDS["<sep>"]).any() and not (rows == IDS["<pad>"]).any()

    # pretrain: masks with the tokenizer's <mask>; config.json records the ids.
    report = _cram("pretrain", "--budget", str(train_budget), "--arch", str(arch_budget), "--data",
                   str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--max-steps", "6", "--device", "cpu")
    assert report["micro_steps"] == 6 and report["final_loss"] < report["first_loss"]
    final = tmp_path / "run" / "final"
    config = json.loads((final / "config.json").read_text())
    assert {k: config[k] for k in fields} == fields

    # glue: pads with the tokenizer's pad (the results say which ids were used).
    _cram("glue", "--model", str(tmp_path / "run"), "--glue-dir", str(_glue(tmp_path / "glue")), "--tasks",
          "rte,cola", "--trials", "1", "--budget", "demo", "--epochs", "1", "--device", "cpu")
    results = json.loads((tmp_path / "run" / "glue" / "results.json").read_text())
    assert results["special_ids"] == {"pad": IDS["<pad>"], "cls": IDS["<cls>"], "sep": IDS["<sep>"],
                                      "mask": IDS["<mask>"]}
    assert set(results["tasks"]) == {"rte", "cola"}

    # convert: probe padded with the tokenizer's pad, ids kept in the written config.
    conv = _cram("convert", str(final), "--out", str(tmp_path / "flash"), "--attention", "flash", "--device", "cpu")
    assert conv["parity"]["max_abs_delta_logits"] <= conv["parity"]["tolerance"]
    written = json.loads((tmp_path / "flash" / "config.json").read_text())
    assert {k: written[k] for k in fields} == fields

    # fill-mask: cram's own top-k at the tokenizer's <mask>, and the same through the transformers pipeline.
    from transformers import AutoTokenizer, pipeline

    from cramcli.model.checkpoint import load_pretrained

    model = load_pretrained(final, head="mlm").eval()
    hf_tok = AutoTokenizer.from_pretrained(str(final))
    assert hf_tok.mask_token_id == IDS["<mask>"] and hf_tok.pad_token_id == IDS["<pad>"]
    enc = hf_tok("the cat sat on the <mask> .", return_tensors="pt")
    ids = enc["input_ids"][0].tolist()
    assert ids.count(IDS["<mask>"]) == 1 and ids[-1] == IDS["<sep>"]
    with torch.no_grad():
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    probs = logits[0, ids.index(IDS["<mask>"])].softmax(-1)
    top = probs.topk(5)
    filled = pipeline("fill-mask", model=model, tokenizer=hf_tok, top_k=5)("the cat sat on the <mask> .")
    assert [r["token"] for r in filled] == top.indices.tolist()
    assert [r["score"] for r in filled] == pytest.approx(top.values.tolist(), abs=1e-6)
