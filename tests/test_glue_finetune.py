"""GLUE end to end through the CLI on tiny data: the table, the JSON, resume, and the bad-input errors.

The protocol is exercised with a stand-in model (fast); one more test runs the real crammed BERT."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from typer.testing import CliRunner

from cramcli import budgets
from cramcli.budgets import ArchBudget
from cramcli.cli import app
from cramcli.model import checkpoint

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "<cls>", "<sep>", "<mask>"]
WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "mat", "fast", "slow", "big", "small", "red", "blue", "is",
         "was", "not"]
runner = CliRunner()


def _tokenizer(path: Path) -> None:
    tok = Tokenizer(models.WordPiece(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([" ".join(WORDS)] * 5, trainers.WordPieceTrainer(vocab_size=64, special_tokens=SPECIAL))
    tok.post_processor = processors.TemplateProcessing(
        single="$A <sep>", pair="<cls> $A <sep> $B <sep>", special_tokens=[("<cls>", 4), ("<sep>", 5)])
    assert [tok.token_to_id(t) for t in SPECIAL] == list(range(7))
    tok.save(str(path))


def _glue(root: Path, n_train: int = 40, n_dev: int = 12) -> Path:
    g = torch.Generator().manual_seed(0)

    def sent() -> str:
        return " ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (6,), generator=g))

    (root / "RTE").mkdir(parents=True)
    (root / "STS-B").mkdir()
    (root / "CoLA").mkdir()
    for split, n in (("train", n_train), ("dev", n_dev)):
        rows = [f"src\t{i % 2}\t\t{sent()}" for i in range(2 * n)]  # no header; twice RTE's size
        (root / "CoLA" / f"{split}.tsv").write_text("\n".join(rows) + "\n")
        rows = [f"{i}\t{sent()}\t{sent()}\t{'entailment' if i % 2 else 'not_entailment'}" for i in range(n)]
        (root / "RTE" / f"{split}.tsv").write_text("index\tsentence1\tsentence2\tlabel\n" + "\n".join(rows))
        rows = [f"{i}\tg\tf\ty\t{i:04d}\tnone\tnone\t{sent()}\t{sent()}\t{(i % 6) * 0.8:.3f}" for i in range(n)]
        head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        (root / "STS-B" / f"{split}.tsv").write_text(head + "\n".join(rows) + "\n")
    return root


class _TinyClassifier(torch.nn.Module):
    """Masked mean of embeddings → linear: enough to exercise the protocol quickly. Records the ids it saw at
    padded positions."""

    padding_seen: set[int] = set()

    def __init__(self, num_labels: int) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(64, 16)
        self.out = torch.nn.Linear(16, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        _TinyClassifier.padding_seen.update(input_ids[attention_mask == 0].tolist())
        m = attention_mask.unsqueeze(-1).float()
        pooled = (self.emb(input_ids) * m).sum(1) / m.sum(1)
        return SimpleNamespace(logits=self.out(pooled))


@pytest.fixture
def stub_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, list]:
    calls: list[dict] = []
    fake = types.ModuleType("cramcli.model.checkpoint")

    def find_checkpoint(path: Path) -> Path:
        folder = checkpoint.resolve(path)  # the real run-folder → final/ rule
        if not (folder / "config.json").exists():
            raise ValueError(f"{folder}: not a checkpoint folder")
        return folder

    fake.find_checkpoint = find_checkpoint  # type: ignore[attr-defined]

    def load_pretrained(path: Path, head: str = "mlm", num_labels: int | None = None, **over: object) -> torch.nn.Module:
        calls.append({"head": head, "num_labels": num_labels, **over})
        return _TinyClassifier(num_labels or 2)

    fake.load_pretrained = load_pretrained  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cramcli.model.checkpoint", fake)
    ck = tmp_path / "run" / "final"
    ck.mkdir(parents=True)
    (ck / "config.json").write_text("{}")
    _tokenizer(ck / "tokenizer.json")
    return ck.parent, calls


def _cli(*args: str) -> object:
    return runner.invoke(app, ["glue", *args, "--device", "cpu"])


def test_two_trials_table_json_and_resume(stub_model: tuple[Path, list], tmp_path: Path) -> None:
    run, calls = stub_model
    glue = _glue(tmp_path / "glue")
    out = tmp_path / "res"
    args = ["--model", str(run), "--glue-dir", str(glue), "--tasks", "rte,stsb", "--trials", "2", "--budget", "demo",
            "--out", str(out), "--legacy-attention-mask"]
    res = _cli(*args)
    assert res.exit_code == 0, res.output
    assert "STS-B" in res.output and "RTE" in res.output and "partial average over 2 numbers" in res.output
    assert [c["num_labels"] for c in calls] == [2, 2, 1, 1]
    demo = budgets.load("glue", "demo")
    assert all(c["head"] == "cls" and c["legacy_ignore_padding"] and c["hidden_dropout"] == demo.dropout for c in calls)
    results = json.loads((out / "results.json").read_text())
    rte = results["tasks"]["rte"]
    assert rte["train_examples_read"] == 40 and rte["dev_examples"] == {"dev": 12}
    assert len(set(rte["seeds"])) == 2 and len(rte["trials"]) == 2
    assert rte["min"]["RTE"] <= rte["median"]["RTE"] <= rte["max"]["RTE"]
    assert set(results["tasks"]["stsb"]["trials"][0]["metrics"]["dev"]) == {"pearson", "spearman"}
    assert not results["summary"]["average_complete"] and results["summary"]["average_of"] == 2
    assert json.loads((out / "hparams.json").read_text())["budget"]["batch_size"] == demo.batch_size

    # Resume: delete one trial; the rerun trains only that one and reproduces it exactly.
    first = json.loads((out / "trials" / "stsb_1.json").read_text())
    (out / "trials" / "stsb_1.json").unlink()
    calls.clear()
    res = _cli(*args)
    assert res.exit_code == 0, res.output
    assert [c["num_labels"] for c in calls] == [1]
    assert json.loads((out / "trials" / "stsb_1.json").read_text())["metrics"] == first["metrics"]

    # Other settings on the same --out are refused; --force starts over.
    res = _cli(*args, "--seed", "1")
    assert res.exit_code == 2 and "other settings" in res.output
    # More trials reuse the finished ones.
    calls.clear()
    assert _cli(*[a if a != "2" else "3" for a in args]).exit_code == 0 and len(calls) == 2
    calls.clear()
    assert _cli(*args, "--force").exit_code == 0 and len(calls) == 4


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--trials", "0"], "--trials 0"), (["--epochs", "6"], "--epochs 6: (top level): epochs 6 exceeds 5, the GLUE-sane limit"), (["--tasks", "rte,nope"], "unknown task nope"),
     (["--tasks", "mrpc"], "no MRPC/train.tsv")],
)
def test_bad_input_one_line(stub_model: tuple[Path, list], tmp_path: Path, extra: list[str], message: str) -> None:
    run, _ = stub_model
    res = _cli("--model", str(run), "--glue-dir", str(_glue(tmp_path / "g")), "--out", str(tmp_path / "o"), *extra)
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


def test_not_a_checkpoint(stub_model: tuple[Path, list], tmp_path: Path) -> None:
    res = _cli("--model", str(tmp_path), "--glue-dir", str(tmp_path))
    assert res.exit_code == 2 and "not a checkpoint folder" in res.output


# The arch budget's modern options (docs/recipes.md), all on: fine-tuning must not care.
MODERN = {"position_embedding": "rotary", "qk_norm": "rms", "activation": "relu2", "glu": False,
          "zero_init_residual": True, "tie_decoder": False}


@pytest.mark.parametrize("options", [{}, MODERN], ids=["recipe", "modern"])
def test_real_tiny_model(tmp_path: Path, options: dict) -> None:
    from cramcli import model

    torch.manual_seed(0)
    arch = ArchBudget(num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64, vocab_size=64, **options)
    _tokenizer(tmp_path / "tokenizer.json")
    ck = tmp_path / "ck"
    net = model.CrammedBertForMaskedLM(model.CrammedBertConfig.from_arch(arch))
    checkpoint.save_checkpoint(net, ck, tokenizer_path=tmp_path / "tokenizer.json")
    glue = _glue(tmp_path / "glue", n_train=32, n_dev=8)
    res = _cli("--model", str(ck), "--glue-dir", str(glue), "--tasks", "rte,stsb", "--trials", "2", "--budget", "demo",
               "--epochs", "1")
    assert res.exit_code == 0, res.output
    results = json.loads((ck / "glue" / "results.json").read_text())
    assert len(results["tasks"]["stsb"]["trials"]) == 2 and "RTE" in results["summary"]["columns"]


def _warmups(out: Path) -> dict[str, int]:
    return {p.stem: json.loads(p.read_text())["warmup_steps"] for p in sorted((out / "trials").glob("*.json"))}


def test_first_task_warmup_reuses_colas_steps(stub_model: tuple[Path, list], tmp_path: Path) -> None:
    """CoLA (80 examples: 5 batches × 5 epochs = 25 steps → 2) is first in the original's order, whatever
    --tasks says; under `first-task` RTE (40: 2 × 5 = 10 → 1) warms up for CoLA's 2 steps."""
    run, _ = stub_model
    glue = _glue(tmp_path / "glue")
    budget = tmp_path / "glue_budget_reuse.json"
    budget.write_text(json.dumps({**budgets.load("glue", "demo").model_dump(mode="json"), "trials": 1,
                                  "warmup_mode": "first-task"}))
    per_task, reuse = tmp_path / "per", tmp_path / "reuse"
    base = ["--model", str(run), "--glue-dir", str(glue), "--tasks", "rte,cola"]
    assert _cli(*base, "--budget", "demo", "--trials", "1", "--out", str(per_task)).exit_code == 0
    assert _warmups(per_task) == {"cola_0": 2, "rte_0": 1}
    res = _cli(*base, "--budget", str(budget), "--out", str(reuse))
    assert res.exit_code == 0, res.output
    assert _warmups(reuse) == {"cola_0": 2, "rte_0": 2}
    results = json.loads((reuse / "results.json").read_text())
    assert results["warmup_mode"] == "first-task" and results["tasks"]["rte"]["trials"][0]["steps"] == 10
    # The same through flags on the preset: --warmup-mode (and --precision) override the budget's fields.
    flags = tmp_path / "flags"
    res = _cli(*base, "--budget", "demo", "--trials", "1", "--warmup-mode", "first-task", "--precision", "fp32",
               "--out", str(flags))
    assert res.exit_code == 0, res.output
    assert _warmups(flags) == {"cola_0": 2, "rte_0": 2}
    assert json.loads((flags / "hparams.json").read_text())["budget"]["warmup_mode"] == "first-task"
    # RTE alone is its own first task (the original run for one task): its finished trial no longer fits.
    res = _cli("--model", str(run), "--glue-dir", str(glue), "--tasks", "rte", "--budget", str(budget),
               "--out", str(reuse))
    assert res.exit_code == 2 and "trained with 2 warmup steps, this run gives rte 1" in res.output


def test_pads_with_the_checkpoints_pad_id(stub_model: tuple[Path, list], tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from special_tokens_helpers import IDS, permuted_tokenizer

    run, _ = stub_model
    permuted_tokenizer(run / "final" / "tokenizer.json")
    _TinyClassifier.padding_seen.clear()
    out = tmp_path / "res"
    res = _cli("--model", str(run), "--glue-dir", str(_glue(tmp_path / "glue")), "--tasks", "rte,cola",
               "--trials", "1", "--budget", "demo", "--epochs", "1", "--out", str(out))
    assert res.exit_code == 0, res.output
    assert _TinyClassifier.padding_seen == {IDS["<pad>"]}
    assert json.loads((out / "results.json").read_text())["special_ids"]["pad"] == IDS["<pad>"]
    (run / "final" / "config.json").write_text(json.dumps({"pad_token_id": 0}))
    res = _cli("--model", str(run), "--glue-dir", str(tmp_path / "glue"), "--tasks", "rte", "--out", str(out))
    assert res.exit_code == 2 and f"pad_token_id=0 where the tokenizer says {IDS['<pad>']}" in res.output
