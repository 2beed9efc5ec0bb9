"""cram checkpoints are HF-native: save_pretrained/from_pretrained round trips, every transformers entry point after
`import cramcli`, special ids from the tokenizer, and the original cramming run folder through convert and glue."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hf_helpers import MODERN_ARCH, ORIGINAL_ORDER, write_tokenizer
from hf_helpers import tiny_checkpoint as make_checkpoint
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

from cramcli.cli import app
from cramcli.model import CrammedBertForMaskedLM
from cramcli.model.checkpoint import (
    CheckpointError,
    checkpoint_special_ids,
    find_checkpoint,
    load_pretrained,
    load_tokenizer,
    read_checkpoint,
)

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT.parent / "shared" / "fixtures" / "cramming" / "v2-local-run-tiny"
runner = CliRunner()


@pytest.fixture
def tok_dir(tmp_path: Path) -> Path:
    write_tokenizer(tmp_path / "tok")
    return tmp_path / "tok"


@pytest.fixture
def ckpt(tmp_path: Path, tok_dir: Path) -> Path:
    make_checkpoint(tmp_path / "ck", tok_dir)
    return tmp_path / "ck"


def _batch(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Two sentences through the checkpoint's own tokenizer, the second right-padded with its pad id."""
    tok = load_tokenizer(folder)
    pad = checkpoint_special_ids(folder).pad
    rows = [e.ids for e in tok.encode_batch(["the cat sat on the mat .", "a dog ran ."])]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask


@pytest.mark.parametrize("layout", ["v1", "v2"])
def test_save_pretrained_round_trip_keeps_weights_and_logits(tmp_path: Path, tok_dir: Path, layout: str) -> None:
    model = make_checkpoint(tmp_path / "ck", tok_dir, layout=layout)
    ck = tmp_path / "ck"
    config = json.loads((ck / "config.json").read_text())
    assert config["model_type"] == "cram-bert" and config["architectures"] == ["CrammedBertForMaskedLM"]
    # The tokenizer's ids, not cram's defaults: this tokenizer has <pad>=6, <cls>=2, <sep>=1, <mask>=4.
    order = {t: i for i, t in enumerate(ORIGINAL_ORDER)}
    assert {k: config[k] for k in ("pad_token_id", "cls_token_id", "sep_token_id", "mask_token_id")} == {
        "pad_token_id": order["<pad>"], "cls_token_id": order["<cls>"], "sep_token_id": order["<sep>"],
        "mask_token_id": order["<mask>"]}
    with safe_open(str(ck / "model.safetensors"), "pt") as f:
        stored = set(f.keys())  # noqa: SIM118
    assert "decoder.weight" not in stored and "encoder.embedding.word_embedding.weight" in stored  # tied: once
    ids, mask = _batch(ck)
    back = CrammedBertForMaskedLM.from_pretrained(ck).eval()
    ours = load_pretrained(ck)
    expected = model.state_dict()
    for loaded in (back, ours):
        state = loaded.state_dict()
        assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in expected)
        with torch.no_grad():
            assert torch.equal(loaded(ids, mask).logits, model(ids, mask).logits)
    # And a plain transformers save_pretrained of a loaded model is a cram checkpoint again.
    back.save_pretrained(tmp_path / "again")
    with torch.no_grad():
        assert torch.equal(load_pretrained(tmp_path / "again")(ids, mask).logits, model(ids, mask).logits)


def test_import_cramcli_registers_the_auto_classes_and_the_cli_stays_light(ckpt: Path) -> None:
    code = ("import cramcli\nfrom transformers import AutoConfig, AutoModelForMaskedLM\n"
            f"print(type(AutoModelForMaskedLM.from_pretrained({str(ckpt)!r})).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "CrammedBertForMaskedLM", out.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    help_run = subprocess.run([sys.executable, "-X", "importtime", "-m", "cramcli", "--help"], capture_output=True,
                              text=True, cwd=ROOT, env=env, timeout=120)
    assert help_run.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in help_run.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "transformers" not in imported  # `cram --help` stays fast


def test_import_cramcli_after_transformers_registers_too(ckpt: Path) -> None:
    """transformers' auto module already loaded when cramcli is imported: registration happens at once."""
    code = ("from transformers import AutoModelForMaskedLM\nimport cramcli\n"
            f"print(type(AutoModelForMaskedLM.from_pretrained({str(ckpt)!r})).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "CrammedBertForMaskedLM", out.stderr[-2000:]


@pytest.mark.parametrize("options", [{}, MODERN_ARCH], ids=["recipe", "modern"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_transformers_entry_point_works_after_import_cramcli(tmp_path: Path, tok_dir: Path, dtype: torch.dtype,
                                                                   options: dict) -> None:
    # This module imported cramcli (through cramcli.cli); the subprocess test above checks `import cramcli` alone.
    ckpt = tmp_path / "ck"
    make_checkpoint(ckpt, tok_dir, **options)  # the arch budget's modern options must work everywhere too
    from transformers import (
        AutoModel,
        AutoModelForMaskedLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        pipeline,
    )

    tok = AutoTokenizer.from_pretrained(ckpt)
    order = {t: i for i, t in enumerate(ORIGINAL_ORDER)}
    assert (tok.pad_token, tok.mask_token, tok.cls_token, tok.sep_token) == ("<pad>", "<mask>", "<cls>", "<sep>")
    assert (tok.pad_token_id, tok.mask_token_id, tok.cls_token_id, tok.sep_token_id) == (
        order["<pad>"], order["<mask>"], order["<cls>"], order["<sep>"])
    assert tok.model_max_length == 32  # the model's max_seq_length, not the tokenizer's 512
    batch = tok(["the cat sat on the <mask> .", "a dog ran ."], padding=True, return_tensors="pt",
                return_token_type_ids=False)
    assert batch["input_ids"][1, -1] == order["<pad>"]

    mlm = AutoModelForMaskedLM.from_pretrained(ckpt, dtype=dtype).eval()
    base = AutoModel.from_pretrained(ckpt, dtype=dtype).eval()
    clf = AutoModelForSequenceClassification.from_pretrained(ckpt, num_labels=3, dtype=dtype).eval()
    reference = load_pretrained(ckpt).to(dtype)
    with torch.no_grad():
        logits = mlm(**batch).logits
        assert logits.dtype == dtype and logits.shape == (*batch["input_ids"].shape, tok.vocab_size)
        assert torch.equal(logits, reference(**batch).logits)
        hidden = base(**batch).last_hidden_state
        assert hidden.dtype == dtype and torch.equal(hidden, reference.encoder(**batch).last_hidden_state)
        scores = clf(**batch).logits
        assert scores.shape == (2, 3) and bool(torch.isfinite(scores.float()).all())

    fill = pipeline("fill-mask", model=str(ckpt), dtype=dtype, device="cpu", top_k=3)
    top = fill(f"the cat sat on the {tok.mask_token} .")
    assert len(top) == 3 and all({"score", "token", "token_str", "sequence"} <= set(t) for t in top)
    ranked = torch.topk(logits[0, (batch["input_ids"][0] == tok.mask_token_id)].float().squeeze(0), 3).indices
    assert [t["token"] for t in top] == ranked.tolist()


def test_config_and_tokenizer_that_disagree_on_special_ids_are_refused(ckpt: Path, tmp_path: Path) -> None:
    config = json.loads((ckpt / "config.json").read_text())
    config["pad_token_id"] = 0
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config\.json: special-token ids disagree.*pad_token_id 0 \(tokenizer: 6\)"):
        read_checkpoint(ckpt)
    res = runner.invoke(app, ["convert", str(ckpt), "-o", str(tmp_path / "out")])
    assert res.exit_code == 2 and "disagree" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------------
# the original code's own run folder


def _need_run() -> None:
    if not RUN.is_dir():
        pytest.skip("../shared/fixtures/cramming/v2-local-run-tiny is not available")


def _matches_reference(model: torch.nn.Module) -> None:
    """Hidden states and MLM logits, with the padding mask, equal the original's at every real token."""
    ref = load_file(str(RUN / "reference.safetensors"))
    real = ref["attention_mask"].bool()
    with torch.no_grad():
        encoder = model.encoder if hasattr(model, "encoder") else model
        hidden = encoder(ref["input_ids"], ref["attention_mask"]).last_hidden_state
        assert (hidden - ref["hidden_masked"])[real].abs().max() <= 1e-5
        if hasattr(model, "decoder"):
            logits = model(ref["input_ids"], ref["attention_mask"]).logits
            assert (logits - ref["mlm_logits_masked"])[real].abs().max() <= 1e-5
            assert (model(ref["input_ids"]).logits - ref["mlm_logits"]).abs().max() <= 1e-5


def test_original_run_folder_exposes_its_tokenizer_and_special_ids() -> None:
    _need_run()
    folder = find_checkpoint(RUN)
    assert folder.parent == RUN / "checkpoints"
    source = read_checkpoint(RUN)
    assert source.format == "cramming-v2" and source.special is not None
    assert (source.special.pad, source.special.unk, source.special.cls, source.special.sep, source.special.mask) == (
        6, 3, 2, 1, 4)
    assert source.config["pad_token_id"] == 6 and source.config["vocab_size"] == 2048
    ref = load_file(str(RUN / "reference.safetensors"))
    tok = load_tokenizer(folder)
    fixture = json.loads((RUN / "FIXTURE.json").read_text())["reference"]["sentences"]
    texts = [*fixture["singles"], *map(tuple, fixture["pairs"])]
    for row, text in enumerate(texts):
        ids = (tok.encode(*text) if isinstance(text, tuple) else tok.encode(text)).ids
        assert ref["input_ids"][row, : len(ids)].tolist() == ids
        assert set(ref["input_ids"][row, len(ids):].tolist()) <= {source.special.pad}
    _matches_reference(load_pretrained(RUN))


def test_original_run_folder_through_convert(tmp_path: Path) -> None:
    _need_run()
    res = runner.invoke(app, ["convert", str(RUN), "-o", str(tmp_path / "out"), "--json"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "out"
    assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    assert (config["pad_token_id"], config["cls_token_id"], config["sep_token_id"], config["mask_token_id"]) == (
        6, 2, 1, 4)
    report = json.loads((out / "report.json").read_text())
    assert report["source_format"] == "cramming-v2" and report["special_ids"]["pad"] == 6
    _matches_reference(load_pretrained(out))


def test_original_run_folder_through_glue(tmp_path: Path) -> None:
    _need_run()
    glue = tmp_path / "glue"
    (glue / "RTE").mkdir(parents=True)
    fixture = json.loads((RUN / "FIXTURE.json").read_text())["reference"]["sentences"]["pairs"]
    for split in ("train", "dev"):
        rows = [f"{i}\t{a}\t{b}\t{'entailment' if i % 2 else 'not_entailment'}"
                for i, (a, b) in enumerate(fixture * 4)]
        (glue / "RTE" / f"{split}.tsv").write_text("index\tsentence1\tsentence2\tlabel\n" + "\n".join(rows) + "\n")
    res = runner.invoke(app, ["glue", "--model", str(RUN), "--glue-dir", str(glue), "--tasks", "rte", "--trials", "1",
                              "--budget", "demo", "--epochs", "1", "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert Path(results["checkpoint"]).parent == RUN / "checkpoints" and "RTE" in results["summary"]["columns"]
    # The classifier glue builds from that folder carries the original's encoder exactly.
    _matches_reference(load_pretrained(RUN, head="cls", num_labels=2))


@pytest.mark.parametrize(("kind", "message"), [
    ("no weights", "neither model.safetensors (v2) nor model.pth (v1)"),
    ("no tokenizer", "tokenizer.json: missing"),
    ("pad disagrees", "embedding.pad_token_id 5 but tokenizer.json's pad token is 6"),
    ("pad not named", "names no pad_token"),
])
def test_bad_original_run_folders_fail_in_one_line(kind: str, message: str, tmp_path: Path) -> None:
    _need_run()
    run = tmp_path / "run"
    shutil.copytree(RUN, run)
    for path in run.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    ck = find_checkpoint(run)
    if kind == "no weights":
        (ck / "model.safetensors").unlink()
    elif kind == "no tokenizer":
        (ck / "tokenizer.json").unlink()
    elif kind == "pad disagrees":
        arch = json.loads((ck / "model_config.json").read_text())
        arch["embedding"]["pad_token_id"] = 5
        (ck / "model_config.json").write_text(json.dumps(arch))
    else:
        config = json.loads((ck / "tokenizer_config.json").read_text())
        del config["pad_token"]
        (ck / "tokenizer_config.json").write_text(json.dumps(config))
    for command in (["convert", str(run), "-o", str(tmp_path / "out")],
                    ["glue", "--model", str(run), "--glue-dir", str(tmp_path), "--out", str(tmp_path / "o")]):
        res = runner.invoke(app, command)
        assert res.exit_code == 2 and message in res.output, res.output
        assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()


def test_a_v1_run_folder_with_model_pth_loads(tmp_path: Path) -> None:
    """The v1 code's writer saved `model.pth`; rebuilt here from the v1 hub fixture (same weights, same arch)."""
    hub = RUN.parent / "v1-legacy-tiny"
    if not hub.is_dir():
        pytest.skip("../shared/fixtures/cramming/v1-legacy-tiny is not available")
    ck = tmp_path / "run" / "checkpoints" / "ScriptableMaskedLM_2023-01-01_3.1416"
    write_tokenizer(ck)
    arch = json.loads((hub / "config.json").read_text())["arch"]
    arch["embedding"]["vocab_size"] = None  # as the original writes it
    (ck / "model_config.json").write_text(json.dumps(arch))
    torch.save(torch.load(hub / "pytorch_model.bin", weights_only=True), ck / "model.pth")
    source = read_checkpoint(tmp_path / "run")
    assert source.format == "cramming-v1" and source.weights_file.name == "model.pth" and source.special.pad == 6
    ref = load_file(str(hub / "reference.safetensors"))
    with torch.no_grad():
        model = load_pretrained(tmp_path / "run", attention="pytorch")  # v1 was flash-attn
        assert (model(ref["input_ids"]).logits - ref["mlm_logits"]).abs().max() <= 1e-5


def test_a_flash_checkpoint_on_the_cpu_is_one_line_not_a_traceback(ckpt: Path, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine may run flash")
    assert runner.invoke(app, ["convert", "--attention", "flash", str(ckpt), "-o", str(tmp_path / "flash")]).exit_code == 0
    glue = tmp_path / "glue"
    (glue / "RTE").mkdir(parents=True)
    rows = [f"{i}\tthe cat sat .\ta dog ran .\t{'entailment' if i % 2 else 'not_entailment'}" for i in range(8)]
    for split in ("train", "dev"):
        (glue / "RTE" / f"{split}.tsv").write_text("index\tsentence1\tsentence2\tlabel\n" + "\n".join(rows) + "\n")
    res = runner.invoke(app, ["glue", "--model", str(tmp_path / "flash"), "--glue-dir", str(glue), "--tasks", "rte",
                              "--trials", "1", "--budget", "demo", "--epochs", "1", "--out", str(tmp_path / "o"),
                              "--device", "cpu", "--quiet"])
    assert res.exit_code == 2 and "cram convert --attention pytorch" in res.output, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "results.json").exists()
